// The order backward makes gradients final, shared by the host and device buckets: the last
// layer's gradients first, down to layer 0, then the embeddings, final norm and head.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "model/ready_order.h"
#include "model/transformer.h"
#include "tests/model/model_configs.h"

namespace primal {
namespace {

using enum AttentionKind;

TEST(ReadyOrder, LastLayerFirstThenTheRestEachParameterOnce) {
  Transformer<float> model(testing::lm_config({kSoftmax, kPrimal, kSoftmax}, 8));
  ParameterStore<float>& params = model.params();
  const ReadyOrder order = ready_order(params, 3);
  ASSERT_EQ(order.ranges.size(), params.all().size());
  ASSERT_EQ(order.of_layer.size(), 4u);
  const float* base = params.grads().data();
  int position = 0;
  std::vector<int> seen(params.all().size(), 0);
  for (int layer : {2, 1, 0, -1}) {
    for (int k : order.of_layer[layer + 1]) {
      EXPECT_EQ(k, position++) << "positions run layer by layer, last layer first";
      const Parameter<float>& p = params.all()[order.slot_of[k]];
      ++seen[order.slot_of[k]];
      EXPECT_EQ(p.layer, layer) << p.name;
      EXPECT_EQ(p.name.rfind("layers." + std::to_string(layer) + ".", 0) == 0, layer >= 0)
          << p.name;
      EXPECT_EQ(order.ranges[k].offset, p.grad.data() - base) << p.name;
      EXPECT_EQ(order.ranges[k].count, p.grad.numel()) << p.name;
    }
    EXPECT_FALSE(order.of_layer[layer + 1].empty()) << "layer " << layer;
  }
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], 1) << params.all()[i].name;
}

// Under tensor parallelism each layer's attn.concat (replicated, used by every rank's heads) is
// summed over TP once final, and nothing else is.
TEST(ReadyOrder, ListsTheGradientsSummedOverTensorParallelismPerLayer) {
  ShardLayout tp(1, 2);
  Transformer<float> model(testing::lm_config({kSoftmax, kPrimal, kPrimal}, 8), &tp);
  ParameterStore<float>& params = model.params();
  const ReadyOrder order = ready_order(params, 3);
  ASSERT_EQ(order.tp_summed_of_layer.size(), 4u);
  const float* base = params.grads().data();
  for (int layer : {-1, 0, 1, 2}) {
    std::vector<std::string> names;
    for (const GradRange& r : order.tp_summed_of_layer[layer + 1]) {
      for (const auto& p : params.all()) {
        if (p.grad.data() - base == r.offset && p.grad.numel() == r.count) names.push_back(p.name);
      }
    }
    const std::string prefix = "layers." + std::to_string(layer) + ".attn.concat.";
    if (layer >= 1) {
      EXPECT_EQ(names, (std::vector<std::string>{prefix + "weight", prefix + "bias"}));
    } else {
      EXPECT_TRUE(names.empty()) << "layer " << layer;
    }
  }
}

TEST(ReadyOrder, ALayerOutsideTheModelIsAnError) {
  const GradSlot slots[] = {{{0, 4}, 0}, {{4, 4}, 2}};
  EXPECT_THROW(ready_order(slots, 2), Error);
}

}  // namespace
}  // namespace primal
