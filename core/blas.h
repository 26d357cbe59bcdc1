// Row-major GEMM on OpenBLAS for float and double:  C = alpha * op(A) op(B) + beta * C,
// op(A) [M, K], op(B) [K, N]. Called inside an OpenMP parallel region (per-head products),
// the OpenMP build of OpenBLAS runs it on the calling thread.
#pragma once

#include <cblas.h>
#include <omp.h>

#include <atomic>
#include <chrono>
#include <cstdint>

namespace primal {

// Floating-point operations issued to GEMM so far (2 M N K per call): benchmarks read it to
// report achieved GFLOP/s.
inline std::atomic<uint64_t> gemm_flops{0};

enum class Trans { kNo, kYes };

inline CBLAS_TRANSPOSE cblas_trans(Trans t) {
  return t == Trans::kYes ? CblasTrans : CblasNoTrans;
}

// One float gemm() call as issued, without its data: bench/gemm_bench.cc records the GEMMs of a
// training step through gemm_observer and replays them on other GEMM libraries.
struct GemmCall {
  Trans ta, tb;
  int M, N, K, lda, ldb, ldc;
  float alpha, beta;
  bool in_parallel;  // issued inside an active OpenMP parallel region (the per-head products)
};

// Called by every float gemm() before it multiplies, while set. Unset (the default) it costs one
// load and a predicted branch per call. Set or clear it only while no GEMM runs; it is called
// from several threads at once, so it must be thread-safe.
inline void (*gemm_observer)(const GemmCall&) = nullptr;

// While gemm_timing is set, the thread-seconds (in ns) that float GEMMs take: a call's wall
// time times the threads it runs on (one inside a parallel region, omp_get_max_threads()
// outside). Benchmarks divide the FLOPs by it, over the threads, for the GEMMs' own rate.
inline std::atomic<bool> gemm_timing{false};
inline std::atomic<uint64_t> gemm_thread_ns{0};

inline void gemm(Trans ta, Trans tb, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  gemm_flops.fetch_add(2ull * M * N * K, std::memory_order_relaxed);
  if (gemm_observer) [[unlikely]]
    gemm_observer({ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, omp_in_parallel() != 0});
  const bool timed = gemm_timing.load(std::memory_order_relaxed);
  const auto start =
      timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  cblas_sgemm(CblasRowMajor, cblas_trans(ta), cblas_trans(tb), M, N, K, alpha, A, lda, B, ldb, beta,
              C, ldc);
  if (timed) [[unlikely]] {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    gemm_thread_ns.fetch_add(uint64_t(ns) * (omp_in_parallel() ? 1 : omp_get_max_threads()),
                             std::memory_order_relaxed);
  }
}

inline void gemm(Trans ta, Trans tb, int M, int N, int K, double alpha, const double* A, int lda,
                 const double* B, int ldb, double beta, double* C, int ldc) {
  gemm_flops.fetch_add(2ull * M * N * K, std::memory_order_relaxed);
  cblas_dgemm(CblasRowMajor, cblas_trans(ta), cblas_trans(tb), M, N, K, alpha, A, lda, B, ldb, beta,
              C, ldc);
}

}  // namespace primal
