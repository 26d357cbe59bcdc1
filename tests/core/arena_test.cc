#include "core/arena.h"

#include <gtest/gtest.h>

namespace primal {

TEST(Arena, RepeatedStepsReuseTheFirstStepsBlocks) {
  // Blocks are whole 2 MiB pages: 20 requests of up to 4 MB (never touched) need several.
  Arena arena(1024);
  auto step = [&] {
    arena.reset();
    for (int i = 1; i <= 20; ++i) arena.alloc<float>({i * 50000});
  };
  step();
  const size_t grown = arena.growth_count();
  EXPECT_GT(grown, 1u);
  for (int i = 0; i < 5; ++i) step();
  EXPECT_EQ(arena.growth_count(), grown);
}

TEST(Arena, AllocationsAreAlignedAndDisjoint) {
  Arena arena(256);
  Tensor<float> a = arena.alloc<float>({3});
  Tensor<double> b = arena.zeros<double>({1000});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % 64, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % 64, 0u);
  for (int64_t i = 0; i < b.numel(); ++i) EXPECT_EQ(b[i], 0.0);
  EXPECT_GE(arena.peak_bytes(), 1000 * sizeof(double));
}

}  // namespace primal
