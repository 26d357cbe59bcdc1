#include "core/fast_math.h"

#include <gtest/gtest.h>

#include <cmath>

namespace primal {

// The float erf used by GELU stays within 5e-7 of the true erf (a few float ulps near +-1).
TEST(FastMath, FloatErfIsWithinAFewUlpsOfErf) {
  double worst = 0;
  for (double x = -7; x <= 7; x += 1e-4) {
    const float f = float(x);
    worst = std::max(worst, std::abs(double(erf_approx(f)) - std::erf(double(f))));
  }
  EXPECT_LT(worst, 5e-7);
  EXPECT_EQ(erf_vec(0.3), std::erf(0.3));  // the double path is std::erf itself
}

}  // namespace primal
