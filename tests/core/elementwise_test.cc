// core/elementwise.h: the AVX-512 and the baseline builds of an element-wise loop give the same
// bits (so a run does not depend on which CPU it lands on), and the float exp approximation
// that GELU's backward and the softmax rows use is within 2 ulps of exp.
#include "core/elementwise.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/element_math.h"

namespace primal {
namespace {

#if defined(__x86_64__) && defined(__GNUC__)
TEST(Elementwise, Avx512AndBaselineLoopsGiveTheSameBits) {
  if (!cpu_has_avx512()) GTEST_SKIP() << "this CPU has no AVX-512: only the baseline loop runs";
  const int64_t n = 1 << 18;
  std::vector<float> x(n), wide(2 * n), base(2 * n);
  for (int64_t i = 0; i < n; ++i) x[i] = float(i % 20011 - 10005) * 9e-4f;  // [-9, 9]
  auto gelu_and_grad = [&](float* out) {
    return [&x, out, n](int64_t i) {
      out[i] = em::gelu(x[i]);
      out[n + i] = em::gelu_grad(x[i]);
    };
  };
  detail::element_range_avx512(0, n, gelu_and_grad(wide.data()));
  detail::element_range_baseline(0, n, gelu_and_grad(base.data()));
  EXPECT_EQ(std::memcmp(wide.data(), base.data(), sizeof(float) * 2 * n), 0);
}
#endif

TEST(Elementwise, ForEachElementVisitsEveryElementOnce) {
  for (int64_t n : {int64_t{0}, int64_t{1}, kElementChunk - 1, kElementChunk + 1,
                    int64_t{5} * kElementChunk + 3, int64_t{1} << 16}) {
    std::vector<int> hits(n, 0);
    const float dummy = 0;
    for_each_element(n, [&hits](int64_t i) { hits[i] += 1; }, {&dummy});
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i], 1) << "n " << n << " element " << i;
  }
}

TEST(ElementMathExp, FloatApproximationIsWithinTwoUlpsOfExp) {
  double worst = 0;
  for (double x = -87; x <= 88; x += 1e-3) {
    const float f = float(x);
    const double want = std::exp(double(f));
    worst = std::max(worst, std::abs(double(em::exp_approx(f)) - want) / want);
  }
  EXPECT_LT(worst, 2 * std::numeric_limits<float>::epsilon());
  EXPECT_EQ(em::exp_vec(0.3), std::exp(0.3));  // double: exp itself
}

}  // namespace
}  // namespace primal
