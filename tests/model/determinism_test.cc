// Same config, seed and batch: bitwise-identical loss and gradients (float, the training
// precision), from a fresh model and from a repeated step on the same model.
#include <gtest/gtest.h>

#include <cstring>

#include "model/transformer.h"
#include "tests/model/model_configs.h"

namespace primal {
namespace {

using enum AttentionKind;

struct Snapshot {
  double loss, ce, ksvd;
  std::vector<float> grads;
};

Snapshot step(Transformer<float>& model, Arena& arena, const Batch& batch) {
  arena.reset();
  LossTerms t = model.forward_backward(arena, batch, 5);
  Tensor<float> g = model.params().grads();
  return {t.loss, t.ce, t.ksvd, std::vector<float>(g.data(), g.data() + g.numel())};
}

void expect_bitwise_equal(const Snapshot& a, const Snapshot& b) {
  EXPECT_EQ(std::memcmp(&a.loss, &b.loss, sizeof(double)), 0);
  EXPECT_EQ(std::memcmp(&a.ce, &b.ce, sizeof(double)), 0);
  EXPECT_EQ(std::memcmp(&a.ksvd, &b.ksvd, sizeof(double)), 0);
  ASSERT_EQ(a.grads.size(), b.grads.size());
  EXPECT_EQ(std::memcmp(a.grads.data(), b.grads.data(), a.grads.size() * sizeof(float)), 0);
}

TEST(Determinism, SameSeedGivesBitwiseIdenticalLossAndGradients) {
  for (ModelConfig config : {testing::lm_config({kSoftmax, kPrimal}, 64),
                             testing::classifier_config({kPrimal, kSoftmax}, InputKind::kTokens,
                                                        Pooling::kMean, 64, 4, 4)}) {
    config.width = 32;
    config.heads = 4;
    config.mlp_width = 64;
    config.dropout = 0.1;
    std::vector<int32_t> lengths;
    if (config.head == HeadKind::kClassifier) lengths = {64, 40, 3, 17};
    Batch batch = testing::random_batch(config, 4, 64, 9, lengths);
    Transformer<float> first(config), second(config);
    Arena arena_first, arena_second;
    Snapshot a = step(first, arena_first, batch);
    Snapshot b = step(second, arena_second, batch);
    expect_bitwise_equal(a, b);
    expect_bitwise_equal(a, step(first, arena_first, batch));  // a repeated step too
    EXPECT_GT(a.ksvd, 0.0);
  }
}

TEST(Determinism, DifferentSeedsGiveDifferentInitialWeights) {
  ModelConfig config = testing::lm_config({kPrimal}, 16);
  Transformer<float> a(config);
  config.seed += 1;
  Transformer<float> b(config);
  Tensor<float> va = a.params().values(), vb = b.params().values();
  EXPECT_NE(std::memcmp(va.data(), vb.data(), va.numel() * sizeof(float)), 0);
}

}  // namespace
}  // namespace primal
