// After the first training step, a step allocates nothing: the arena does not grow, and no
// C++ allocation (operator new, which std containers use) happens during steps 2-10.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "model/transformer.h"
#include "tests/model/model_configs.h"

namespace {
std::atomic<bool> counting{false};
std::atomic<long> allocations{0};
}  // namespace

void* operator new(std::size_t n) {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace primal {
namespace {

using enum AttentionKind;

TEST(NoAllocation, StepsTwoToTenAllocateNothing) {
  for (ModelConfig config :
       {testing::lm_config({kSoftmax, kPrimal}, 32),
        testing::classifier_config({kPrimal, kSoftmax}, InputKind::kPatches, Pooling::kCls, 33, 4,
                                   4)}) {
    config.dropout = 0.1;
    std::vector<int32_t> lengths;
    if (config.head == HeadKind::kClassifier) lengths = {32, 5, 20};
    Batch batch = testing::random_batch(config, 3, 32, 4, lengths);
    Transformer<float> model(config);
    Arena arena;
    arena.reset();
    model.forward_backward(arena, batch, 1);
    const size_t growth = arena.growth_count();
    allocations = 0;
    counting = true;
    for (int step = 2; step <= 10; ++step) {
      arena.reset();
      model.forward_backward(arena, batch, step);
    }
    counting = false;
    EXPECT_EQ(arena.growth_count(), growth);
    EXPECT_EQ(allocations.load(), 0);
  }
}

}  // namespace
}  // namespace primal
