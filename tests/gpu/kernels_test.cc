// Every kernel of core/cuda/kernels.h against a CPU reference computed here in double, in
// fp32 (relative error below 1e-5) and bf16 (below 2e-2). Without a GPU every test is SKIPPED
// with the runtime's reason.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/cuda/kernels.h"
#include "tests/gpu/gpu_test_util.h"

namespace primal::cuda::testing {
namespace {

template <typename T>
class Kernels : public GpuTypedTest<T> {};
TYPED_TEST_SUITE(Kernels, ElementTypes, TypeNames);

TYPED_TEST(Kernels, LayerNormForwardAndBackwardMatchCpu) {
  using T = TypeParam;
  const int64_t rows = 37;
  const int C = 200;
  const double eps = 1e-5;
  const auto x = rounded<T>(random_vector(rows * C, 1, -2, 3));
  const auto dy = rounded<T>(random_vector(rows * C, 2));
  const auto dx0 = rounded<T>(random_vector(rows * C, 3));
  const auto w = random_vector(C, 4, 0.5, 1.5), b = random_vector(C, 5);
  const auto dw0 = random_vector(C, 6), db0 = random_vector(C, 7);
  auto dx_d = this->template upload<T>(dx0);
  auto x_d = this->template upload<T>(x), dy_d = this->template upload<T>(dy);
  auto w_d = this->template upload<float>(w), b_d = this->template upload<float>(b);
  auto dw_d = this->template upload<float>(dw0), db_d = this->template upload<float>(db0);
  DeviceBuffer<T> y_d(*this->allocator_, rows * C, this->ex_.stream);
  DeviceBuffer<float> mean_d(*this->allocator_, rows, this->ex_.stream);
  DeviceBuffer<float> rstd_d(*this->allocator_, rows, this->ex_.stream);
  layernorm_forward<T>(this->ex_, x_d.data(), w_d.data(), b_d.data(), y_d.data(), mean_d.data(),
                       rstd_d.data(), rows, C, float(eps));
  layernorm_backward<T>(this->ex_, x_d.data(), dy_d.data(), w_d.data(), mean_d.data(),
                        rstd_d.data(), dx_d.data(), dw_d.data(), db_d.data(), rows, C);

  std::vector<double> y(rows * C), mean(rows), rstd(rows), dx(rows * C), dw(C), db(C);
  for (int j = 0; j < C; ++j) dw[j] = dw0[j], db[j] = db0[j];
  for (int64_t r = 0; r < rows; ++r) {
    double m = 0, v = 0;
    for (int j = 0; j < C; ++j) m += x[r * C + j];
    m /= C;
    for (int j = 0; j < C; ++j) v += (x[r * C + j] - m) * (x[r * C + j] - m);
    v /= C;
    const double rs = 1 / std::sqrt(v + eps);
    mean[r] = m, rstd[r] = rs;
    double s1 = 0, s2 = 0;
    for (int j = 0; j < C; ++j) {
      const double xhat = (x[r * C + j] - m) * rs;
      y[r * C + j] = xhat * w[j] + b[j];
      s1 += dy[r * C + j] * w[j];
      s2 += dy[r * C + j] * w[j] * xhat;
      dw[j] += dy[r * C + j] * xhat;
      db[j] += dy[r * C + j];
    }
    for (int j = 0; j < C; ++j) {
      const double xhat = (x[r * C + j] - m) * rs;
      dx[r * C + j] = dx0[r * C + j] + rs * (dy[r * C + j] * w[j] - s1 / C - xhat * s2 / C);
    }
  }
  const double tol = tolerance<T>();
  EXPECT_LT(rel_error(this->download(y_d), y), tol);
  EXPECT_LT(rel_error(this->download(mean_d), mean), 1e-5);
  EXPECT_LT(rel_error(this->download(rstd_d), rstd), 1e-5);
  EXPECT_LT(rel_error(this->download(dx_d), dx), tol);
  EXPECT_LT(rel_error(this->download(dw_d), dw), 1e-5);
  EXPECT_LT(rel_error(this->download(db_d), db), 1e-5);
}

TYPED_TEST(Kernels, LayerNormBackwardIsBitwiseRepeatable) {
  using T = TypeParam;
  const int64_t rows = 3000;
  const int C = 96;
  auto x_d = this->template upload<T>(random_vector(rows * C, 1));
  auto dy_d = this->template upload<T>(random_vector(rows * C, 2));
  auto w_d = this->template upload<float>(random_vector(C, 3));
  DeviceBuffer<float> mean_d(*this->allocator_, rows, this->ex_.stream);
  DeviceBuffer<float> rstd_d(*this->allocator_, rows, this->ex_.stream);
  DeviceBuffer<T> y_d(*this->allocator_, rows * C, this->ex_.stream);
  layernorm_forward<T>(this->ex_, x_d.data(), w_d.data(), w_d.data(), y_d.data(), mean_d.data(),
                       rstd_d.data(), rows, C, 1e-5f);
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    auto dx_d = this->template upload<T>(std::vector<float>(rows * C, 0.f));
    auto dw_d = this->template upload<float>(std::vector<float>(C, 0.f));
    auto db_d = this->template upload<float>(std::vector<float>(C, 0.f));
    layernorm_backward<T>(this->ex_, x_d.data(), dy_d.data(), w_d.data(), mean_d.data(),
                          rstd_d.data(), dx_d.data(), dw_d.data(), db_d.data(), rows, C);
    auto dw = this->download(dw_d);
    if (run == 0)
      first = dw;
    else
      EXPECT_EQ(0, std::memcmp(first.data(), dw.data(), sizeof(float) * C));
  }
}

TYPED_TEST(Kernels, GeluForwardAndBackwardMatchErfForm) {
  using T = TypeParam;
  const int64_t n = 10007;
  const auto x = rounded<T>(random_vector(n, 1, -6, 6));
  const auto dy = rounded<T>(random_vector(n, 2));
  auto x_d = this->template upload<T>(x), dy_d = this->template upload<T>(dy);
  DeviceBuffer<T> y_d(*this->allocator_, n, this->ex_.stream);
  gelu_forward<T>(this->ex_, x_d.data(), y_d.data(), n);
  gelu_backward<T>(this->ex_, x_d.data(), dy_d.data(), dy_d.data(), n);  // in place
  std::vector<double> y(n), dx(n);
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i], cdf = 0.5 * (1 + std::erf(v / std::sqrt(2.0)));
    y[i] = v * cdf;
    dx[i] = dy[i] * (cdf + v * std::exp(-0.5 * v * v) / std::sqrt(2 * M_PI));
  }
  EXPECT_LT(rel_error(this->download(y_d), y), tolerance<T>());
  EXPECT_LT(rel_error(this->download(dy_d), dx), tolerance<T>());
}

TYPED_TEST(Kernels, BiasResidualForwardAndBiasBackward) {
  using T = TypeParam;
  const int64_t rows = 300;
  const int C = 70;
  const auto x = rounded<T>(random_vector(rows * C, 1)),
             res = rounded<T>(random_vector(rows * C, 2));
  const auto bias = random_vector(C, 3), db0 = random_vector(C, 4);
  auto x_d = this->template upload<T>(x), res_d = this->template upload<T>(res);
  auto bias_d = this->template upload<float>(bias), db_d = this->template upload<float>(db0);
  bias_residual_forward<T>(this->ex_, x_d.data(), bias_d.data(), res_d.data(), res_d.data(), rows,
                           C);  // into the residual stream, in place
  bias_backward<T>(this->ex_, x_d.data(), db_d.data(), rows, C);
  std::vector<double> y(rows * C), db(db0.begin(), db0.end());
  for (int64_t r = 0; r < rows; ++r)
    for (int j = 0; j < C; ++j) {
      y[r * C + j] = double(res[r * C + j]) + x[r * C + j] + bias[j];
      db[j] += x[r * C + j];
    }
  EXPECT_LT(rel_error(this->download(res_d), y), tolerance<T>());
  EXPECT_LT(rel_error(this->download(db_d), db), 1e-5);
}

TYPED_TEST(Kernels, PhiForwardAndBackwardMatchCpu) {
  using T = TypeParam;
  const int64_t rows = 19;
  const int H = 3, d = 40, C = H * d, ld = 2 * C;  // v: the k block of a [rows, 2C] qk buffer
  auto v = rounded<T>(random_vector(rows * ld, 1));
  for (int j = 0; j < d; ++j) v[5 * ld + C + d + j] = 0;  // one zero vector: u = 0, |v| = 0
  const auto du = rounded<T>(random_vector(rows * C, 2));
  auto v_d = this->template upload<T>(v), du_d = this->template upload<T>(du);
  DeviceBuffer<T> u_d(*this->allocator_, rows * C, this->ex_.stream);
  DeviceBuffer<float> norm_d(*this->allocator_, rows * H, this->ex_.stream);
  phi_forward<T>(this->ex_, v_d.data() + C, ld, u_d.data(), C, norm_d.data(), rows, H, d);
  const auto u_got = this->download(u_d);
  phi_backward<T>(this->ex_, u_d.data(), C, norm_d.data(), du_d.data(), C, du_d.data(), C, rows, H,
                  d);
  std::vector<double> u(rows * C), norm(rows * H), dv(rows * C);
  for (int64_t r = 0; r < rows; ++r)
    for (int h = 0; h < H; ++h) {
      const float* vv = v.data() + r * ld + C + h * d;
      double sq = 0;
      for (int j = 0; j < d; ++j) sq += double(vv[j]) * vv[j];
      const double n = std::sqrt(sq);
      norm[r * H + h] = n;
      // the backward reads the saved u (rounded to T): the reference does too
      double dot = 0;
      for (int j = 0; j < d; ++j) {
        u[r * C + h * d + j] = vv[j] / std::max(n, 1e-12);
        dot += double(u_got[r * C + h * d + j]) * du[r * C + h * d + j];
      }
      for (int j = 0; j < d; ++j) {
        const double g = du[r * C + h * d + j], uj = u_got[r * C + h * d + j];
        dv[r * C + h * d + j] = n < 1e-12 ? 0 : (g - uj * dot) / n;
      }
    }
  EXPECT_LT(rel_error(u_got, u), tolerance<T>());
  EXPECT_LT(rel_error(this->download(norm_d), norm), 1e-5);
  auto dv_got = this->download(du_d);
  // The zero vector's gradient is du / 1e-12: checked on its own, out of the norm-wise error.
  for (int j = 0; j < d; ++j) {
    const int64_t i = 5 * C + d + j;
    EXPECT_NEAR(dv_got[i], du[i] / 1e-12, std::abs(du[i] / 1e-12) * tolerance<T>());
    dv_got[i] = 0;
  }
  EXPECT_LT(rel_error(dv_got, dv), tolerance<T>());
}

TYPED_TEST(Kernels, PrefixMeansForwardAndBackwardMatchCpu) {
  using T = TypeParam;
  for (const int N : {5, 100}) {  // fewer positions than chunks, and uneven chunks
    const int B = 3, C = 70, ld = 2 * C;
    const auto q = rounded<T>(random_vector(int64_t(B) * N * ld, 1));
    const auto g = rounded<T>(random_vector(int64_t(B) * N * C, 2));
    auto q_d = this->template upload<T>(q), g_d = this->template upload<T>(g);
    DeviceBuffer<T> out_d(*this->allocator_, int64_t(B) * N * C, this->ex_.stream);
    auto dq_d = this->template upload<T>(std::vector<float>(int64_t(B) * N * ld, 0.f));
    prefix_mean_forward<T>(this->ex_, q_d.data() + C, ld, out_d.data(), C, B, N, C);
    prefix_mean_backward<T>(this->ex_, g_d.data(), C, dq_d.data() + C, ld, B, N, C);
    std::vector<double> out(int64_t(B) * N * C), dq(int64_t(B) * N * ld, 0.0);
    for (int b = 0; b < B; ++b)
      for (int c = 0; c < C; ++c) {
        double s = 0;
        for (int n = 0; n < N; ++n) {
          s += q[(int64_t(b) * N + n) * ld + C + c];
          out[(int64_t(b) * N + n) * C + c] = s / (n + 1);
        }
        s = 0;
        for (int n = N - 1; n >= 0; --n) {
          s += g[(int64_t(b) * N + n) * C + c] / (n + 1);
          dq[(int64_t(b) * N + n) * ld + C + c] = s;
        }
      }
    EXPECT_LT(rel_error(this->download(out_d), out), tolerance<T>()) << "N = " << N;
    EXPECT_LT(rel_error(this->download(dq_d), dq), tolerance<T>()) << "N = " << N;
  }
}

TYPED_TEST(Kernels, MaskedSoftmaxForwardAndBackwardMatchCpu) {
  using T = TypeParam;
  const int B = 2, H = 3, N = 33;
  const int64_t rows = int64_t(B) * H * N;
  const std::vector<int32_t> lengths = {33, 20};
  auto len_d = this->upload_raw(lengths);
  for (const bool causal : {false, true}) {
    const auto s = random_vector(rows * N, 1, -4, 4);
    const auto dp = random_vector(rows * N, 2);
    auto s_d = this->template upload<float>(s), dp_d = this->template upload<float>(dp);
    DeviceBuffer<T> p_d(*this->allocator_, rows * N, this->ex_.stream);
    DeviceBuffer<T> ds_d(*this->allocator_, rows * N, this->ex_.stream);
    masked_softmax_forward<T>(this->ex_, s_d.data(), p_d.data(), len_d.data(), causal, B, H, N);
    const auto p_got = this->download(p_d);
    softmax_backward<T>(this->ex_, p_d.data(), dp_d.data(), ds_d.data(), rows, N);
    std::vector<double> p(rows * N, 0.0), ds(rows * N, 0.0);
    for (int64_t row = 0; row < rows; ++row) {
      const int b = int(row / (H * N)), n = int(row % N), len = lengths[b];
      const int keys = n >= len ? 0 : (causal ? std::min(n + 1, len) : len);
      double mx = -1e300, sum = 0, dot = 0;
      for (int j = 0; j < keys; ++j) mx = std::max(mx, double(s[row * N + j]));
      for (int j = 0; j < keys; ++j) sum += std::exp(s[row * N + j] - mx);
      for (int j = 0; j < keys; ++j) p[row * N + j] = std::exp(s[row * N + j] - mx) / sum;
      for (int j = 0; j < N; ++j) dot += double(dp[row * N + j]) * p_got[row * N + j];
      for (int j = 0; j < N; ++j) ds[row * N + j] = p_got[row * N + j] * (dp[row * N + j] - dot);
    }
    EXPECT_LT(rel_error(p_got, p), tolerance<T>()) << "causal " << causal;
    EXPECT_LT(rel_error(this->download(ds_d), ds), tolerance<T>()) << "causal " << causal;
  }
}

TYPED_TEST(Kernels, KsvdTermsAndTheirGradientsMatchCpu) {
  using T = TypeParam;
  const int B = 2, N = 9, H = 3, s = 5;
  const int64_t rows = int64_t(B) * N, n_er = rows * H * 2 * s, n_w = int64_t(H) * 4 * s;
  const std::vector<int32_t> lengths = {9, 6};
  const auto er = rounded<T>(random_vector(n_er, 1));
  const auto der0 = rounded<T>(random_vector(n_er, 2));
  const auto lambda = random_vector(int64_t(H) * s, 3, 0, 1), dl0 = random_vector(H * s, 4);
  const auto we = random_vector(n_w, 5), wr = random_vector(n_w, 6);
  const float gk = 0.37f, gt = -1.25f;
  auto er_d = this->template upload<T>(er), der_d = this->template upload<T>(der0);
  auto l_d = this->template upload<float>(lambda), dl_d = this->template upload<float>(dl0);
  auto we_d = this->template upload<float>(we), wr_d = this->template upload<float>(wr);
  auto dwe_d = this->template upload<float>(std::vector<float>(n_w, 0.f));
  auto dwr_d = this->template upload<float>(std::vector<float>(n_w, 0.f));
  auto len_d = this->upload_raw(lengths);
  auto sums_d = this->upload_raw(std::vector<double>{1.0, 2.0, 3.0});  // accumulates
  ksvd_partial_sums<T>(this->ex_, er_d.data(), l_d.data(), len_d.data(), B, N, H, s, sums_d.data());
  ksvd_trace(this->ex_, we_d.data(), wr_d.data(), n_w, sums_d.data() + 2);
  ksvd_backward<T>(this->ex_, er_d.data(), l_d.data(), len_d.data(), B, N, H, s, gk, der_d.data(),
                   dl_d.data());
  ksvd_trace_backward(this->ex_, we_d.data(), wr_d.data(), gt, dwe_d.data(), dwr_d.data(), n_w);

  std::vector<double> sums = {1.0, 2.0, 3.0}, der(der0.begin(), der0.end());
  std::vector<double> dl(dl0.begin(), dl0.end()), dwe(n_w), dwr(n_w);
  for (int64_t row = 0; row < rows; ++row) {
    if (row % N >= lengths[row / N]) continue;
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < s; ++i) {
        const int64_t at = (row * H + h) * 2 * s + i;
        const double l = lambda[h * s + i], e = er[at], r = er[at + s];
        sums[0] += 0.5 * l * l * e * e;
        sums[1] += 0.5 * l * l * r * r;
        der[at] += gk * l * l * e;
        der[at + s] += gk * l * l * r;
        dl[h * s + i] += gk * (e * e + r * r) * l;
      }
  }
  for (int64_t i = 0; i < n_w; ++i) {
    sums[2] += double(we[i]) * wr[i];
    dwe[i] = gt * wr[i];
    dwr[i] = gt * we[i];
  }
  const auto sums_got = this->download_raw(sums_d);
  for (int k = 0; k < 3; ++k) EXPECT_NEAR(sums_got[k], sums[k], 1e-12 * std::abs(sums[k])) << k;
  EXPECT_LT(rel_error(this->download(der_d), der), tolerance<T>());
  EXPECT_LT(rel_error(this->download(dl_d), dl), 1e-5);
  EXPECT_LT(rel_error(this->download(dwe_d), dwe), 1e-6);
  EXPECT_LT(rel_error(this->download(dwr_d), dwr), 1e-6);
}

TYPED_TEST(Kernels, CrossEntropyForwardAndBackwardMatchCpu) {
  using T = TypeParam;
  const int64_t rows = 13;
  const int V = 300;
  const auto z = rounded<T>(random_vector(rows * V, 1, -5, 5));
  std::vector<int32_t> targets(rows);
  for (int64_t r = 0; r < rows; ++r) targets[r] = int32_t((r * 97 + 5) % V);
  auto z_d = this->template upload<T>(z);
  auto t_d = this->upload_raw(targets);
  auto loss_d = this->upload_raw(std::vector<double>{0.0});
  const float scale = 1.f / float(rows);
  cross_entropy_forward<T>(this->ex_, z_d.data(), t_d.data(), rows, V, loss_d.data());
  const auto p_got = this->download(z_d);
  cross_entropy_backward<T>(this->ex_, z_d.data(), t_d.data(), scale, z_d.data(), rows, V);
  double loss = 0;
  std::vector<double> p(rows * V), g(rows * V);
  for (int64_t r = 0; r < rows; ++r) {
    double mx = -1e300, sum = 0;
    for (int v = 0; v < V; ++v) mx = std::max(mx, double(z[r * V + v]));
    for (int v = 0; v < V; ++v) sum += std::exp(z[r * V + v] - mx);
    loss += std::log(sum) - (z[r * V + targets[r]] - mx);
    for (int v = 0; v < V; ++v) {
      p[r * V + v] = std::exp(z[r * V + v] - mx) / sum;
      g[r * V + v] = scale * (p_got[r * V + v] - (v == targets[r] ? 1 : 0));
    }
  }
  EXPECT_NEAR(this->download_raw(loss_d)[0], loss, 1e-5 * loss);
  EXPECT_LT(rel_error(p_got, p), tolerance<T>());
  EXPECT_LT(rel_error(this->download(z_d), g), tolerance<T>());
}

class KernelsFp32 : public GpuTest {};

TEST_F(KernelsFp32, AdamWIsBitwiseTheSharedElementUpdate) {
  const int64_t n = 5000;
  auto p = random_vector(n, 1), m = random_vector(n, 2, -0.1f, 0.1f);
  auto v = random_vector(n, 3, 0, 0.01f);
  auto p_d = upload<float>(p), m_d = upload<float>(m), v_d = upload<float>(v);
  for (int step = 1; step <= 3; ++step) {
    const auto g = random_vector(n, 10 + step, -2, 2);
    auto g_d = upload<float>(g);
    const auto s = em::adamw_scalars<float>(1e-3 * step, 0.9, 0.999, 1e-8, 0.01, step != 2, step);
    adamw_step(ex_, p_d.data(), g_d.data(), m_d.data(), v_d.data(), n, s);
    for (int64_t i = 0; i < n; ++i) em::adamw_update(p[i], m[i], v[i], g[i], s);
  }
  const auto pg = download(p_d), mg = download(m_d), vg = download(v_d);
  EXPECT_EQ(0, std::memcmp(pg.data(), p.data(), sizeof(float) * n));
  EXPECT_EQ(0, std::memcmp(mg.data(), m.data(), sizeof(float) * n));
  EXPECT_EQ(0, std::memcmp(vg.data(), v.data(), sizeof(float) * n));
}

TEST_F(KernelsFp32, ConvertRoundsToNearestBf16AndBack) {
  const auto x = random_vector(1000, 1, -100, 100);
  auto x_d = upload<float>(x);
  DeviceBuffer<bf16> h_d(*allocator_, 1000, ex_.stream);
  DeviceBuffer<float> back_d(*allocator_, 1000, ex_.stream);
  convert<bf16, float>(ex_, x_d.data(), h_d.data(), 1000);
  convert<float, bf16>(ex_, h_d.data(), back_d.data(), 1000);
  const auto back = download(back_d), want = rounded<bf16>(x);
  EXPECT_EQ(0, std::memcmp(back.data(), want.data(), sizeof(float) * 1000));
}

}  // namespace
}  // namespace primal::cuda::testing
