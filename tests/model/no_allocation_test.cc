// After the first training step, a step allocates nothing: the arena does not grow, and no
// C++ allocation (operator new, which std containers use) happens during steps 2-10.
#include <gtest/gtest.h>

#include "tests/common/allocation_counter.h"

#include "model/transformer.h"
#include "tests/model/model_configs.h"

namespace primal {
namespace {

using enum AttentionKind;

TEST(NoAllocation, StepsTwoToTenAllocateNothing) {
  for (ModelConfig config : {testing::lm_config({kSoftmax, kPrimal}, 32),
                             testing::classifier_config({kPrimal, kSoftmax}, InputKind::kPatches,
                                                        Pooling::kCls, 33, 4, 4)}) {
    config.dropout = 0.1;
    std::vector<int32_t> lengths;
    if (config.head == HeadKind::kClassifier) lengths = {32, 5, 20};
    Batch batch = testing::random_batch(config, 3, 32, 4, lengths);
    Transformer<float> model(config);
    Arena arena;
    arena.reset();
    model.forward_backward(arena, batch, 1);
    const size_t growth = arena.growth_count();
    testing::AllocationCounter counter;
    for (int step = 2; step <= 10; ++step) {
      arena.reset();
      model.forward_backward(arena, batch, step);
    }
    EXPECT_EQ(counter.stop(), 0);
    EXPECT_EQ(arena.growth_count(), growth);
  }
}

}  // namespace
}  // namespace primal
