// primal_gpu_bench: op-level throughput of the CUDA backend on one GPU.
//   GEMM peak (bf16 cuBLASLt, fp32, TF32), the memory-bound kernels (LayerNorm, GELU,
//   cross-entropy, AdamW) in GB/s, and the attention cores forward + backward, PRIMAL (causal)
//   against SOFTMAX (causal: the flash kernels, and the N x N reference path up to N = 4K), at
//   N = 1K .. 16K, in bf16. The GEMM peak is measured on random operands.
// Prints one line per measurement as it goes and a table at the end. It measures ops; whole
// training steps are model/cuda/step_bench.cc's (primal_step_bench).
//   primal_gpu_bench [--quick]    (--quick: N up to 4K, fewer repetitions)
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/cuda/attention.h"
#include "core/cuda/check.h"

namespace primal::cuda {
namespace {

struct Row {
  std::string op, config;
  double ms;
  std::string rate;
};
std::vector<Row> g_rows;

void report(const std::string& op, const std::string& config, double ms, const std::string& rate) {
  std::printf("%-28s %-34s %10.3f ms  %s\n", op.c_str(), config.c_str(), ms, rate.c_str());
  std::fflush(stdout);
  g_rows.push_back({op, config, ms, rate});
}

std::string fmt(const char* f, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}

// Mean milliseconds per call of f over `iters` calls, after two warm-up calls.
double time_ms(cudaStream_t stream, int iters, const std::function<void()>& f) {
  f();
  f();
  Event start(true), stop(true);
  start.record(stream);
  for (int i = 0; i < iters; ++i) f();
  stop.record(stream);
  stop.synchronize();
  return stop.elapsed_ms(start) / iters;
}

template <typename T>
void fill_random(DeviceBuffer<T>& d, cudaStream_t stream, uint64_t seed) {
  std::vector<T> host(d.size());
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-1, 1);
  for (T& x : host) {
    if constexpr (std::is_same_v<T, float>)
      x = dist(rng);
    else
      x = __float2bfloat16_rn(dist(rng));
  }
  copy_to_device(d.data(), host.data(), d.bytes(), stream);
  PRIMAL_CUDA_CHECK(cudaStreamSynchronize(stream));
}

// Small positive values everywhere (the byte 0x3C in every position): for memory-bound ops
// whose speed does not depend on the data.
template <typename T>
void fill_const(DeviceBuffer<T>& d, cudaStream_t stream) {
  PRIMAL_CUDA_CHECK(cudaMemsetAsync(d.data(), 0x3C, d.bytes(), stream));
}

double g_bf16_peak_tflops = 0;

void bench_gemm(Blas& blas, CachingAllocator& alloc, cudaStream_t s, bool quick) {
  for (const int n : {4096, 8192}) {
    if (quick && n > 4096) continue;
    DeviceBuffer<bf16> a(alloc, int64_t(n) * n, s), b(alloc, int64_t(n) * n, s),
        c(alloc, int64_t(n) * n, s);
    fill_random(a, s, 1);
    fill_random(b, s, 2);
    const double flop = 2.0 * n * n * n;
    const double ms = time_ms(s, quick ? 5 : 20, [&] {
      blas.gemm_lt<bf16, bf16>(Trans::kNo, Trans::kYes, n, n, n, a.data(), n, b.data(), n, nullptr,
                               0.f, c.data(), n);
    });
    const double tflops = flop / ms / 1e9;
    g_bf16_peak_tflops = std::max(g_bf16_peak_tflops, tflops);
    report("gemm bf16 (cuBLASLt)", std::to_string(n) + "^3", ms, fmt("%.1f TFLOP/s", tflops));
  }
  const int n = 8192 / (quick ? 2 : 1);
  DeviceBuffer<float> a(alloc, int64_t(n) * n, s), b(alloc, int64_t(n) * n, s),
      c(alloc, int64_t(n) * n, s);
  fill_random(a, s, 3);
  fill_random(b, s, 4);
  for (const bool tf32 : {false, true}) {
    blas.set_allow_tf32(tf32);
    const double ms = time_ms(s, quick ? 3 : 10, [&] {
      blas.gemm<float, float>(Trans::kNo, Trans::kYes, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f,
                              c.data(), n);
    });
    report(tf32 ? "gemm tf32 (cuBLAS)" : "gemm fp32 (cuBLAS)", std::to_string(n) + "^3", ms,
           fmt("%.1f TFLOP/s", 2.0 * n * n * n / ms / 1e9));
  }
  blas.set_allow_tf32(false);
}

template <typename T>
void bench_kernels(const Exec& ex, bool quick) {
  const char* type = std::is_same_v<T, float> ? "fp32" : "bf16";
  CachingAllocator& alloc = *ex.allocator;
  const cudaStream_t s = ex.stream;
  const int iters = quick ? 10 : 50;
  {  // LayerNorm: rows x C
    const int64_t rows = 16384;
    const int C = 1024;
    DeviceBuffer<T> x(alloc, rows * C, s), y(alloc, rows * C, s), dx(alloc, rows * C, s);
    DeviceBuffer<float> w(alloc, C, s), b(alloc, C, s), mean(alloc, rows, s), rstd(alloc, rows, s),
        dw(alloc, C, s), db(alloc, C, s);
    fill_const(x, s), fill_const(w, s), fill_const(b, s), fill_const(dx, s);
    double ms = time_ms(s, iters, [&] {
      layernorm_forward<T>(ex, x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(),
                           rows, C, 1e-5f);
    });
    const double bytes = 2.0 * rows * C * sizeof(T);
    report(std::string("layernorm fwd ") + type, "16384 x 1024", ms,
           fmt("%.0f GB/s", bytes / ms / 1e6));
    ms = time_ms(s, iters, [&] {
      layernorm_backward<T>(ex, x.data(), y.data(), w.data(), mean.data(), rstd.data(), dx.data(),
                            dw.data(), db.data(), rows, C);
    });
    report(std::string("layernorm bwd ") + type, "16384 x 1024", ms,
           fmt("%.0f GB/s", 2 * bytes / ms / 1e6));  // x, dy twice (dx, dw/db), dx read+write
  }
  {  // GELU
    const int64_t n = int64_t(64) << 20;
    DeviceBuffer<T> x(alloc, n, s), y(alloc, n, s);
    fill_const(x, s);
    double ms = time_ms(s, iters, [&] { gelu_forward<T>(ex, x.data(), y.data(), n); });
    report(std::string("gelu fwd ") + type, "64M", ms,
           fmt("%.0f GB/s", 2.0 * n * sizeof(T) / ms / 1e6));
    ms = time_ms(s, iters, [&] { gelu_backward<T>(ex, x.data(), y.data(), y.data(), n); });
    report(std::string("gelu bwd ") + type, "64M", ms,
           fmt("%.0f GB/s", 3.0 * n * sizeof(T) / ms / 1e6));
  }
  {  // cross-entropy, vocabulary 256 (byte-level LM) and 32K
    for (const int V : {256, 32768}) {
      const int64_t rows = V == 256 ? 65536 : 8192;
      DeviceBuffer<T> z(alloc, rows * V, s);
      DeviceBuffer<int32_t> t(alloc, rows, s);
      DeviceBuffer<double> loss(alloc, 1, s);
      fill_const(z, s);
      PRIMAL_CUDA_CHECK(cudaMemsetAsync(t.data(), 0, t.bytes(), s));
      const double ms = time_ms(s, iters, [&] {
        cross_entropy_forward<T>(ex, z.data(), t.data(), rows, V, loss.data());
        cross_entropy_backward<T>(ex, z.data(), t.data(), 1.f, z.data(), rows, V);
      });
      report(std::string("cross-entropy f+b ") + type,
             std::to_string(rows) + " x " + std::to_string(V), ms,
             fmt("%.0f GB/s", 4.0 * rows * V * sizeof(T) / ms / 1e6));
    }
  }
  if constexpr (std::is_same_v<T, float>) {  // AdamW over 100M parameters
    const int64_t n = 100 << 20;
    DeviceBuffer<float> p(alloc, n, s), g(alloc, n, s), m(alloc, n, s), v(alloc, n, s);
    fill_const(p, s), fill_const(g, s), fill_const(m, s), fill_const(v, s);
    const auto sc = em::adamw_scalars<float>(1e-4, 0.9, 0.999, 1e-8, 0.01, true, 10);
    const double ms =
        time_ms(s, iters, [&] { adamw_step(ex, p.data(), g.data(), m.data(), v.data(), n, sc); });
    report("adamw fp32", "100M params", ms, fmt("%.0f GB/s", 7.0 * n * 4 / ms / 1e6));
  }
}

// Attention cores, forward + backward, one layer, B = 1, H = 12, d = 64 (C = 768), s = 32.
void bench_attention(Blas& blas, const Exec& ex, bool quick) {
  const int B = 1, H = 12, d = 64, s = 32, C = H * d;
  CachingAllocator& alloc = *ex.allocator;
  const cudaStream_t st = ex.stream;
  std::vector<int> lengths = {1024, 2048, 4096, 8192, 16384};
  if (quick) lengths = {1024, 2048, 4096};
  for (const int N : lengths) {
    const int64_t rows = int64_t(B) * N;
    const int iters = N >= 8192 ? 3 : 10;
    double primal_ms = 0;
    {
      DeviceBuffer<bf16> qk(alloc, rows * 2 * C, st), u(alloc, 2 * rows * C, st),
          er(alloc, rows * 2 * s * H, st), der(alloc, rows * 2 * s * H, st),
          dqk(alloc, rows * 2 * C, st), we(alloc, int64_t(H) * d * s, st),
          wr(alloc, int64_t(H) * d * s, st);
      DeviceBuffer<float> norm(alloc, 2 * rows * H, st), dwe(alloc, int64_t(H) * d * s, st),
          dwr(alloc, int64_t(H) * d * s, st);
      fill_random(qk, st, 5), fill_random(we, st, 6), fill_random(wr, st, 7);
      fill_random(der, st, 8);
      primal_ms = time_ms(st, iters, [&] {
        primal_causal_forward<bf16>(blas, ex, qk.data(), we.data(), wr.data(), B, N, H, d, s,
                                    u.data(), norm.data(), er.data());
        primal_causal_backward<bf16>(blas, ex, u.data(), norm.data(), we.data(), wr.data(),
                                     der.data(), B, N, H, d, s, dqk.data(), dwe.data(), dwr.data());
      });
    }
    double flash_ms = 0, reference_ms = 0;
    {
      DeviceBuffer<bf16> qkv(alloc, rows * 3 * C, st), y(alloc, rows * C, st),
          dqkv(alloc, rows * 3 * C, st);
      DeviceBuffer<float> lse(alloc, int64_t(B) * H * N, st);
      fill_random(qkv, st, 9);
      flash_ms = time_ms(st, iters, [&] {
        flash_attention_forward<bf16>(ex, qkv.data(), nullptr, true, B, N, H, d, y.data(),
                                      lse.data());
        flash_attention_backward<bf16>(ex, qkv.data(), nullptr, true, y.data(), lse.data(),
                                       y.data(), B, N, H, d, dqkv.data());
      });
      if (N <= 4096) {
        DeviceBuffer<bf16> probs(alloc, int64_t(B) * H * N * N, st);
        reference_ms = time_ms(st, iters, [&] {
          softmax_attention_forward_reference<bf16>(blas, ex, qkv.data(), nullptr, true, B, N, H, d,
                                                    probs.data(), y.data());
          softmax_attention_backward_reference<bf16>(blas, ex, qkv.data(), probs.data(), y.data(),
                                                     B, N, H, d, dqkv.data());
        });
      }
    }
    alloc.empty_cache();
    const std::string config = "N=" + std::to_string(N) + " H=12 d=64 s=32";
    report("attn PRIMAL f+b bf16", config, primal_ms, fmt("%.2f Mtok/s", N / primal_ms / 1e3));
    const double flash_tflops = flash_attention_flops(true, B, N, H, d, true) / flash_ms / 1e9;
    report("attn SOFTMAX flash f+b bf16", config, flash_ms,
           fmt("%.2f Mtok/s", N / flash_ms / 1e3) + fmt("  %.1f TFLOP/s", flash_tflops) +
               fmt("  (PRIMAL %.1fx)", flash_ms / primal_ms));
    if (reference_ms > 0)
      report("attn SOFTMAX NxN f+b bf16", config, reference_ms,
             fmt("%.2f Mtok/s", N / reference_ms / 1e3) +
                 fmt("  (flash %.1fx)", reference_ms / flash_ms));
  }
}

int run(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const std::string reason = no_device_reason();
  if (!reason.empty()) {
    std::fprintf(stderr, "primal_gpu_bench: %s\n", reason.c_str());
    return 77;
  }
  const DeviceInfo info = device_info(current_device());
  std::printf("device: %s (sm_%d%d, %d SMs, %.0f GiB)\n", info.name.c_str(), info.major, info.minor,
              info.multiprocessors, double(info.memory_bytes) / (1 << 30));
  Stream stream;
  CachingAllocator alloc;
  Blas blas(stream);
  const Exec ex{stream, &alloc};
  bench_gemm(blas, alloc, stream, quick);
  alloc.empty_cache();
  bench_kernels<float>(ex, quick);
  bench_kernels<bf16>(ex, quick);
  alloc.empty_cache();
  bench_attention(blas, ex, quick);
  stream.synchronize();

  std::printf("\n| op | config | ms | throughput |\n|---|---|---:|---|\n");
  for (const Row& r : g_rows)
    std::printf("| %s | %s | %.3f | %s |\n", r.op.c_str(), r.config.c_str(), r.ms, r.rate.c_str());
  std::printf("\nbf16 GEMM peak measured: %.1f TFLOP/s; peak device memory in use: %.1f GiB\n",
              g_bf16_peak_tflops, double(alloc.stats().peak_in_use) / (1 << 30));
  return 0;
}

}  // namespace
}  // namespace primal::cuda

int main(int argc, char** argv) {
  try {
    return primal::cuda::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "primal_gpu_bench: %s\n", e.what());
    return 1;
  }
}
