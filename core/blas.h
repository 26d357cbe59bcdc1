// Row-major GEMM on OpenBLAS for float and double:  C = alpha * op(A) op(B) + beta * C,
// op(A) [M, K], op(B) [K, N]. Called inside an OpenMP parallel region (per-head products),
// the OpenMP build of OpenBLAS runs it on the calling thread.
#pragma once

#include <cblas.h>

#include <atomic>
#include <cstdint>

namespace primal {

// Floating-point operations issued to GEMM so far (2 M N K per call): benchmarks read it to
// report achieved GFLOP/s.
inline std::atomic<uint64_t> gemm_flops{0};

enum class Trans { kNo, kYes };

inline CBLAS_TRANSPOSE cblas_trans(Trans t) {
  return t == Trans::kYes ? CblasTrans : CblasNoTrans;
}

inline void gemm(Trans ta, Trans tb, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  gemm_flops.fetch_add(2ull * M * N * K, std::memory_order_relaxed);
  cblas_sgemm(CblasRowMajor, cblas_trans(ta), cblas_trans(tb), M, N, K, alpha, A, lda, B, ldb, beta,
              C, ldc);
}

inline void gemm(Trans ta, Trans tb, int M, int N, int K, double alpha, const double* A, int lda,
                 const double* B, int ldb, double beta, double* C, int ldc) {
  gemm_flops.fetch_add(2ull * M * N * K, std::memory_order_relaxed);
  cblas_dgemm(CblasRowMajor, cblas_trans(ta), cblas_trans(tb), M, N, K, alpha, A, lda, B, ldb, beta,
              C, ldc);
}

}  // namespace primal
