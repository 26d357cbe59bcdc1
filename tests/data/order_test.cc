#include "data/order.h"

#include <gtest/gtest.h>

#include <vector>

namespace primal {
namespace {

// Every index of [0, n) is hit exactly once, for sizes around powers of two (where the
// cycle-walking domain is tightest and loosest) and for a tiny domain.
TEST(FeistelPermutation, IsABijectionForEverySize) {
  for (uint64_t n : {1ull, 2ull, 3ull, 5ull, 16ull, 17ull, 1000ull, 4096ull, 4097ull, 65535ull}) {
    const FeistelPermutation p(n, 99, data_stream("test", n));
    std::vector<int> hits(n, 0);
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t j = p(i);
      ASSERT_LT(j, n);
      ++hits[j];
    }
    for (uint64_t j = 0; j < n; ++j) ASSERT_EQ(hits[j], 1) << "n " << n << " value " << j;
  }
}

TEST(FeistelPermutation, ShufflesAndDependsOnTheKey) {
  const uint64_t n = 10000;
  const FeistelPermutation p(n, 1, data_stream("test", 0));
  const FeistelPermutation q(n, 2, data_stream("test", 0));
  const FeistelPermutation r(n, 1, data_stream("test", 1));
  int fixed = 0, same_q = 0, same_r = 0, ascending = 0;
  for (uint64_t i = 0; i < n; ++i) {
    fixed += p(i) == i;
    same_q += p(i) == q(i);
    same_r += p(i) == r(i);
    if (i > 0) ascending += p(i) > p(i - 1);
  }
  // A random permutation has about 1 fixed point and half its neighbours ascending.
  EXPECT_LT(fixed, 8);
  EXPECT_LT(same_q, 8);
  EXPECT_LT(same_r, 8);
  EXPECT_NEAR(ascending / double(n), 0.5, 0.03);
}

TEST(EpochSample, SequentialWrapsAndRandomPermutesEachEpoch) {
  for (uint64_t k = 0; k < 50; ++k) {
    EXPECT_EQ(epoch_sample(DataOrder::kSequential, 5, "x", k, 7), k % 7);
  }
  std::vector<int> hits(7, 0);
  for (uint64_t k = 14; k < 21; ++k) ++hits[epoch_sample(DataOrder::kRandom, 5, "x", k, 7)];
  EXPECT_EQ(hits, std::vector<int>(7, 1));
}

}  // namespace
}  // namespace primal
