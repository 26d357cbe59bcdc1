// Forward+backward time and memory of the model, each attention kind on the same shapes, and the
// achieved GEMM rate against this machine's measured sgemm peak.
//
//   model_bench [--threads T] [--reps R] [--case NAME] [--list]
//
// Prints one JSON line per case (and the sgemm peak first). Each case can run in its own
// process (--case) so that its peak resident memory is its own; bench/run_model_bench.py
// does that and prints the table of docs/performance.md.
//
// byte_lm is a whole training step of a byte-level LM: forward + backward + AdamW
// (lr 1e-4, weight decay 0.01 on the parameters whose decay flag is set, as the trainer runs
// it; no gradient clipping). Its line adds tokens_per_s = B*N / median_s and the last loss.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_models.h"
#include "core/blas.h"
#include "model/attention_kinds.h"
#include "model/transformer.h"
#include "trainer/adamw.h"

namespace primal {
namespace {

using enum AttentionKind;
using bench::byte_lm_model;
using bench::Clock;
using bench::listops_model;
using bench::seconds_since;

struct BenchCase {
  std::string name;
  AttentionKind kind;
  int B, N;
  bool lm = false;  // the byte LM of byte_lm_model(), trained with AdamW
};

// The LRA-ListOps shape (C=64, H=2, 2 layers, F=128, s=20, m=10), N=2000 B=32, and the
// same model at B=8 over growing N.
std::vector<BenchCase> cases() {
  std::vector<BenchCase> out;
  for (const AttentionKindSpec* kind : attention_kinds()) {
    std::string name = kind->name;
    std::transform(name.begin(), name.end(), name.begin(), ::tolower);
    const AttentionKind k = kind->kind;
    out.push_back({"listops_" + name, k, 32, 2000});
    for (int n : {1024, 2048, 4096, 8192})
      out.push_back({name + "_n" + std::to_string(n), k, 8, n});
  }
  out.push_back({"byte_lm", kPrimal, 16, 512, true});
  return out;
}

std::string attention_label(const ModelConfig& config) {
  std::string out;
  for (AttentionKind k : config.layers) {
    if (!out.empty()) out += ",";
    out += attention_kind(k).name;
  }
  return out;
}

// kB from /proc/self/status ("VmRSS", "VmHWM").
long status_kb(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(field, 0) == 0) return std::stol(line.substr(std::strlen(field) + 1));
  return 0;
}

// The BLAS library this process mapped (which OpenBLAS build the alternatives system gave it).
std::string blas_path() {
  std::ifstream f("/proc/self/maps");
  std::string line;
  while (std::getline(f, line)) {
    const size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    if (path.find("openblas") != std::string::npos || path.find("libblas") != std::string::npos)
      return path;
  }
  return "";
}

double sgemm_peak_gflops() {
  const int n = 2048;
  std::vector<float> a(size_t(n) * n, 1.f), b(a), c(a);
  double best = 1e30;
  for (int rep = 0; rep < 4; ++rep) {
    auto t = Clock::now();
    gemm(Trans::kNo, Trans::kNo, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
    best = std::min(best, seconds_since(t));
  }
  return 2.0 * n * n * n / best * 1e-9;
}

void run_case(const BenchCase& c, int reps) {
  ModelConfig config = c.lm ? byte_lm_model(c.N) : listops_model(c.kind, c.N);
  Transformer<float> model(config);
  std::mt19937 gen(1);
  std::uniform_int_distribution<int> token(0, config.vocab - 1), label(0, 9);
  Batch batch;
  batch.B = c.B;
  batch.N = c.N;
  if (c.lm) {
    // Windows of N+1 bytes of a random stream: inputs the first N, targets the last N.
    for (int b = 0; b < c.B; ++b) {
      std::vector<int32_t> window(c.N + 1);
      for (auto& t : window) t = token(gen);
      batch.tokens.insert(batch.tokens.end(), window.begin(), window.end() - 1);
      batch.targets.insert(batch.targets.end(), window.begin() + 1, window.end());
    }
  } else {
    for (int i = 0; i < c.B * c.N; ++i) batch.tokens.push_back(token(gen));
    for (int i = 0; i < c.B; ++i) batch.targets.push_back(label(gen));
  }
  // Peak memory of the steps: the resident high-water mark is reset here, after the model and
  // batch exist (as bench/torch_bench.py does), and read after the last step. AdamW's moments
  // are made after it: torch.optim.AdamW makes them in its first step, which counts there.
  const long rss_before = status_kb("VmRSS:");
  std::ofstream("/proc/self/clear_refs") << "5";
  std::unique_ptr<AdamW<float>> optimizer;
  if (c.lm) optimizer = std::make_unique<AdamW<float>>(model.params(), AdamWOptions{});
  constexpr double kLr = 1e-4;  // weight decay 0.01: AdamWOptions' default
  Arena arena;
  arena.reset();
  const LossTerms init = model.forward_backward(arena, batch, 0);  // warm-up: the arena grows
  if (optimizer) optimizer->step(kLr);
  LossTerms loss = init;
  std::vector<double> times;
  const uint64_t flops_before = gemm_flops.load();
  for (int r = 0; r < reps; ++r) {
    arena.reset();
    auto t = Clock::now();
    loss = model.forward_backward(arena, batch, r + 1);
    if (optimizer) optimizer->step(kLr);
    times.push_back(seconds_since(t));
  }
  const double flops = double(gemm_flops.load() - flops_before) / reps;
  // One more step with the GEMMs timed (apart from the timed steps: the clock reads cost):
  // their own rate, FLOPs over their thread-seconds spread over the threads.
  arena.reset();
  gemm_thread_ns = 0;
  gemm_timing = true;
  auto timed_start = Clock::now();
  model.forward_backward(arena, batch, reps + 1);
  const double timed_step = seconds_since(timed_start);
  gemm_timing = false;
  const double gemm_seconds = double(gemm_thread_ns.load()) * 1e-9 / omp_get_max_threads();
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  const double param_mb = 2.0 * model.params().numel() * sizeof(float) / 1e6;
  const std::string attention = c.lm ? attention_label(config) : attention_kind(c.kind).name;
  std::printf(
      "{\"impl\":\"primal\",\"case\":\"%s\",\"attention\":\"%s\",\"B\":%d,\"N\":%d,"
      "\"threads\":%d,\"median_s\":%.4f,\"min_s\":%.4f,\"gemm_gflop\":%.3f,\"gflops\":%.2f,"
      "\"gemm_own_gflops\":%.2f,\"gemm_share\":%.3f,"
      "\"arena_peak_mb\":%.1f,\"params_grads_mb\":%.2f,\"peak_mb\":%.1f",
      c.name.c_str(), attention.c_str(), c.B, c.N, omp_get_max_threads(), median, times.front(),
      flops * 1e-9, flops / median * 1e-9, flops / gemm_seconds * 1e-9, gemm_seconds / timed_step,
      arena.peak_bytes() / 1e6, param_mb, (status_kb("VmHWM:") - rss_before) / 1e3);
  if (c.lm) {
    std::printf(
        ",\"tokens_per_s\":%.1f,\"adamw\":true,\"reps\":%d,\"loss_init\":%.6f,\"ce_init\":%.6f,"
        "\"ksvd_init\":%.6f,\"loss\":%.6f,\"ce\":%.6f,\"ksvd\":%.6f,\"blas\":\"%s\"",
        double(c.B) * c.N / median, reps, init.loss, init.ce, init.ksvd, loss.loss, loss.ce,
        loss.ksvd, blas_path().c_str());
  }
  std::printf("}\n");
  std::fflush(stdout);
}

}  // namespace
}  // namespace primal

int main(int argc, char** argv) {
  int reps = 3;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--threads" && i + 1 < argc) {
      omp_set_num_threads(std::stoi(argv[++i]));
    } else if (arg == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::stoi(argv[++i]));
    } else if (arg == "--case" && i + 1 < argc) {
      only = argv[++i];
    } else if (arg == "--list") {
      for (const auto& c : primal::cases()) std::printf("%s\n", c.name.c_str());
      return 0;
    } else {
      std::fprintf(stderr, "usage: model_bench [--threads T] [--reps R] [--case NAME] [--list]\n");
      return 2;
    }
  }
  std::printf("{\"sgemm_peak_gflops\":%.1f,\"threads\":%d}\n", primal::sgemm_peak_gflops(),
              omp_get_max_threads());
  bool found = false;
  for (const auto& c : primal::cases()) {
    if (!only.empty() && c.name != only) continue;
    found = true;
    primal::run_case(c, reps);
  }
  if (!found) {
    std::fprintf(stderr, "model_bench: unknown case '%s' (see --list)\n", only.c_str());
    return 2;
  }
  return 0;
}
