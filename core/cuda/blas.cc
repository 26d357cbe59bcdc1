#include "core/cuda/blas.h"

#include <map>
#include <memory>
#include <type_traits>

#include "core/cuda/check.h"

namespace primal::cuda {
namespace {

template <typename T>
cudaDataType_t data_type() {
  if constexpr (std::is_same_v<T, float>)
    return CUDA_R_32F;
  else
    return CUDA_R_16BF;
}

cublasOperation_t op(Trans t) {
  return t == Trans::kYes ? CUBLAS_OP_T : CUBLAS_OP_N;
}

// Owned cuBLASLt descriptors of one product shape.
struct LtDescs {
  cublasLtMatmulDesc_t matmul = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  LtDescs() = default;
  LtDescs(const LtDescs&) = delete;
  LtDescs& operator=(const LtDescs&) = delete;
  ~LtDescs() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (matmul) cublasLtMatmulDescDestroy(matmul);
  }
};

// The largest power of two up to 256 that divides the address.
uint32_t alignment(const void* p) {
  uint32_t a = 256;
  while (a > 1 && reinterpret_cast<uintptr_t>(p) % a != 0) a /= 2;
  return a;
}

// Everything that decides gemm_lt's descriptors and algorithm: a training step issues the same
// few dozen products every step, so each is planned once (descriptors made, the heuristic
// asked) and replayed; only the bias pointer is set per call.
struct LtKey {
  int ta, tb, M, N, K;
  int64_t lda, ldb, ldc;
  cudaDataType_t a_type, c_type;
  cublasComputeType_t compute;
  bool bias;
  uint32_t align[4];  // of Lt's A, B, C, D: our B, A, C, C
  auto operator<=>(const LtKey&) const = default;
};
struct LtPlan {
  LtDescs d;
  cublasLtMatmulAlgo_t algo{};
};

std::unique_ptr<LtPlan> make_lt_plan(cublasLtHandle_t lt, const LtKey& key,
                                     size_t workspace_bytes) {
  auto plan = std::make_unique<LtPlan>();
  LtDescs& d = plan->d;
  PRIMAL_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.matmul, key.compute, CUDA_R_32F));
  // Column-major: D^T [N, M] = op(B)^T [N, K] op(A)^T [K, M].
  const bool a_t = key.ta == int(Trans::kYes), b_t = key.tb == int(Trans::kYes);
  const cublasOperation_t first = b_t ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t second = a_t ? CUBLAS_OP_T : CUBLAS_OP_N;
  PRIMAL_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(d.matmul, CUBLASLT_MATMUL_DESC_TRANSA, &first, sizeof first));
  PRIMAL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.matmul, CUBLASLT_MATMUL_DESC_TRANSB, &second,
                                                     sizeof second));
  if (key.bias) {
    // The bias runs along the rows of the column-major D^T: N of them, one per output column
    // of the row-major C. Its pointer is set at each call.
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    PRIMAL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.matmul, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                       &epilogue, sizeof epilogue));
  }
  // Stored shapes of the column-major operands, before op().
  const int M = key.M, N = key.N, K = key.K;
  PRIMAL_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&d.a, key.a_type, b_t ? K : N, b_t ? N : K, key.ldb));
  PRIMAL_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&d.b, key.a_type, a_t ? M : K, a_t ? K : M, key.lda));
  PRIMAL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.c, key.c_type, N, M, key.ldc));
  PRIMAL_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&d.pref));
  PRIMAL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes, sizeof workspace_bytes));
  const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4; ++i) {
    PRIMAL_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, align_attr[i], &key.align[i],
                                                             sizeof key.align[i]));
  }
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  PRIMAL_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt, d.matmul, d.a, d.b, d.c, d.c, d.pref, 1,
                                                     &heuristic, &found));
  if (found == 0)
    throw Error("Blas::gemm_lt", "cuBLASLt has no algorithm for M=" + std::to_string(M) +
                                     " N=" + std::to_string(N) + " K=" + std::to_string(K));
  plan->algo = heuristic.algo;
  return plan;
}

}  // namespace

struct Blas::LtPlans {
  std::map<LtKey, std::unique_ptr<LtPlan>> by_key;
};

Blas::Blas(cudaStream_t stream) : stream_(stream), lt_plans_(std::make_unique<LtPlans>()) {
  PRIMAL_CUBLAS_CHECK(cublasCreate(&handle_));
  PRIMAL_CUBLAS_CHECK(cublasLtCreate(&lt_));
  PRIMAL_CUBLAS_CHECK(cublasSetStream(handle_, stream_));
  PRIMAL_CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes_));
  PRIMAL_CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace_, workspace_bytes_));
}

Blas::~Blas() {
  lt_plans_.reset();  // the descriptors before the handle they were planned with
  if (workspace_) cudaFree(workspace_);
  if (lt_) cublasLtDestroy(lt_);
  if (handle_) cublasDestroy(handle_);
}

void Blas::set_stream(cudaStream_t stream) {
  stream_ = stream;
  PRIMAL_CUBLAS_CHECK(cublasSetStream(handle_, stream_));
}

template <typename TA, typename TC>
void Blas::gemm(Trans ta, Trans tb, int M, int N, int K, float alpha, const TA* A, int64_t lda,
                const TA* B, int64_t ldb, float beta, TC* C, int64_t ldc) {
  flops_.fetch_add(2ull * M * N * K, std::memory_order_relaxed);
  const cublasComputeType_t compute =
      std::is_same_v<TA, float> && allow_tf32_ ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  PRIMAL_CUBLAS_CHECK(cublasGemmEx(handle_, op(tb), op(ta), N, M, K, &alpha, B, data_type<TA>(),
                                   int(ldb), A, data_type<TA>(), int(lda), &beta, C,
                                   data_type<TC>(), int(ldc), compute, CUBLAS_GEMM_DEFAULT));
}

template <typename TA, typename TC>
void Blas::gemm_strided_batched(Trans ta, Trans tb, int M, int N, int K, float alpha, const TA* A,
                                int64_t lda, int64_t strideA, const TA* B, int64_t ldb,
                                int64_t strideB, float beta, TC* C, int64_t ldc, int64_t strideC,
                                int batch) {
  flops_.fetch_add(2ull * M * N * K * uint64_t(batch), std::memory_order_relaxed);
  const cublasComputeType_t compute =
      std::is_same_v<TA, float> && allow_tf32_ ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  PRIMAL_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      handle_, op(tb), op(ta), N, M, K, &alpha, B, data_type<TA>(), int(ldb), strideB, A,
      data_type<TA>(), int(lda), strideA, &beta, C, data_type<TC>(), int(ldc), strideC, batch,
      compute, CUBLAS_GEMM_DEFAULT));
}

template <typename TA, typename TC>
void Blas::gemm_lt(Trans ta, Trans tb, int M, int N, int K, const TA* A, int64_t lda, const TA* B,
                   int64_t ldb, const TC* bias, float beta, TC* C, int64_t ldc) {
  flops_.fetch_add(2ull * M * N * K, std::memory_order_relaxed);
  const cublasComputeType_t compute =
      std::is_same_v<TA, float> && allow_tf32_ ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  // The heuristic assumes 256-byte aligned operands unless told otherwise; the operands of a
  // Linear can be less aligned (a parameter inside a flat buffer), and a kernel that needs more
  // alignment than a pointer has must not be chosen. (Lt's A is our B: the transposition trick.)
  const LtKey key{int(ta),
                  int(tb),
                  M,
                  N,
                  K,
                  lda,
                  ldb,
                  ldc,
                  data_type<TA>(),
                  data_type<TC>(),
                  compute,
                  bias != nullptr,
                  {alignment(B), alignment(A), alignment(C), alignment(C)}};
  std::unique_ptr<LtPlan>& plan = lt_plans_->by_key[key];
  if (!plan) plan = make_lt_plan(lt_, key, workspace_bytes_);
  if (bias) {
    PRIMAL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
        plan->d.matmul, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  }
  const float alpha = 1;
  const LtDescs& d = plan->d;
  PRIMAL_CUBLAS_CHECK(cublasLtMatmul(lt_, d.matmul, &alpha, B, d.a, A, d.b, &beta, C, d.c, C, d.c,
                                     &plan->algo, workspace_, workspace_bytes_, stream_));
}

#define PRIMAL_BLAS_INSTANTIATE(TA, TC)                                                           \
  template void Blas::gemm<TA, TC>(Trans, Trans, int, int, int, float, const TA*, int64_t,        \
                                   const TA*, int64_t, float, TC*, int64_t);                      \
  template void Blas::gemm_strided_batched<TA, TC>(Trans, Trans, int, int, int, float, const TA*, \
                                                   int64_t, int64_t, const TA*, int64_t, int64_t, \
                                                   float, TC*, int64_t, int64_t, int);            \
  template void Blas::gemm_lt<TA, TC>(Trans, Trans, int, int, int, const TA*, int64_t, const TA*, \
                                      int64_t, const TC*, float, TC*, int64_t);
PRIMAL_BLAS_INSTANTIATE(float, float)
PRIMAL_BLAS_INSTANTIATE(bf16, float)
PRIMAL_BLAS_INSTANTIATE(bf16, bf16)
#undef PRIMAL_BLAS_INSTANTIATE

}  // namespace primal::cuda
