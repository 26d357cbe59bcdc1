// Same config, seed and batch: bitwise-identical loss and gradients (float, the training
// precision), from a fresh model and from a repeated step on the same model.
#include <gtest/gtest.h>
#include <omp.h>

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

// The layers' blocks (model/blocks.h) go to slots whose sums are added in slot order, so a
// step gives the same bits on one thread and on two: here with several blocks per layer (2048
// rows: two MLP blocks, two blocks of 4 samples of 256 tokens, or 8 of one 1000-token sample).
TEST(Determinism, OneAndTwoThreadsGiveBitwiseIdenticalGradients) {
  for (ModelConfig config : {testing::lm_config({kPrimal, kPrimal}, 256),
                             testing::classifier_config({kPrimal, kPrimal}, InputKind::kTokens,
                                                        Pooling::kMean, 1000, 4, 4)}) {
    config.width = 32;
    config.heads = 4;
    config.mlp_width = 64;
    config.dropout = 0.1;
    const bool lm = config.head == HeadKind::kLm;
    std::vector<int32_t> lengths;
    if (!lm) lengths = {1000, 640, 3, 999, 17, 1000, 512, 200};
    Batch batch = testing::random_batch(config, 8, lm ? 256 : 1000, 9, lengths);
    const int threads = omp_get_max_threads();
    Snapshot per_threads[2];
    for (int t : {1, 2}) {
      omp_set_num_threads(t);
      Transformer<float> model(config);
      Arena arena;
      per_threads[t - 1] = step(model, arena, batch);
    }
    omp_set_num_threads(threads);
    expect_bitwise_equal(per_threads[0], per_threads[1]);
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
