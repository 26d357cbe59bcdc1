// Every layer's backward against central finite differences in double precision
// (max relative error below 1e-6). Loss of a layer: sum(out * R) for a fixed random R,
// plus, for Primal-Attention, fixed multiples of its KSVD partial sums.
#include <gtest/gtest.h>

#include <optional>

#include "model/classifier_head.h"
#include "model/embedding.h"
#include "model/ksvd_loss.h"
#include "model/layernorm.h"
#include "model/mlp.h"
#include "model/primal_attention.h"
#include "model/softmax_attention.h"
#include "tests/model/gradcheck.h"

namespace primal {
namespace {

using testing::Checked;

using testing::check_layer;
using testing::dot;

constexpr double kTolerance = 1e-6;

TEST(LayerNorm, GradMatchesFiniteDifferences) {
  ParameterStore<double> params;
  LayerNorm<double> ln(params, "ln", 7, 1e-5);
  params.finalize(1);
  check_layer(
      params, {5, 7}, {5, 7}, [&](Arena& a, const Tensor<double>& x) { return ln.forward(a, x); },
      [&](Arena& a, const Tensor<double>& dy, const Tensor<double>& dx) { ln.backward(a, dy, dx); },
      10);
}

TEST(Linear, GradMatchesFiniteDifferences) {
  ParameterStore<double> params;
  Linear<double> fc(params, "fc", 6, 5);
  params.finalize(1);
  check_layer(
      params, {3, 4, 6}, {12, 5},
      [&](Arena& a, const Tensor<double>& x) { return fc.forward(a, x); },
      [&](Arena& a, const Tensor<double>& dy, const Tensor<double>& dx) { fc.backward(a, dy, dx); },
      20);
}

TEST(Mlp, GeluMlpGradMatchesFiniteDifferences) {
  ParameterStore<double> params;
  Mlp<double> mlp(params, "mlp", 6, 11);
  params.finalize(1);
  check_layer(
      params, {9, 6}, {9, 6}, [&](Arena& a, const Tensor<double>& x) { return mlp.forward(a, x); },
      [&](Arena& a, const Tensor<double>& dy, const Tensor<double>& dx) {
        mlp.backward(a, dy, dx);
      },
      30);
}

// With its LayerNorm (recomputed in backward) and blocks of 4 rows: the 9 rows cross two
// block edges, the last block partial.
TEST(Mlp, NormedMlpInBlocksGradMatchesFiniteDifferences) {
  ParameterStore<double> params;
  LayerNorm<double> ln(params, "ln", 6, 1e-5);
  Mlp<double> mlp(params, "mlp", 6, 11, nullptr, /*tile_rows=*/4);
  params.finalize(1);
  check_layer(
      params, {9, 6}, {9, 6},
      [&](Arena& a, const Tensor<double>& x) { return mlp.forward(a, x, &ln); },
      [&](Arena& a, const Tensor<double>& dy, const Tensor<double>& dx) {
        mlp.backward(a, dy, dx);
      },
      31);
}

struct AttentionCase {
  const char* name;
  AttentionKind kind;
  bool causal;
  int B, N, C, H, s, L;
  std::vector<int32_t> lengths;  // empty: no padding
  bool normed = false;           // with a LayerNorm in front (the layer's LN1)
  int64_t block_rows = kAttentionBlockRows;
};

void PrintTo(const AttentionCase& c, std::ostream* os) {
  *os << c.name;
}

class AttentionGrad : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(AttentionGrad, MatchesFiniteDifferences) {
  const AttentionCase& c = GetParam();
  ParameterStore<double> params;
  std::unique_ptr<Attention<double>> attn;
  if (c.kind == AttentionKind::kSoftmax) {
    attn = std::make_unique<SoftmaxAttention<double>>(params, "attn", c.C, c.H);
  } else {
    attn = std::make_unique<PrimalAttention<double>>(params, "attn", c.C, c.H, c.s, c.L, c.causal,
                                                     nullptr, c.block_rows);
  }
  std::optional<LayerNorm<double>> ln;
  if (c.normed) ln.emplace(params, "ln", c.C, 1e-5);
  params.finalize(3);
  Sequence seq{c.B, c.N, c.lengths.empty() ? nullptr : c.lengths.data(), c.causal};
  // The KSVD partial sums enter the loss with these weights; backward gets them as KsvdGrad.
  const KsvdGrad kg{0.37, -0.61};
  KsvdPartial partial;
  check_layer(
      params, {c.B, c.N, c.C}, {int64_t(c.B) * c.N, c.C},
      [&](Arena& a, const Tensor<double>& x) {
        return attn->forward(a, x, seq, partial, ln ? &*ln : nullptr);
      },
      [&](Arena& a, const Tensor<double>& dy, const Tensor<double>& dx) {
        attn->backward(a, dy, dx, kg);
      },
      40, [&] { return kg.de * (partial.e + partial.r) + kg.dt * partial.t; });
}

// Shapes: N = 1, N < L, N > L, N not divisible by anything, padding of several lengths.
INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionGrad,
    ::testing::Values(
        AttentionCase{"SoftmaxCausal", AttentionKind::kSoftmax, true, 2, 7, 8, 2, 0, 0, {}},
        AttentionCase{"SoftmaxPadded", AttentionKind::kSoftmax, false, 3, 6, 8, 2, 0, 0, {6, 3, 1}},
        AttentionCase{"SoftmaxN1", AttentionKind::kSoftmax, true, 2, 1, 6, 3, 0, 0, {}},
        // Three causal query blocks, the last partial.
        AttentionCase{"SoftmaxCausalBlocks",
                      AttentionKind::kSoftmax,
                      true,
                      2,
                      2 * kQueryBlock + 5,
                      4,
                      2,
                      0,
                      0,
                      {}},
        AttentionCase{"PrimalCausal", AttentionKind::kPrimal, true, 2, 7, 8, 2, 3, 0, {}},
        AttentionCase{"PrimalCausalN1", AttentionKind::kPrimal, true, 3, 1, 6, 3, 2, 0, {}},
        AttentionCase{"PrimalEncoderNBelowL", AttentionKind::kPrimal, false, 2, 5, 8, 2, 3, 8, {}},
        AttentionCase{"PrimalEncoderNAboveL", AttentionKind::kPrimal, false, 2, 13, 8, 2, 3, 6, {}},
        AttentionCase{"PrimalEncoderNEqualsL", AttentionKind::kPrimal, false, 2, 6, 8, 2, 2, 6, {}},
        AttentionCase{"PrimalEncoderN1", AttentionKind::kPrimal, false, 2, 1, 6, 3, 2, 4, {}},
        AttentionCase{"PrimalEncoderL1", AttentionKind::kPrimal, false, 2, 5, 6, 2, 2, 1, {}},
        AttentionCase{
            "PrimalEncoderPadded", AttentionKind::kPrimal, false, 3, 11, 8, 2, 3, 4, {11, 6, 1}},
        // With LN1 inside, recomputed in backward; PRIMAL one sample per block.
        AttentionCase{"SoftmaxPaddedNormed",
                      AttentionKind::kSoftmax,
                      false,
                      3,
                      6,
                      8,
                      2,
                      0,
                      0,
                      {6, 3, 1},
                      true},
        AttentionCase{"PrimalCausalNormedBlocks",
                      AttentionKind::kPrimal,
                      true,
                      3,
                      7,
                      8,
                      2,
                      3,
                      0,
                      {},
                      true,
                      7},
        AttentionCase{"PrimalEncoderPaddedNormedBlocks",
                      AttentionKind::kPrimal,
                      false,
                      3,
                      11,
                      8,
                      2,
                      3,
                      4,
                      {11, 6, 1},
                      true,
                      11}),
    [](const ::testing::TestParamInfo<AttentionCase>& info) { return info.param.name; });

TEST(KsvdLoss, GradMatchesFiniteDifferencesOfTheFormula) {
  std::vector<KsvdPartial> partials = {{0.8, 1.3, 0.4}, {2.1, 0.2, 1.7}};
  const double tokens = 12, eta = 0.3;
  const int heads = 3;
  KsvdLoss loss, probe;
  ksvd_loss(partials, tokens, heads, eta, loss);
  auto value = [&] {
    ksvd_loss(partials, tokens, heads, eta, probe);
    return eta * probe.value;
  };
  const double h = 1e-6;
  for (size_t l = 0; l < partials.size(); ++l) {
    for (double KsvdPartial::*field : {&KsvdPartial::e, &KsvdPartial::r, &KsvdPartial::t}) {
      const double saved = partials[l].*field;
      partials[l].*field = saved + h;
      const double up = value();
      partials[l].*field = saved - h;
      const double down = value();
      partials[l].*field = saved;
      const double numeric = (up - down) / (2 * h);
      const double analytic = field == &KsvdPartial::t ? loss.grads[l].dt : loss.grads[l].de;
      EXPECT_NEAR(analytic, numeric, 1e-6 * std::abs(numeric));
    }
  }
  // J_l = (E + R - T)^2 with E = e/(H tokens), T = t/H; KSVD is their mean.
  const double j0 = std::pow((0.8 + 1.3) / 36 - 0.4 / 3, 2),
               j1 = std::pow((2.1 + 0.2) / 36 - 1.7 / 3, 2);
  EXPECT_NEAR(loss.terms[0], j0, 1e-15);
  EXPECT_NEAR(loss.value, (j0 + j1) / 2, 1e-15);
}

TEST(ClassifierHead, MeanAndClsPoolingGradMatchFiniteDifferences) {
  for (Pooling pooling : {Pooling::kMean, Pooling::kCls}) {
    ModelConfig config;
    config.head = HeadKind::kClassifier;
    config.width = 6;
    config.head_width = 5;
    config.num_classes = 4;
    config.pooling = pooling;
    ParameterStore<double> params;
    ClassifierHead<double> head(params, config);
    params.finalize(5);
    std::vector<int32_t> lengths = {4, 2, 1};
    Sequence seq{3, 4, lengths.data(), false};
    check_layer(
        params, {3, 4, 6}, {3, 4},
        [&](Arena& a, const Tensor<double>& x) { return head.forward(a, x, seq); },
        [&](Arena& a, const Tensor<double>& dy, const Tensor<double>& dx) {
          head.backward(a, dy, dx);
        },
        50);
  }
}

TEST(Embedding, TokenAndPatchEmbeddingsGradMatchFiniteDifferences) {
  for (InputKind input : {InputKind::kTokens, InputKind::kPatches}) {
    ModelConfig config;
    config.input = input;
    config.head = input == InputKind::kTokens ? HeadKind::kLm : HeadKind::kClassifier;
    config.pooling = Pooling::kCls;
    config.vocab = 5;
    config.patch_dim = 4;
    config.width = 6;
    config.max_len = 8;
    ParameterStore<double> params;
    Embedding<double> embed(params, config);
    params.finalize(6);
    testing::randomize(params, 60);
    Batch batch;
    batch.B = 2;
    batch.N = 6;
    batch.tokens = {0, 1, 1, 4, 2, 1, 3, 3, 0, 0, 1, 2};  // repeats: scatter-add
    for (double v : testing::random_vector(2 * 6 * 4, 61)) batch.patches.push_back(float(v));
    const int cls = config.has_cls() ? 1 : 0;
    Sequence seq{2, 6 + cls};
    std::vector<double> r = testing::random_vector(2 * (6 + cls) * 6, 62);
    Arena arena;
    auto loss = [&] {
      arena.reset();
      return dot(embed.forward(arena, batch, seq), r);
    };
    auto forward_backward = [&] {
      arena.reset();
      Tensor<double> x = embed.forward(arena, batch, seq);
      Tensor<double> dx = arena.alloc<double>(x.shape());
      std::copy(r.begin(), r.end(), dx.data());
      embed.backward(arena, dx);
    };
    testing::check_gradients(loss, forward_backward, testing::all_parameters(params), kTolerance);
  }
}

}  // namespace
}  // namespace primal
