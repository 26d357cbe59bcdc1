// core/element_math.h, the per-element formulas the CUDA kernels run, against the CPU layers
// that compute the same things (label unit: no GPU involved). AdamW agrees bit for bit (this
// file is compiled with -ffp-contract=off, like trainer/adamw.cc); GELU and LayerNorm within
// a few ulps (the layers leave contraction to the compiler); phi against its definition.
#include "core/element_math.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/arena.h"
#include "model/layernorm.h"
#include "model/mlp.h"
#include "model/parameters.h"
#include "trainer/adamw.h"

namespace primal {
namespace {

template <typename T>
std::vector<T> random_values(int64_t n, uint64_t seed, double lo, double hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(n);
  for (T& x : v) x = T(dist(rng));
  return v;
}

// |a - b| within `ulps` units of rounding of `scale`: the magnitude of the terms that are
// rounded, which cancellation can make much larger than the result (1 + erf(x) near x = -4;
// (x - mean) rstd w + b near 0).
template <typename T>
void expect_close(T a, T b, double scale, double ulps, const char* what, int64_t i) {
  const double eps = std::numeric_limits<T>::epsilon();
  EXPECT_LE(std::abs(double(a) - double(b)), ulps * eps * scale) << what << " at " << i;
}

template <typename T>
class ElementMath : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(ElementMath, Scalars);

// The float erf used by GELU stays within 5e-7 of the true erf (a few float ulps near +-1);
// the double path is erf itself.
TEST(ElementMathErf, FloatApproximationIsWithinAFewUlpsOfErf) {
  double worst = 0;
  for (double x = -7; x <= 7; x += 1e-4) {
    const float f = float(x);
    worst = std::max(worst, std::abs(double(em::erf_approx(f)) - std::erf(double(f))));
  }
  EXPECT_LT(worst, 5e-7);
  EXPECT_EQ(em::erf_t(0.3), std::erf(0.3));
}

TYPED_TEST(ElementMath, GeluMatchesTheMlpLayer) {
  using T = TypeParam;
  const int64_t n = 4096;
  Arena arena;
  auto xs = random_values<T>(n, 1, -7, 7);
  xs[0] = 0, xs[1] = T(-4), xs[2] = T(4);
  auto dys = random_values<T>(n, 2, -1, 1);
  Tensor<T> x(xs.data(), {n});
  Tensor<T> y = gelu_forward(arena, x);
  // The backward's pass: GELU again and its derivative, which the MLP multiplies dy by.
  std::vector<T> ys(n), grads(n), dxs(n);
  gelu_with_grad(x, Tensor<T>(ys.data(), {n}), Tensor<T>(grads.data(), {n}));
  for (int64_t i = 0; i < n; ++i) dxs[i] = dys[i] * grads[i];
  Tensor<T> dx(dxs.data(), {n});
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(ys[i], y[i]) << "gelu recomputed at " << i;
    // The terms: x and 1 + erf(x / sqrt2) (within [0, 2]); dy and cdf + x pdf.
    const double scale = std::max(std::abs(double(xs[i])), 1.0);
    expect_close<T>(em::gelu(xs[i]), y[i], scale, 4, "gelu", i);
    expect_close<T>(dys[i] * em::gelu_grad(xs[i]), dx[i], std::abs(double(dys[i])) * scale, 4,
                    "gelu'", i);
  }
}

TYPED_TEST(ElementMath, LayerNormMatchesTheLayer) {
  using T = TypeParam;
  const int64_t rows = 7;
  const int C = 33;
  const double eps = 1e-5;
  ParameterStore<T> store;
  LayerNorm<T> ln(store, "ln", C, eps);
  store.finalize(1);
  auto w = random_values<T>(C, 3, 0.5, 1.5), b = random_values<T>(C, 4, -1, 1);
  store.find("ln.weight")->value.copy_from(Tensor<T>(w.data(), {C}));
  store.find("ln.bias")->value.copy_from(Tensor<T>(b.data(), {C}));
  auto xs = random_values<T>(rows * C, 5, -2, 3), dys = random_values<T>(rows * C, 6, -1, 1);
  Arena arena;
  Tensor<T> y = ln.forward(arena, Tensor<T>(xs.data(), {rows, C}));
  std::vector<T> dxs(rows * C, T(0));
  ln.backward(arena, Tensor<T>(dys.data(), {rows, C}), Tensor<T>(dxs.data(), {rows, C}));
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = xs.data() + r * C;
    const T* g = dys.data() + r * C;
    T mean = 0, var = 0;
    for (int j = 0; j < C; ++j) mean += x[j];
    mean /= T(C);
    for (int j = 0; j < C; ++j) var += (x[j] - mean) * (x[j] - mean);
    var /= T(C);
    const T rstd = em::layernorm_rstd(var, T(eps));
    T s1 = 0, s2 = 0;
    for (int j = 0; j < C; ++j) {
      s1 += g[j] * w[j];
      s2 += g[j] * w[j] * (x[j] - mean) * rstd;
    }
    for (int j = 0; j < C; ++j) {
      const T xhat = (x[j] - mean) * rstd;
      const double y_terms = std::abs(double(xhat * w[j])) + std::abs(double(b[j]));
      expect_close<T>(em::layernorm_normalise(x[j], mean, rstd, w[j], b[j]), y[r * C + j], y_terms,
                      8, "y", r * C + j);
      const double dx_terms =
          double(rstd) * (std::abs(double(g[j] * w[j])) + std::abs(double(s1 / T(C))) +
                          std::abs(double(xhat * s2 / T(C))));
      expect_close<T>(em::layernorm_dx(g[j] * w[j], xhat, s1 / T(C), s2 / T(C), rstd),
                      dxs[r * C + j], dx_terms, 64, "dx", r * C + j);
    }
  }
}

TYPED_TEST(ElementMath, PhiIsTheUnitVectorAndItsJacobian) {
  using T = TypeParam;
  const int d = 16;
  auto v = random_values<double>(d, 7, -1, 1);
  auto du = random_values<double>(d, 8, -1, 1);
  auto phi = [&](const std::vector<double>& x, int j) {
    double sq = 0;
    for (double e : x) sq += e * e;
    return double(T(x[j]) * em::phi_scale(T(std::sqrt(sq))));
  };
  double sq = 0;
  for (double e : v) sq += e * e;
  const T norm = T(std::sqrt(sq));
  std::vector<T> u(d);
  T unit = 0, dot = 0;
  for (int j = 0; j < d; ++j) u[j] = T(phi(v, j)), unit += u[j] * u[j], dot += u[j] * T(du[j]);
  EXPECT_NEAR(double(unit), 1.0, 8 * std::numeric_limits<T>::epsilon());
  // The Jacobian-vector product against central differences of phi, in double.
  for (int i = 0; i < d; ++i) {
    const double h = 1e-6;
    double fd = 0;
    for (int j = 0; j < d; ++j) {
      auto vp = v, vm = v;
      vp[i] += h, vm[i] -= h;
      double sp = 0, sm = 0;
      for (double e : vp) sp += e * e;
      for (double e : vm) sm += e * e;
      fd += du[j] * (vp[j] / std::sqrt(sp) - vm[j] / std::sqrt(sm)) / (2 * h);
    }
    const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-8;
    EXPECT_NEAR(double(em::phi_grad(T(du[i]), u[i], dot, norm)), fd, tol) << i;
  }
  // Below eps phi is v / eps: linear, its gradient du / eps.
  EXPECT_EQ(em::phi_scale(T(0)), T(1) / T(em::kPhiEps));
  EXPECT_EQ(em::phi_grad(T(2), T(0), T(0), T(0)), T(2) / T(em::kPhiEps));
}

TYPED_TEST(ElementMath, PrefixMeanStepIsTheRunningMean) {
  using T = TypeParam;
  const auto q = random_values<T>(50, 9, -1, 1);
  T mean = 0;
  double sum = 0;
  for (int n = 0; n < 50; ++n) {
    mean = em::prefix_mean_step(mean, q[n], n);
    sum += double(q[n]);
    EXPECT_NEAR(double(mean), sum / (n + 1), 64 * std::numeric_limits<T>::epsilon()) << n;
  }
}

TYPED_TEST(ElementMath, AdamWUpdateIsTheOptimizerBitForBit) {
  using T = TypeParam;
  ParameterStore<T> store;
  store.add("w", {13, 7}, Split::kReplicated, Init::kNormal);
  store.add("b", {13}, Split::kReplicated, Init::kZeros);
  store.finalize(3);
  const int64_t n = store.numel();
  AdamWOptions options;
  options.weight_decay = 0.1;
  AdamW<T> adamw(store, options);
  std::vector<T> p(store.values().data(), store.values().data() + n), m(n, T(0)), v(n, T(0));
  const int64_t decaying = 13 * 7;  // w decays, b does not (Parameter::weight_decay)
  ASSERT_TRUE(adamw.weight_decay("w"));
  ASSERT_FALSE(adamw.weight_decay("b"));
  for (int step = 1; step <= 5; ++step) {
    const auto g = random_values<T>(n, 100 + step, -3, 3);
    std::copy(g.begin(), g.end(), store.grads().data());
    const double lr = 1e-3 * step;
    adamw.step(lr);
    for (const bool decay : {true, false}) {
      const auto s = em::adamw_scalars<T>(lr, options.beta1, options.beta2, options.eps,
                                          options.weight_decay, decay, step);
      for (int64_t i = decay ? 0 : decaying; i < (decay ? decaying : n); ++i)
        em::adamw_update(p[i], m[i], v[i], g[i], s);
    }
  }
  EXPECT_EQ(0, std::memcmp(p.data(), store.values().data(), sizeof(T) * n));
  EXPECT_EQ(0, std::memcmp(m.data(), adamw.exp_avg().data(), sizeof(T) * n));
  EXPECT_EQ(0, std::memcmp(v.data(), adamw.exp_avg_sq().data(), sizeof(T) * n));
}

}  // namespace
}  // namespace primal
