// GEMM on cuBLAS and cuBLASLt, row-major like core/blas.h:  C = alpha op(A) op(B) + beta C,
// op(A) [M, K], op(B) [K, N], all matrices row-major with leading dimensions lda, ldb, ldc.
// cuBLAS is column-major; a row-major C is a column-major C^T = op(B)^T op(A)^T, so every
// call passes B before A with M and N swapped (the transposition trick), and no data moves.
//
// Types: A and B float or bf16 (both the same), C float or bf16; accumulation is always fp32
// (CUBLAS_COMPUTE_32F). In fp32 mode TF32 is off unless allow_tf32 is set: the fp32 path is
// the one compared with the CPU to 1e-5.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>

#include <atomic>
#include <cstdint>
#include <memory>

#include "core/blas.h"
#include "core/cuda/device.h"

namespace primal::cuda {

class Blas {
 public:
  // Handles bound to `stream`, and a 32 MiB cuBLASLt workspace on the current device.
  explicit Blas(cudaStream_t stream);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  void set_stream(cudaStream_t stream);
  cudaStream_t stream() const { return stream_; }
  void set_allow_tf32(bool allow) { allow_tf32_ = allow; }

  // cuBLAS (cublasGemmEx).
  template <typename TA, typename TC>
  void gemm(Trans ta, Trans tb, int M, int N, int K, float alpha, const TA* A, int64_t lda,
            const TA* B, int64_t ldb, float beta, TC* C, int64_t ldc);

  // `batch` independent products, matrix i at A + i strideA, B + i strideB, C + i strideC
  // (cublasGemmStridedBatchedEx): the per-head products, heads at a stride of d inside a row.
  template <typename TA, typename TC>
  void gemm_strided_batched(Trans ta, Trans tb, int M, int N, int K, float alpha, const TA* A,
                            int64_t lda, int64_t strideA, const TA* B, int64_t ldb, int64_t strideB,
                            float beta, TC* C, int64_t ldc, int64_t strideC, int batch);

  // cuBLASLt: C = op(A) op(B) + bias (bias [N], broadcast over the M rows, of C's type; null
  // for none) + beta C. The Linear layer's forward in one call: y = x W^T + b is
  // gemm_lt(kNo, kYes, rows, out, in, x, in, W, in, b, 0, y, out).
  template <typename TA, typename TC>
  void gemm_lt(Trans ta, Trans tb, int M, int N, int K, const TA* A, int64_t lda, const TA* B,
               int64_t ldb, const TC* bias, float beta, TC* C, int64_t ldc);

  // Floating-point operations issued so far (2 M N K per product).
  uint64_t flops() const { return flops_.load(std::memory_order_relaxed); }

 private:
  struct LtPlans;  // blas.cc

  cudaStream_t stream_;
  cublasHandle_t handle_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = size_t{32} << 20;
  bool allow_tf32_ = false;
  std::atomic<uint64_t> flops_{0};
  // gemm_lt's planned products: descriptors and algorithm, by everything that decides them.
  std::unique_ptr<LtPlans> lt_plans_;
};

}  // namespace primal::cuda
