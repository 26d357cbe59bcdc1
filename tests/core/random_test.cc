#include "core/random.h"

#include <gtest/gtest.h>

#include <cmath>

namespace primal {

// Known-answer test of Philox4x32-10 from the Random123 distribution (kat_vectors).
TEST(Philox, MatchesRandom123KnownAnswers) {
  PhiloxBlock zero = philox4x32({0, 0}, {0, 0, 0, 0});
  EXPECT_EQ(zero, (PhiloxBlock{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  PhiloxBlock ones =
      philox4x32({0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu});
  EXPECT_EQ(ones, (PhiloxBlock{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
}

TEST(CounterRng, NormalHasUnitMomentsAndIsAPureFunctionOfIndex) {
  CounterRng rng(42, fnv1a("layers.0.attn.qk.weight"));
  const int n = 200000;
  double sum = 0, sq = 0;
  for (int i = 0; i < n; ++i) {
    double x = rng.normal(i);
    sum += x;
    sq += x * x;
  }
  EXPECT_NEAR(sum / n, 0.0, 0.01);
  EXPECT_NEAR(sq / n, 1.0, 0.01);
  EXPECT_EQ(rng.normal(12345), CounterRng(42, fnv1a("layers.0.attn.qk.weight")).normal(12345));
  EXPECT_NE(rng.normal(7), CounterRng(43, fnv1a("layers.0.attn.qk.weight")).normal(7));
}

}  // namespace primal
