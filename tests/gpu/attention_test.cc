// The attention cores of core/cuda/attention.h against the CPU layers' math in double:
// softmax attention (padding and causal masks) and the causal Primal-Attention core (prefix
// means, phi, per-head projections), forward and backward; fp32 (1e-5) and bf16 (2e-2).
#include <gtest/gtest.h>

#include <cmath>

#include "core/cuda/attention.h"
#include "tests/gpu/gpu_test_util.h"

namespace primal::cuda::testing {
namespace {

template <typename T>
class Attention : public GpuTypedTest<T> {};
TYPED_TEST_SUITE(Attention, ElementTypes, TypeNames);

TYPED_TEST(Attention, SoftmaxForwardAndBackwardMatchCpu) {
  using T = TypeParam;
  const int B = 2, N = 24, H = 2, d = 8, C = H * d;
  const std::vector<int32_t> lengths = {24, 17};
  const double scale = 1 / std::sqrt(double(d));
  auto len_d = this->upload_raw(lengths);
  for (const bool causal : {false, true}) {
    const auto qkv = rounded<T>(random_vector(int64_t(B) * N * 3 * C, 1));
    const auto dy = rounded<T>(random_vector(int64_t(B) * N * C, 2));
    auto qkv_d = this->template upload<T>(qkv), dy_d = this->template upload<T>(dy);
    DeviceBuffer<T> probs_d(*this->allocator_, int64_t(B) * H * N * N, this->ex_.stream);
    DeviceBuffer<T> y_d(*this->allocator_, int64_t(B) * N * C, this->ex_.stream);
    DeviceBuffer<T> dqkv_d(*this->allocator_, int64_t(B) * N * 3 * C, this->ex_.stream);
    softmax_attention_forward_reference<T>(*this->blas_, this->ex_, qkv_d.data(), len_d.data(),
                                           causal, B, N, H, d, probs_d.data(), y_d.data());
    softmax_attention_backward_reference<T>(*this->blas_, this->ex_, qkv_d.data(), probs_d.data(),
                                            dy_d.data(), B, N, H, d, dqkv_d.data());

    std::vector<double> y(int64_t(B) * N * C, 0.0), dqkv(int64_t(B) * N * 3 * C, 0.0);
    auto at = [&](int b, int n, int block, int h, int j) {
      return (int64_t(b) * N + n) * 3 * C + block * C + h * d + j;
    };
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h) {
        std::vector<double> P(N * N, 0.0), dS(N * N, 0.0);
        for (int n = 0; n < N; ++n) {
          const int keys =
              n >= lengths[b] ? 0 : (causal ? std::min(n + 1, lengths[b]) : lengths[b]);
          double mx = -1e300, sum = 0;
          std::vector<double> s(keys);
          for (int m = 0; m < keys; ++m) {
            for (int j = 0; j < d; ++j)
              s[m] += double(qkv[at(b, n, 0, h, j)]) * qkv[at(b, m, 1, h, j)];
            s[m] *= scale;
            mx = std::max(mx, s[m]);
          }
          for (int m = 0; m < keys; ++m) sum += std::exp(s[m] - mx);
          for (int m = 0; m < keys; ++m) P[n * N + m] = std::exp(s[m] - mx) / sum;
          for (int j = 0; j < d; ++j)
            for (int m = 0; m < N; ++m)
              y[(int64_t(b) * N + n) * C + h * d + j] += P[n * N + m] * qkv[at(b, m, 2, h, j)];
        }
        for (int n = 0; n < N; ++n) {
          std::vector<double> dP(N, 0.0);
          double dot = 0;
          for (int m = 0; m < N; ++m) {
            for (int j = 0; j < d; ++j)
              dP[m] += double(dy[(int64_t(b) * N + n) * C + h * d + j]) * qkv[at(b, m, 2, h, j)];
            dot += dP[m] * P[n * N + m];
          }
          for (int m = 0; m < N; ++m) dS[n * N + m] = P[n * N + m] * (dP[m] - dot);
        }
        for (int n = 0; n < N; ++n)
          for (int j = 0; j < d; ++j) {
            double dq = 0, dk = 0, dv = 0;
            for (int m = 0; m < N; ++m) {
              dq += dS[n * N + m] * qkv[at(b, m, 1, h, j)];
              dk += dS[m * N + n] * qkv[at(b, m, 0, h, j)];
              dv += P[m * N + n] * dy[(int64_t(b) * N + m) * C + h * d + j];
            }
            dqkv[at(b, n, 0, h, j)] = scale * dq;
            dqkv[at(b, n, 1, h, j)] = scale * dk;
            dqkv[at(b, n, 2, h, j)] = dv;
          }
      }
    EXPECT_LT(rel_error(this->download(y_d), y), tolerance<T>()) << "causal " << causal;
    EXPECT_LT(rel_error(this->download(dqkv_d), dqkv), tolerance<T>()) << "causal " << causal;
  }
}

TYPED_TEST(Attention, PrimalCausalForwardAndBackwardMatchCpu) {
  using T = TypeParam;
  const int B = 2, N = 13, H = 2, d = 8, s = 3, C = H * d;
  const int64_t rows = int64_t(B) * N, ld_er = 2 * s * H;
  const auto qk = rounded<T>(random_vector(rows * 2 * C, 1));
  const auto we = rounded<T>(random_vector(int64_t(H) * d * s, 2));
  const auto wr = rounded<T>(random_vector(int64_t(H) * d * s, 3));
  const auto der = rounded<T>(random_vector(rows * ld_er, 4));
  auto qk_d = this->template upload<T>(qk), der_d = this->template upload<T>(der);
  auto we_d = this->template upload<T>(we), wr_d = this->template upload<T>(wr);
  DeviceBuffer<T> u_d(*this->allocator_, 2 * rows * C, this->ex_.stream);
  DeviceBuffer<float> norm_d(*this->allocator_, 2 * rows * H, this->ex_.stream);
  DeviceBuffer<T> er_d(*this->allocator_, rows * ld_er, this->ex_.stream);
  DeviceBuffer<T> dqk_d(*this->allocator_, rows * 2 * C, this->ex_.stream);
  auto dwe_d = this->template upload<float>(std::vector<float>(int64_t(H) * d * s, 0.f));
  auto dwr_d = this->template upload<float>(std::vector<float>(int64_t(H) * d * s, 0.f));
  primal_causal_forward<T>(*this->blas_, this->ex_, qk_d.data(), we_d.data(), wr_d.data(), B, N, H,
                           d, s, u_d.data(), norm_d.data(), er_d.data());
  primal_causal_backward<T>(*this->blas_, this->ex_, u_d.data(), norm_d.data(), we_d.data(),
                            wr_d.data(), der_d.data(), B, N, H, d, s, dqk_d.data(), dwe_d.data(),
                            dwr_d.data());

  std::vector<double> er(rows * ld_er, 0.0), dqk(rows * 2 * C, 0.0);
  std::vector<double> dw[2] = {std::vector<double>(H * d * s, 0.0),
                               std::vector<double>(H * d * s, 0.0)};
  for (int block = 0; block < 2; ++block) {
    const auto& W = block == 0 ? we : wr;
    std::vector<double> u(rows * C), norm(rows * H), du(rows * C, 0.0);
    for (int b = 0; b < B; ++b)
      for (int c = 0; c < C; ++c) {
        double sum = 0;
        for (int n = 0; n < N; ++n) {
          sum += qk[(int64_t(b) * N + n) * 2 * C + block * C + c];
          u[(int64_t(b) * N + n) * C + c] = sum / (n + 1);
        }
      }
    for (int64_t r = 0; r < rows; ++r)
      for (int h = 0; h < H; ++h) {
        double sq = 0;
        for (int j = 0; j < d; ++j) sq += u[r * C + h * d + j] * u[r * C + h * d + j];
        norm[r * H + h] = std::sqrt(sq);
        for (int j = 0; j < d; ++j) u[r * C + h * d + j] /= std::max(norm[r * H + h], 1e-12);
        for (int i = 0; i < s; ++i) {
          double e = 0, g = der[r * ld_er + h * 2 * s + block * s + i];
          for (int j = 0; j < d; ++j) {
            e += u[r * C + h * d + j] * W[(int64_t(h) * d + j) * s + i];
            du[r * C + h * d + j] += g * W[(int64_t(h) * d + j) * s + i];
            dw[block][(int64_t(h) * d + j) * s + i] += u[r * C + h * d + j] * g;
          }
          er[r * ld_er + h * 2 * s + block * s + i] = e;
        }
        double dot = 0;
        for (int j = 0; j < d; ++j) dot += u[r * C + h * d + j] * du[r * C + h * d + j];
        for (int j = 0; j < d; ++j)
          du[r * C + h * d + j] =
              (du[r * C + h * d + j] - u[r * C + h * d + j] * dot) / norm[r * H + h];
      }
    for (int b = 0; b < B; ++b)
      for (int c = 0; c < C; ++c) {
        double sum = 0;
        for (int n = N - 1; n >= 0; --n) {
          sum += du[(int64_t(b) * N + n) * C + c] / (n + 1);
          dqk[(int64_t(b) * N + n) * 2 * C + block * C + c] = sum;
        }
      }
  }
  const double tol = tolerance<T>();
  EXPECT_LT(rel_error(this->download(er_d), er), tol);
  EXPECT_LT(rel_error(this->download(dqk_d), dqk), tol);
  EXPECT_LT(rel_error(this->download(dwe_d), dw[0]), tol);
  EXPECT_LT(rel_error(this->download(dwr_d), dw[1]), tol);
}

}  // namespace
}  // namespace primal::cuda::testing
