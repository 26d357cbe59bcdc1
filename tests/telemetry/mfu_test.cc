// The MFU numerator: model_gemm_flops against what a real forward and backward issue to GEMM
// (core/blas.h's gemm_flops counter), for each attention kind and head.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/blas.h"
#include "model/transformer.h"
#include "trainer/telemetry.h"

namespace primal {
namespace {

using enum AttentionKind;

struct Case {
  ModelConfig config;
  Batch batch;
};

ModelConfig lm(std::vector<AttentionKind> layers) {
  ModelConfig c;
  c.head = HeadKind::kLm;
  c.vocab = 37;
  c.width = 24;
  c.heads = 3;
  c.mlp_width = 40;
  c.max_len = 16;
  c.low_rank = 5;
  c.rank_multi = 2;
  c.layers = std::move(layers);
  c.seed = 7;
  return c;
}

ModelConfig classifier(std::vector<AttentionKind> layers, InputKind input, Pooling pooling) {
  ModelConfig c = lm(std::move(layers));
  c.head = HeadKind::kClassifier;
  c.input = input;
  c.patch_dim = 12;
  c.pooling = pooling;
  c.num_classes = 6;
  c.head_width = 20;
  return c;
}

Batch random_batch(const ModelConfig& c, int B, int N, bool padded) {
  std::mt19937 gen(3);
  Batch b;
  b.B = B;
  b.N = N;
  std::uniform_int_distribution<int> token(0, c.vocab - 1);
  std::uniform_real_distribution<float> pixel(0, 1);
  if (c.input == InputKind::kTokens) {
    for (int i = 0; i < B * N; ++i) b.tokens.push_back(token(gen));
  } else {
    for (int i = 0; i < B * N * c.patch_dim; ++i) b.patches.push_back(pixel(gen));
  }
  if (c.head == HeadKind::kLm) {
    for (int i = 0; i < B * N; ++i) b.targets.push_back(token(gen));
  } else {
    for (int i = 0; i < B; ++i) b.targets.push_back(i % c.num_classes);
    if (padded) {
      for (int i = 0; i < B; ++i) b.lengths.push_back(N - (i % 3) * 2);
    }
  }
  return b;
}

// GEMM FLOPs counted during fn().
template <typename Fn>
uint64_t counted(Fn fn) {
  const uint64_t before = gemm_flops.load();
  fn();
  return gemm_flops.load() - before;
}

void expect_formula_matches_counter(const ModelConfig& config, int B, int N, bool padded) {
  Transformer<float> model(config);
  const Batch batch = random_batch(config, B, N, padded);
  Arena arena;
  const ModelFlops want = model_gemm_flops(config, B, N);
  // Forward alone, then forward + backward, as the trainer runs them.
  const uint64_t forward = counted([&] { model.forward(arena, batch, 0); });
  arena.reset();
  const uint64_t both = counted([&] { model.forward_backward(arena, batch, 1); });
  EXPECT_EQ(int64_t(forward), want.forward);
  EXPECT_EQ(int64_t(both), want.total());
  EXPECT_EQ(int64_t(both - forward), want.backward);
}

TEST(ModelFlops, LmSoftmaxAndCausalPrimalMatchTheGemmCounterExactly) {
  expect_formula_matches_counter(lm({kSoftmax}), 3, 11, false);
  expect_formula_matches_counter(lm({kPrimal}), 3, 11, false);
  expect_formula_matches_counter(lm({kPrimal, kSoftmax, kPrimal}), 2, 16, false);
}

TEST(ModelFlops, ClassifierEncoderPrimalWithPaddingMatchesTheGemmCounterExactly) {
  // Encoder form: L = min(max_len, s m) = 10 sampled tokens; padding does not change the GEMMs.
  expect_formula_matches_counter(classifier({kPrimal}, InputKind::kTokens, Pooling::kMean), 4, 12,
                                 true);
  expect_formula_matches_counter(
      classifier({kSoftmax, kPrimal}, InputKind::kTokens, Pooling::kMean), 4, 12, true);
}

TEST(ModelFlops, PatchInputWithClsTokenMatchesTheGemmCounterExactly) {
  // The patch embedding has no input gradient: its backward is one GEMM, not two.
  expect_formula_matches_counter(
      classifier({kPrimal, kSoftmax}, InputKind::kPatches, Pooling::kCls), 3, 9, false);
}

// Twice the forward, and a PRIMAL layer's concat product once more (recomputed for proj).
TEST(ModelFlops, BackwardIsTwiceForwardPlusConcatWithoutPatchEmbedding) {
  const ModelConfig lm2 = lm({kPrimal, kSoftmax});
  const ModelFlops f = model_gemm_flops(lm2, 8, 256);
  EXPECT_EQ(f.backward, 2 * f.forward + 4 * int64_t(8 * 256) * lm2.low_rank * lm2.width);
  // The LM of configs/lm_kjv_primalformer.pbtxt, term by term (docs/telemetry.md):
  // C=256, F=512, s=20, V=256, B=8, N=256, four causal PRIMAL layers.
  ModelConfig c = lm({kPrimal, kPrimal, kPrimal, kPrimal});
  c.width = 256, c.heads = 4, c.mlp_width = 512, c.low_rank = 20, c.vocab = 256;
  const int64_t R = 8 * 256, C = 256;
  const int64_t layer = 6 * R * C * C + 8 * R * 20 * C + 4 * R * C * 512;
  EXPECT_EQ(model_gemm_flops(c, 8, 256).forward, 4 * layer + 2 * R * 256 * C);
}

TEST(ModelFlops, ScalesLinearlyInTheBatch) {
  const ModelConfig c = classifier({kPrimal, kSoftmax}, InputKind::kPatches, Pooling::kCls);
  EXPECT_EQ(model_gemm_flops(c, 6, 9).total(), 3 * model_gemm_flops(c, 2, 9).total());
}

TEST(SgemmPeak, MeasuresAPositiveFiniteRate) {
  const double gflops = measure_sgemm_peak_gflops({64, 128});
  EXPECT_GT(gflops, 0.01);
  EXPECT_TRUE(std::isfinite(gflops));
}

}  // namespace
}  // namespace primal
