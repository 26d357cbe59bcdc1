// After the first step, AdamW::step and clip_grad_norm allocate nothing (operator new is
// replaced here to count; its own executable).
#include <gtest/gtest.h>

#include "tests/common/allocation_counter.h"

#include "trainer/adamw.h"
#include "trainer/grad_clip.h"

namespace primal {
namespace {

TEST(TrainerNoAllocation, AdamWStepAndGradClipAllocateNothing) {
  ParameterStore<float> store;
  store.add("w", {300, 100}, Split::kReplicated, Init::kNormal);  // the parallel paths
  store.add("b", {100}, Split::kReplicated, Init::kZeros);
  store.finalize(1);
  AdamW<float> opt(store, {});
  auto step = [&](int t) {
    for (int64_t i = 0; i < store.numel(); ++i) store.grads()[i] = float((i * 7 + t) % 13) - 6;
    clip_grad_norm(store, 1.0);
    opt.step(1e-3);
  };
  step(1);
  testing::AllocationCounter counter;
  for (int t = 2; t <= 10; ++t) step(t);
  EXPECT_EQ(counter.stop(), 0);
  EXPECT_EQ(opt.steps(), 10);
}

}  // namespace
}  // namespace primal
