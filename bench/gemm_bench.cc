// The GEMMs of one LRA-ListOps PrimalFormer training step, replayed side by side on the GEMM
// libraries Debian packages: which one pays for which shape class.
//
//   gemm_bench [--threads 1,2] [--rounds R]
//
// 1. One forward_backward of the model_bench `listops_primal` case (B=32, N=2000) runs with
//    core/blas.h's gemm_observer set: every float GEMM call is recorded (shape, leading
//    dimensions, beta, whether it ran inside an OpenMP parallel region), then grouped into shape
//    classes (ta, tb, M, N, K, beta, in parallel).
// 2. Every recorded call gets its own operands (random data, the recorded leading dimensions),
//    and each library replays all of them, in one process: calls that the model issues inside
//    a parallel region (the per-head products) one per thread under `omp parallel for` with
//    the library on 1 thread, the others one after another with the library on T threads.
// 3. Rounds rotate the order of the libraries; each reports medians over rounds: per class,
//    the step's total, and the 2048^3 sgemm rate of the same library on the same threads (the
//    "peak" the GEMM rate is compared to). Before timing, each library runs every class twice
//    from the same inputs (bitwise determinism on these threads) and is compared to
//    OpenBLAS-OpenMP, the library the model links (max |C - C_ref| / max |C_ref| per call).
//
// The BLAS-like libraries export the same symbols (two OpenBLAS builds, two BLIS builds), so
// they are dlopen'ed with RTLD_LOCAL | RTLD_DEEPBIND and reached through dlsym; oneDNN and
// libxsmm have their own names and are linked. Output: JSON lines, then markdown tables.
#include <dlfcn.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <dnnl.h>
#include <libxsmm.h>
#include <dnnl.hpp>

#include "bench/bench_models.h"
#include "core/blas.h"
#include "model/transformer.h"

namespace primal {
namespace {

using bench::Clock;
using bench::seconds_since;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// ---------------------------------------------------------------------------------------------
// Recording the step.

std::mutex recorded_mutex;
std::vector<GemmCall> recorded;

void record_call(const GemmCall& c) {
  std::lock_guard<std::mutex> lock(recorded_mutex);
  recorded.push_back(c);
}

struct Step {
  std::vector<GemmCall> calls;
  size_t forward_calls = 0;  // calls[0, forward_calls) are the forward's
};

// The GEMMs of one forward_backward, and how many of them the forward issues (counted on a
// second, forward-only step: the forward's calls all come before the backward's). Recorded on
// at least 2 threads so that the per-head regions are active and say so.
Step record_step() {
  const int B = 32, N = 2000;
  ModelConfig config = bench::listops_model(AttentionKind::kPrimal, N);
  Transformer<float> model(config);
  std::mt19937 gen(1);
  std::uniform_int_distribution<int> token(0, config.vocab - 1), label(0, 9);
  Batch batch;
  batch.B = B;
  batch.N = N;
  for (int i = 0; i < B * N; ++i) batch.tokens.push_back(token(gen));
  for (int i = 0; i < B; ++i) batch.targets.push_back(label(gen));
  const int threads_before = omp_get_max_threads();
  omp_set_num_threads(std::max(2, threads_before));
  Arena arena;
  gemm_observer = record_call;
  model.forward_backward(arena, batch, 0);
  Step step;
  step.calls = std::move(recorded);
  recorded.clear();
  arena.reset();
  model.forward(arena, batch, 1);
  step.forward_calls = recorded.size();
  gemm_observer = nullptr;
  omp_set_num_threads(threads_before);
  return step;
}

struct ShapeClass {
  GemmCall shape;             // the first call's; every call shares ta, tb, M, N, K, beta
  std::vector<size_t> calls;  // indices into Step::calls
  bool forward = false, backward = false;
  double flops() const { return 2.0 * shape.M * shape.N * shape.K * calls.size(); }
  std::string name() const {
    char buf[96];
    std::snprintf(buf, sizeof buf, "%c%c %dx%dx%d b%g%s", shape.ta == Trans::kYes ? 'T' : 'N',
                  shape.tb == Trans::kYes ? 'T' : 'N', shape.M, shape.N, shape.K, shape.beta,
                  shape.in_parallel ? " par" : "");
    return buf;
  }
  std::string phase() const { return forward && backward ? "f+b" : forward ? "fwd" : "bwd"; }
};

std::vector<ShapeClass> group(const Step& step) {
  std::map<std::tuple<int, int, int, int, int, float, bool>, size_t> index;
  std::vector<ShapeClass> classes;
  for (size_t i = 0; i < step.calls.size(); ++i) {
    const GemmCall& c = step.calls[i];
    auto key = std::make_tuple(int(c.ta), int(c.tb), c.M, c.N, c.K, c.beta, c.in_parallel);
    auto [it, added] = index.emplace(key, classes.size());
    if (added) classes.push_back({c, {}});
    ShapeClass& cls = classes[it->second];
    cls.calls.push_back(i);
    (i < step.forward_calls ? cls.forward : cls.backward) = true;
  }
  // Largest share of the step's flops first.
  std::sort(classes.begin(), classes.end(),
            [](const ShapeClass& a, const ShapeClass& b) { return a.flops() > b.flops(); });
  return classes;
}

// ---------------------------------------------------------------------------------------------
// Operands: every call its own, as in the model, where the per-head products read and write
// disjoint slices of the step's tensors (so no call finds another's data in cache).

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<float[], FreeDeleter>;

Buffer alloc_floats(size_t n) {
  const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
  return Buffer(static_cast<float*>(std::aligned_alloc(64, std::max<size_t>(bytes, 64))));
}

struct Operands {
  Buffer a, b, c, c0;  // c0: C's initial values (beta = 1 adds into them)
  size_t na = 0, nb = 0, nc = 0;
};

// Row-major op(A) [M, K]: A is [M, lda] untransposed, [K, lda] transposed.
size_t a_size(const GemmCall& c) {
  return size_t(c.ta == Trans::kNo ? c.M : c.K) * c.lda;
}
size_t b_size(const GemmCall& c) {
  return size_t(c.tb == Trans::kNo ? c.K : c.N) * c.ldb;
}
size_t c_size(const GemmCall& c) {
  return size_t(c.M) * c.ldc;
}

Operands make_operands(const GemmCall& c, std::mt19937& gen) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  Operands o;
  o.na = a_size(c);
  o.nb = b_size(c);
  o.nc = c_size(c);
  o.a = alloc_floats(o.na);
  o.b = alloc_floats(o.nb);
  o.c = alloc_floats(o.nc);
  o.c0 = alloc_floats(o.nc);
  for (size_t i = 0; i < o.na; ++i) o.a[i] = u(gen);
  for (size_t i = 0; i < o.nb; ++i) o.b[i] = u(gen);
  for (size_t i = 0; i < o.nc; ++i) o.c0[i] = u(gen);
  std::copy_n(o.c0.get(), o.nc, o.c.get());
  return o;
}

// ---------------------------------------------------------------------------------------------
// The libraries, behind one small interface.

class Library {
 public:
  virtual ~Library() = default;
  virtual std::string name() const = 0;
  virtual std::string version() const = 0;
  // Threads of the library's own parallelism for the calls that follow.
  virtual void set_threads(int threads) = 0;
  // Per shape class, before any timing: JIT kernels, primitives. `threads` is what the class
  // runs on (1 for the per-head classes).
  virtual void prepare(size_t /*cls*/, const GemmCall& /*shape*/, int /*threads*/) {}
  virtual void gemm(size_t cls, const GemmCall& c, const float* A, const float* B, float* C) = 0;
  // What ran for class cls (libxsmm: a JIT kernel or its BLAS fallback).
  virtual std::string path(size_t /*cls*/) const { return ""; }
  virtual bool has_peak() const { return true; }
};

using CblasSgemm = void (*)(CBLAS_ORDER, CBLAS_TRANSPOSE, CBLAS_TRANSPOSE, int, int, int, float,
                            const float*, int, const float*, int, float, float*, int);

// A shared library with a cblas_sgemm: OpenBLAS (both builds) and BLIS (both builds).
class CblasLibrary : public Library {
 public:
  enum class Kind { kOpenBlas, kBlis };
  CblasLibrary(std::string name, const std::string& path, Kind kind)
      : name_(std::move(name)), kind_(kind) {
    // DEEPBIND: the library's calls into itself bind to itself, not to the OpenBLAS the
    // executable links (same symbol names).
    handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!handle_) {
      error_ = dlerror();
      return;
    }
    sgemm_ = reinterpret_cast<CblasSgemm>(dlsym(handle_, "cblas_sgemm"));
    if (kind_ == Kind::kOpenBlas) {
      openblas_threads_ =
          reinterpret_cast<void (*)(int)>(dlsym(handle_, "openblas_set_num_threads"));
      auto config = reinterpret_cast<char* (*)()>(dlsym(handle_, "openblas_get_config"));
      if (config) version_ = config();
    } else {
      // BLIS's dim_t is a 64-bit integer.
      blis_threads_ =
          reinterpret_cast<void (*)(int64_t)>(dlsym(handle_, "bli_thread_set_num_threads"));
      auto config = reinterpret_cast<const char* (*)()>(dlsym(handle_, "bli_info_get_version_str"));
      if (config) version_ = std::string("BLIS ") + config();
    }
    if (!sgemm_) error_ = "no cblas_sgemm in " + path;
  }
  bool ok() const { return sgemm_ != nullptr; }
  const std::string& error() const { return error_; }
  std::string name() const override { return name_; }
  std::string version() const override { return version_; }
  void set_threads(int threads) override {
    if (openblas_threads_) openblas_threads_(threads);
    if (blis_threads_) blis_threads_(threads);
    omp_set_num_threads(threads);  // the OpenMP builds' regions
  }
  void gemm(size_t, const GemmCall& c, const float* A, const float* B, float* C) override {
    sgemm_(CblasRowMajor, cblas_trans(c.ta), cblas_trans(c.tb), c.M, c.N, c.K, c.alpha, A, c.lda, B,
           c.ldb, c.beta, C, c.ldc);
  }

 private:
  std::string name_, version_, error_;
  Kind kind_;
  void* handle_ = nullptr;
  CblasSgemm sgemm_ = nullptr;
  void (*openblas_threads_)(int) = nullptr;
  void (*blis_threads_)(int64_t) = nullptr;
};

// oneDNN's BLAS-like dnnl_sgemm (row-major, OpenMP runtime: omp_get_max_threads threads, one
// inside a parallel region).
class DnnlSgemm : public Library {
 public:
  std::string name() const override { return "onednn-sgemm"; }
  std::string version() const override {
    const dnnl_version_t* v = dnnl_version();
    return "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
           std::to_string(v->patch);
  }
  void set_threads(int threads) override { omp_set_num_threads(threads); }
  void gemm(size_t, const GemmCall& c, const float* A, const float* B, float* C) override {
    dnnl_sgemm(c.ta == Trans::kYes ? 'T' : 'N', c.tb == Trans::kYes ? 'T' : 'N', c.M, c.N, c.K,
               c.alpha, A, c.lda, B, c.ldb, c.beta, C, c.ldc);
  }
};

// oneDNN's matmul primitive, one per shape class with the class's fixed shape and strides
// (transposition is a stride), created for the threads the class runs on; beta = 1 is a sum
// post-op. Memory objects wrap the call's pointers at each call (a small allocation, part of
// the measured time, as it would be in the model).
class DnnlMatmul : public Library {
 public:
  std::string name() const override { return "onednn-matmul"; }
  std::string version() const override { return DnnlSgemm().version(); }
  void set_threads(int threads) override { omp_set_num_threads(threads); }
  void prepare(size_t cls, const GemmCall& c, int threads) override {
    using dnnl::memory;
    omp_set_num_threads(threads);
    const memory::dim M = c.M, N = c.N, K = c.K;
    memory::desc a({M, K}, memory::data_type::f32,
                   c.ta == Trans::kNo ? memory::dims{c.lda, 1} : memory::dims{1, c.lda});
    memory::desc b({K, N}, memory::data_type::f32,
                   c.tb == Trans::kNo ? memory::dims{c.ldb, 1} : memory::dims{1, c.ldb});
    memory::desc d({M, N}, memory::data_type::f32, memory::dims{c.ldc, 1});
    dnnl::primitive_attr attr;
    if (c.beta != 0.f) {
      dnnl::post_ops ops;
      ops.append_sum(c.beta);
      attr.set_post_ops(ops);
    }
    if (c.alpha != 1.f) attr.set_output_scales(0, {c.alpha});
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, d), attr, engine_);
    if (prims_.size() <= cls) prims_.resize(cls + 1);
    prims_[cls] = {dnnl::matmul(pd), a, b, d, pd.impl_info_str()};
  }
  void gemm(size_t cls, const GemmCall&, const float* A, const float* B, float* C) override {
    thread_local dnnl::stream stream(engine_);
    const Prim& p = prims_[cls];
    dnnl::memory a(p.a, engine_, const_cast<float*>(A)), b(p.b, engine_, const_cast<float*>(B)),
        d(p.d, engine_, C);
    p.prim.execute(stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, d}});
    stream.wait();
  }
  std::string path(size_t cls) const override { return prims_[cls].impl; }

 private:
  struct Prim {
    dnnl::matmul prim;
    dnnl::memory::desc a, b, d;
    std::string impl;
  };
  dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
  std::vector<Prim> prims_;
};

// libxsmm: a JIT kernel per shape class where its generator makes one (column-major: the
// row-major C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T, B passed first), else
// libxsmm_sgemm, which hands shapes past its size threshold to the BLAS the executable links.
// Single-threaded: the per-head classes get one kernel per OpenMP thread, the others run on
// one thread whatever T is.
class Libxsmm : public Library {
 public:
  Libxsmm() { libxsmm_init(); }
  ~Libxsmm() override { libxsmm_finalize(); }
  std::string name() const override { return "libxsmm"; }
  std::string version() const override { return std::string("libxsmm ") + LIBXSMM_CONFIG_VERSION; }
  void set_threads(int threads) override { omp_set_num_threads(threads); }
  void prepare(size_t cls, const GemmCall& c, int) override {
    const libxsmm_blasint m = c.N, n = c.M, k = c.K, lda = c.ldb, ldb = c.lda, ldc = c.ldc;
    const int flags = (c.tb == Trans::kYes ? LIBXSMM_GEMM_FLAG_TRANS_A : 0) |
                      (c.ta == Trans::kYes ? LIBXSMM_GEMM_FLAG_TRANS_B : 0) |
                      (c.beta == 0.f ? LIBXSMM_GEMM_FLAG_BETA_0 : 0);
    const int prefetch = LIBXSMM_GEMM_PREFETCH_NONE;
    if (kernels_.size() <= cls) kernels_.resize(cls + 1);
    kernels_[cls] =
        libxsmm_smmdispatch(m, n, k, &lda, &ldb, &ldc, &c.alpha, &c.beta, &flags, &prefetch);
  }
  void gemm(size_t cls, const GemmCall& c, const float* A, const float* B, float* C) override {
    if (kernels_[cls]) {
      kernels_[cls](B, A, C);
      return;
    }
    const char ta = c.tb == Trans::kYes ? 'T' : 'N', tb = c.ta == Trans::kYes ? 'T' : 'N';
    const libxsmm_blasint m = c.N, n = c.M, k = c.K, lda = c.ldb, ldb = c.lda, ldc = c.ldc;
    libxsmm_sgemm(&ta, &tb, &m, &n, &k, &c.alpha, B, &lda, A, &ldb, &c.beta, C, &ldc);
  }
  std::string path(size_t cls) const override { return kernels_[cls] ? "jit" : "fallback"; }
  bool has_peak() const override { return false; }  // 2048^3 is the BLAS fallback

 private:
  std::vector<libxsmm_smmfunction> kernels_;
};

// ---------------------------------------------------------------------------------------------
// Replay.

struct Replay {
  const Step& step;
  const std::vector<ShapeClass>& classes;
  std::vector<Operands>& ops;  // per call
  int threads;

  // Every call of class k on lib, the way the model issues it.
  void run(Library& lib, size_t k) const {
    const ShapeClass& cls = classes[k];
    const int64_t n = int64_t(cls.calls.size());
    if (cls.shape.in_parallel) {
      lib.set_threads(1);
#pragma omp parallel for schedule(static) num_threads(threads)
      for (int64_t i = 0; i < n; ++i) call(lib, k, cls.calls[i]);
    } else {
      lib.set_threads(threads);
      for (int64_t i = 0; i < n; ++i) call(lib, k, cls.calls[i]);
    }
  }
  void call(Library& lib, size_t k, size_t i) const {
    Operands& o = ops[i];
    lib.gemm(k, step.calls[i], o.a.get(), o.b.get(), o.c.get());
  }
  void restore(size_t k) const {
    for (size_t i : classes[k].calls) std::copy_n(ops[i].c0.get(), ops[i].nc, ops[i].c.get());
  }
  std::vector<float> results(size_t k) const {
    std::vector<float> out;
    for (size_t i : classes[k].calls)
      out.insert(out.end(), ops[i].c.get(), ops[i].c.get() + ops[i].nc);
    return out;
  }
};

struct Check {
  bool deterministic = true;
  double max_rel_diff = 0;  // over calls: max |C - C_ref| / max |C_ref|
};

// Runs class k twice from the same inputs; compares the bits, and the values to ref.
void check_class(const Replay& r, Library& lib, size_t k, const std::vector<float>* ref,
                 Check& check, std::vector<float>* out) {
  r.restore(k);
  r.run(lib, k);
  std::vector<float> first = r.results(k);
  r.restore(k);
  r.run(lib, k);
  std::vector<float> second = r.results(k);
  if (std::memcmp(first.data(), second.data(), first.size() * sizeof(float)) != 0)
    check.deterministic = false;
  if (ref) {
    size_t at = 0;
    for (size_t i : r.classes[k].calls) {
      const size_t nc = r.ops[i].nc;
      const GemmCall& c = r.step.calls[i];
      double diff = 0, scale = 0;
      for (int row = 0; row < c.M; ++row)
        for (int col = 0; col < c.N; ++col) {
          const size_t e = at + size_t(row) * c.ldc + col;
          diff = std::max(diff, double(std::fabs(first[e] - (*ref)[e])));
          scale = std::max(scale, double(std::fabs((*ref)[e])));
        }
      check.max_rel_diff = std::max(check.max_rel_diff, scale > 0 ? diff / scale : diff);
      at += nc;
    }
  }
  if (out) *out = std::move(first);
  r.restore(k);
}

// The 2048^3 sgemm of lib on `threads` threads, seconds; cls: the index it was prepared as.
double peak_seconds(Library& lib, size_t cls, int threads, const Operands& big,
                    const GemmCall& shape) {
  lib.set_threads(threads);
  auto t = Clock::now();
  lib.gemm(cls, shape, big.a.get(), big.b.get(), big.c.get());
  return seconds_since(t);
}

struct Result {
  std::vector<std::vector<double>> class_s;  // [class][round]
  std::vector<double> total_s, peak_s;       // [round]
  Check check;
};

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

void print_tables(const std::vector<ShapeClass>& classes, const std::vector<Library*>& libs,
                  const std::vector<Result>& res, int threads, double step_gflop) {
  std::printf("\n### %d thread%s: GFLOP/s per shape class (median of rounds)\n\n", threads,
              threads == 1 ? "" : "s");
  std::printf("| class (ta tb MxNxK beta) | phase | calls | GFLOP |");
  for (Library* l : libs) std::printf(" %s |", l->name().c_str());
  std::printf(" best (x %s) |\n|---|---|---:|---:|", libs[0]->name().c_str());
  for (size_t j = 0; j < libs.size(); ++j) std::printf("---:|");
  std::printf("---|\n");
  for (size_t k = 0; k < classes.size(); ++k) {
    const ShapeClass& c = classes[k];
    std::printf("| %s | %s | %zu | %.3f |", c.name().c_str(), c.phase().c_str(), c.calls.size(),
                c.flops() * 1e-9);
    size_t best = 0;
    std::vector<double> rate(libs.size());
    for (size_t j = 0; j < libs.size(); ++j) {
      rate[j] = c.flops() / median(res[j].class_s[k]) * 1e-9;
      if (rate[j] > rate[best]) best = j;
      const std::string path = libs[j]->path(k);
      std::printf(" %.1f%s |", rate[j], path == "fallback" ? "*" : "");
    }
    std::printf(" %s x%.2f |\n", libs[best]->name().c_str(), rate[best] / rate[0]);
  }
  std::printf("| **step total, ms** | | | %.3f |", step_gflop);
  for (size_t j = 0; j < libs.size(); ++j) std::printf(" %.1f |", median(res[j].total_s) * 1e3);
  std::printf(" |\n| **step GFLOP/s** | | | |");
  for (size_t j = 0; j < libs.size(); ++j)
    std::printf(" %.1f |", step_gflop / median(res[j].total_s));
  std::printf(" |\n| **2048^3 sgemm GFLOP/s** | | | |");
  for (size_t j = 0; j < libs.size(); ++j)
    std::printf(" %s |",
                libs[j]->has_peak()
                    ? fmt("%.1f", 2.0 * 2048 * 2048 * 2048 / median(res[j].peak_s) * 1e-9).c_str()
                    : "n/a");
  std::printf(" |\n| **step / own 2048^3** | | | |");
  for (size_t j = 0; j < libs.size(); ++j)
    std::printf(" %s |", libs[j]->has_peak()
                             ? fmt("%.0f%%", 100 * median(res[j].peak_s) / median(res[j].total_s) *
                                                 step_gflop / (2.0 * 2048 * 2048 * 2048 * 1e-9))
                                   .c_str()
                             : "n/a");
  std::printf(" |\n| **deterministic** | | | |");
  for (size_t j = 0; j < libs.size(); ++j)
    std::printf(" %s |", res[j].check.deterministic ? "yes" : "**no**");
  std::printf(" |\n| **max rel. diff to OpenBLAS-OpenMP** | | | |");
  for (size_t j = 0; j < libs.size(); ++j) std::printf(" %.1e |", res[j].check.max_rel_diff);
  std::printf(" |\n\n");
  // The per-class winners together, among the deterministic libraries.
  double best_total = 0;
  for (size_t k = 0; k < classes.size(); ++k) {
    double best = 1e30;
    for (size_t j = 0; j < libs.size(); ++j)
      if (res[j].check.deterministic) best = std::min(best, median(res[j].class_s[k]));
    best_total += best;
  }
  const double base = median(res[0].total_s);
  std::printf("Best library per class, together: %.1f ms (%s: %.1f ms, saves %.1f ms).\n\n",
              best_total * 1e3, libs[0]->name().c_str(), base * 1e3, (base - best_total) * 1e3);
  std::printf("{\"threads\":%d,\"best_per_class_ms\":%.2f,\"reference_ms\":%.2f}\n", threads,
              best_total * 1e3, base * 1e3);
}

std::vector<int> parse_list(const std::string& s) {
  std::vector<int> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::stoi(item));
  return out;
}

int run(const std::vector<int>& thread_counts, int rounds) {
  const Step step = record_step();
  const std::vector<ShapeClass> classes = group(step);
  double step_gflop = 0;
  for (const ShapeClass& c : classes) step_gflop += c.flops() * 1e-9;
  std::mt19937 gen(7);
  std::vector<Operands> ops;
  size_t bytes = 0;
  for (const GemmCall& c : step.calls) {
    ops.push_back(make_operands(c, gen));
    bytes += 4 * (ops.back().na + ops.back().nb + 2 * ops.back().nc);
  }
  std::printf(
      "{\"calls\":%zu,\"forward_calls\":%zu,\"classes\":%zu,\"step_gflop\":%.4f,"
      "\"operand_mb\":%.1f}\n",
      step.calls.size(), step.forward_calls, classes.size(), step_gflop, bytes / 1e6);
  for (const ShapeClass& c : classes)
    std::printf(
        "{\"class\":\"%s\",\"phase\":\"%s\",\"calls\":%zu,\"gflop\":%.4f,"
        "\"lda\":%d,\"ldb\":%d,\"ldc\":%d}\n",
        c.name().c_str(), c.phase().c_str(), c.calls.size(), c.flops() * 1e-9, c.shape.lda,
        c.shape.ldb, c.shape.ldc);

  const std::string lib_dir = "/usr/lib/x86_64-linux-gnu/";
  std::vector<std::unique_ptr<Library>> owned;
  auto add_cblas = [&](const char* name, const char* path, CblasLibrary::Kind kind) {
    auto lib = std::make_unique<CblasLibrary>(name, lib_dir + path, kind);
    if (!lib->ok()) {
      std::fprintf(stderr, "gemm_bench: %s not available: %s\n", name, lib->error().c_str());
      return;
    }
    owned.push_back(std::move(lib));
  };
  // OpenBLAS-OpenMP first: it is what the model links, and the reference of the checks.
  add_cblas("openblas-openmp", "openblas-openmp/libopenblas.so.0", CblasLibrary::Kind::kOpenBlas);
  add_cblas("openblas-pthread", "openblas-pthread/libopenblas.so.0", CblasLibrary::Kind::kOpenBlas);
  add_cblas("blis-openmp", "blis-openmp/libblis.so.4", CblasLibrary::Kind::kBlis);
  add_cblas("blis-serial", "blis-serial/libblis.so.4", CblasLibrary::Kind::kBlis);
  owned.push_back(std::make_unique<DnnlSgemm>());
  owned.push_back(std::make_unique<DnnlMatmul>());
  owned.push_back(std::make_unique<Libxsmm>());
  std::vector<Library*> libs;
  for (auto& l : owned) {
    libs.push_back(l.get());
    std::printf("{\"library\":\"%s\",\"version\":\"%s\"}\n", l->name().c_str(),
                l->version().c_str());
  }

  const int n = 2048;
  const GemmCall big_shape{Trans::kNo, Trans::kNo, n, n, n, n, n, n, 1.f, 0.f, false};
  const Operands big = make_operands(big_shape, gen);

  for (int threads : thread_counts) {
    const Replay replay{step, classes, ops, threads};
    const size_t peak_cls = classes.size();  // the 2048^3 call's index after the classes'
    for (Library* l : libs) {
      for (size_t k = 0; k < classes.size(); ++k)
        l->prepare(k, classes[k].shape, classes[k].shape.in_parallel ? 1 : threads);
      if (l->has_peak()) l->prepare(peak_cls, big_shape, threads);
    }
    std::vector<Result> res(libs.size());
    // Checks first (they warm every library up too): OpenBLAS-OpenMP's results are the
    // reference of the others'.
    for (size_t k = 0; k < classes.size(); ++k) {
      std::vector<float> ref;
      for (size_t j = 0; j < libs.size(); ++j)
        check_class(replay, *libs[j], k, j == 0 ? nullptr : &ref, res[j].check,
                    j == 0 ? &ref : nullptr);
    }
    for (size_t j = 0; j < libs.size(); ++j) {
      res[j].class_s.resize(classes.size());
      if (libs[j]->has_peak())
        peak_seconds(*libs[j], peak_cls, threads, big, big_shape);  // warm-up
    }
    for (int round = 0; round < rounds; ++round) {
      for (size_t o = 0; o < libs.size(); ++o) {
        const size_t j = (o + round) % libs.size();
        // A library's idle threads spin for a while after its last call (OpenBLAS-pthread's
        // about 0.1 s): the next library should not share the cores with them.
        std::this_thread::sleep_for(std::chrono::milliseconds(150));
        double total = 0;
        for (size_t k = 0; k < classes.size(); ++k) {
          auto t = Clock::now();
          replay.run(*libs[j], k);
          const double s = seconds_since(t);
          res[j].class_s[k].push_back(s);
          total += s;
        }
        res[j].total_s.push_back(total);
        if (libs[j]->has_peak())
          res[j].peak_s.push_back(peak_seconds(*libs[j], peak_cls, threads, big, big_shape));
      }
    }
    for (size_t j = 0; j < libs.size(); ++j) {
      for (size_t k = 0; k < classes.size(); ++k) {
        const double s = median(res[j].class_s[k]);
        std::printf(
            "{\"threads\":%d,\"library\":\"%s\",\"class\":\"%s\",\"path\":\"%s\","
            "\"median_ms\":%.6f,\"gflops\":%.2f}\n",
            threads, libs[j]->name().c_str(), classes[k].name().c_str(), libs[j]->path(k).c_str(),
            s * 1e3, classes[k].flops() / s * 1e-9);
      }
      const double total = median(res[j].total_s);
      const double peak = libs[j]->has_peak() ? 2.0 * n * n * n / median(res[j].peak_s) * 1e-9 : 0;
      std::printf(
          "{\"threads\":%d,\"library\":\"%s\",\"step_gemm_ms\":%.2f,\"step_gflops\":%.2f,"
          "\"sgemm2048_gflops\":%.2f,\"deterministic\":%s,\"max_rel_diff\":%.3g}\n",
          threads, libs[j]->name().c_str(), total * 1e3, step_gflop / total, peak,
          res[j].check.deterministic ? "true" : "false", res[j].check.max_rel_diff);
    }
    std::fflush(stdout);
    print_tables(classes, libs, res, threads, step_gflop);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace primal

int main(int argc, char** argv) {
  std::vector<int> threads = {1, 2};
  int rounds = 5;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--threads" && i + 1 < argc) {
      threads = primal::parse_list(argv[++i]);
    } else if (arg == "--rounds" && i + 1 < argc) {
      rounds = std::max(1, std::stoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: gemm_bench [--threads 1,2] [--rounds R]\n");
      return 2;
    }
  }
  return primal::run(threads, rounds);
}
