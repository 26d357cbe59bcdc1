// cuBLAS / cuBLASLt wrappers against a double CPU GEMM: row-major results for every pair of
// transpositions, leading dimensions wider than the matrices, strided batches, the bias
// epilogue; fp32 (1e-5) and bf16 inputs with fp32 or bf16 outputs (2e-2).
#include <gtest/gtest.h>

#include "core/cuda/blas.h"
#include "tests/gpu/gpu_test_util.h"

namespace primal::cuda::testing {
namespace {

// C[M, N] = alpha op(A) op(B) + beta C, row-major, in double.
void reference_gemm(Trans ta, Trans tb, int M, int N, int K, double alpha,
                    const std::vector<float>& A, int lda, const std::vector<float>& B, int ldb,
                    double beta, std::vector<double>& C, int ldc, int64_t a0 = 0, int64_t b0 = 0,
                    int64_t c0 = 0) {
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double s = 0;
      for (int k = 0; k < K; ++k) {
        const double a =
            ta == Trans::kNo ? A[a0 + int64_t(i) * lda + k] : A[a0 + int64_t(k) * lda + i];
        const double b =
            tb == Trans::kNo ? B[b0 + int64_t(k) * ldb + j] : B[b0 + int64_t(j) * ldb + k];
        s += a * b;
      }
      double& c = C[c0 + int64_t(i) * ldc + j];
      c = alpha * s + beta * c;
    }
}

template <typename TA, typename TC>
struct Pair {
  using A = TA;
  using C = TC;
};
template <typename P>
class Gemm : public GpuTest {};
using GemmTypes = ::testing::Types<Pair<float, float>, Pair<bf16, float>, Pair<bf16, bf16>>;
struct GemmNames {
  template <typename P>
  static std::string GetName(int) {
    if (std::is_same_v<typename P::A, float>) return "fp32";
    return std::is_same_v<typename P::C, float> ? "bf16_to_fp32" : "bf16";
  }
};
TYPED_TEST_SUITE(Gemm, GemmTypes, GemmNames);

TYPED_TEST(Gemm, RowMajorForEveryTransposition) {
  using TA = typename TypeParam::A;
  using TC = typename TypeParam::C;
  const int M = 45, N = 37, K = 70, pad = 3;
  for (const Trans ta : {Trans::kNo, Trans::kYes})
    for (const Trans tb : {Trans::kNo, Trans::kYes}) {
      const int lda = (ta == Trans::kNo ? K : M) + pad, ldb = (tb == Trans::kNo ? N : K) + pad;
      const int ldc = N + pad;
      const int a_rows = ta == Trans::kNo ? M : K, b_rows = tb == Trans::kNo ? K : N;
      const auto A = rounded<TA>(random_vector(int64_t(a_rows) * lda, 1));
      const auto B = rounded<TA>(random_vector(int64_t(b_rows) * ldb, 2));
      const auto C0 = rounded<TC>(random_vector(int64_t(M) * ldc, 3));
      auto A_d = this->template upload<TA>(A), B_d = this->template upload<TA>(B);
      auto C_d = this->template upload<TC>(C0);
      this->blas_->template gemm<TA, TC>(ta, tb, M, N, K, 0.5f, A_d.data(), lda, B_d.data(), ldb,
                                         0.25f, C_d.data(), ldc);
      std::vector<double> C(C0.begin(), C0.end());
      reference_gemm(ta, tb, M, N, K, 0.5, A, lda, B, ldb, 0.25, C, ldc);
      EXPECT_LT(rel_error(this->download(C_d), C), tolerance<TC>())
          << "ta " << int(ta) << " tb " << int(tb);
    }
}

TYPED_TEST(Gemm, StridedBatchedPerHeadProducts) {
  using TA = typename TypeParam::A;
  using TC = typename TypeParam::C;
  // Per-head u_h [R, d] (heads at a stride of d inside rows of C) times W_h [d, s].
  const int H = 4, d = 16, s = 6, R = 50, C = H * d;
  const auto u = rounded<TA>(random_vector(int64_t(R) * C, 1));
  const auto W = rounded<TA>(random_vector(int64_t(H) * d * s, 2));
  auto u_d = this->template upload<TA>(u), W_d = this->template upload<TA>(W);
  auto out_d = this->template upload<TC>(std::vector<float>(int64_t(R) * H * s, 0.f));
  this->blas_->template gemm_strided_batched<TA, TC>(Trans::kNo, Trans::kNo, R, s, d, 1.f,
                                                     u_d.data(), C, d, W_d.data(), s, d * s, 0.f,
                                                     out_d.data(), H * s, s, H);
  std::vector<double> out(int64_t(R) * H * s, 0.0);
  for (int h = 0; h < H; ++h)
    reference_gemm(Trans::kNo, Trans::kNo, R, s, d, 1, u, C, W, s, 0, out, H * s, h * d,
                   int64_t(h) * d * s, h * s);
  EXPECT_LT(rel_error(this->download(out_d), out), tolerance<TC>());
}

TYPED_TEST(Gemm, LtLinearWithBiasEpilogue) {
  using TA = typename TypeParam::A;
  using TC = typename TypeParam::C;
  // y = x W^T + b: x [rows, in], W [out, in].
  const int rows = 40, in = 64, out = 48;
  const auto x = rounded<TA>(random_vector(int64_t(rows) * in, 1));
  const auto W = rounded<TA>(random_vector(int64_t(out) * in, 2));
  const auto b = rounded<TC>(random_vector(out, 3));
  auto x_d = this->template upload<TA>(x), W_d = this->template upload<TA>(W);
  auto b_d = this->template upload<TC>(b);
  DeviceBuffer<TC> y_d(*this->allocator_, int64_t(rows) * out, this->ex_.stream);
  this->blas_->template gemm_lt<TA, TC>(Trans::kNo, Trans::kYes, rows, out, in, x_d.data(), in,
                                        W_d.data(), in, b_d.data(), 0.f, y_d.data(), out);
  std::vector<double> y(int64_t(rows) * out, 0.0);
  reference_gemm(Trans::kNo, Trans::kYes, rows, out, in, 1, x, in, W, in, 0, y, out);
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < out; ++j) y[int64_t(r) * out + j] += b[j];
  EXPECT_LT(rel_error(this->download(y_d), y), tolerance<TC>());
}

}  // namespace
}  // namespace primal::cuda::testing
