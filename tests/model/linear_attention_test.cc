// Linear attention (model/linear_attention.h): backward against finite differences in double,
// the forward against a direct O(N^2) evaluation of its formula, the GEMM FLOP count against
// what it issues, the matrix the spectrum analyses, and the kind's registry entry and config.
// (Generation against the full forward: tests/model/generator_test.cc; the layout invariance
// under TP and DP: TrainParallel.layout_linear_attention; PyTorch: tests/reference.)
#include "model/linear_attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <optional>

#include "core/blas.h"
#include "model/attention_kinds.h"
#include "model/transformer.h"
#include "tests/model/gradcheck.h"
#include "tests/model/model_configs.h"
#include "trainer/telemetry.h"

namespace primal {
namespace {

using enum AttentionKind;

struct LinearCase {
  const char* name;
  bool causal;
  int B, N, C, H;
  std::vector<int32_t> lengths;  // empty: no padding
  bool normed = false;
  int block = kLinearAttentionBlock;
};

void PrintTo(const LinearCase& c, std::ostream* os) {
  *os << c.name;
}

class LinearAttentionGrad : public ::testing::TestWithParam<LinearCase> {};

TEST_P(LinearAttentionGrad, MatchesFiniteDifferences) {
  const LinearCase& c = GetParam();
  ParameterStore<double> params;
  LinearAttention<double> attn(params, "attn", c.C, c.H, nullptr, c.block);
  std::optional<LayerNorm<double>> ln;
  if (c.normed) ln.emplace(params, "ln", c.C, 1e-5);
  params.finalize(3);
  Sequence seq{c.B, c.N, c.lengths.empty() ? nullptr : c.lengths.data(), c.causal};
  KsvdPartial partial;
  testing::check_layer(
      params, {c.B, c.N, c.C}, {int64_t(c.B) * c.N, c.C},
      [&](Arena& a, const Tensor<double>& x) {
        return attn.forward(a, x, seq, partial, ln ? &*ln : nullptr);
      },
      [&](Arena& a, const Tensor<double>& dy, const Tensor<double>& dx) {
        attn.backward(a, dy, dx, {});
      },
      43);
}

// Causal blocks of 3 over N = 7 and 8 (a short last block, and none), one block, N = 1, padding
// in both forms, and the layer's norm in front.
INSTANTIATE_TEST_SUITE_P(
    Shapes, LinearAttentionGrad,
    ::testing::Values(LinearCase{"CausalBlocks", true, 2, 7, 8, 2, {}, false, 3},
                      LinearCase{"CausalWholeBlocks", true, 2, 6, 8, 2, {}, false, 3},
                      LinearCase{"CausalOneBlock", true, 2, 5, 6, 3, {}},
                      LinearCase{"CausalN1", true, 2, 1, 6, 3, {}},
                      LinearCase{"CausalPaddedNormedBlocks", true, 3, 7, 8, 2, {7, 4, 1}, true, 3},
                      LinearCase{"EncoderPadded", false, 3, 6, 8, 2, {6, 3, 1}},
                      LinearCase{"EncoderNormed", false, 2, 5, 8, 4, {}, true}),
    [](const ::testing::TestParamInfo<LinearCase>& info) { return info.param.name; });

// The forward against its definition, evaluated directly per query in double:
//   y_n = sum_{j in keys(n)} (phi(q_n) . phi(k_j)) v_j / (sum_{j in keys(n)} phi(q_n) . phi(k_j)
//   + 1e-6),  then out = y Wo^T + bo;  a padded query's y is 0.
TEST(LinearAttention, ForwardEqualsTheDirectFormula) {
  for (const bool causal : {true, false}) {
    const int B = 2, N = 9, C = 8, H = 2, d = C / H;
    std::vector<int32_t> lengths = {9, 5};
    ParameterStore<double> params;
    LinearAttention<double> attn(params, "attn", C, H, nullptr, /*block=*/4);
    params.finalize(5);
    testing::randomize(params, 6);
    std::vector<double> xv = testing::random_vector(int64_t(B) * N * C, 7);
    Tensor<double> x(xv.data(), {B, N, C});
    Sequence seq{B, N, lengths.data(), causal};
    Arena arena;
    KsvdPartial unused;
    const Tensor<double> out = attn.forward(arena, x, seq, unused, nullptr);

    auto phi = [](double v) { return v > 0 ? v + 1 : std::exp(v); };
    const Tensor<double>& wqkv = params.find("attn.qkv.weight")->value;  // [3C, C]
    const Tensor<double>& bqkv = params.find("attn.qkv.bias")->value;
    const Tensor<double>& wo = params.find("attn.proj.weight")->value;  // [C, C]
    const Tensor<double>& bo = params.find("attn.proj.bias")->value;
    double worst = 0;
    for (int b = 0; b < B; ++b) {
      std::vector<double> qkv(size_t(N) * 3 * C);
      for (int n = 0; n < N; ++n)
        for (int o = 0; o < 3 * C; ++o) {
          double acc = bqkv[o];
          for (int i = 0; i < C; ++i)
            acc += wqkv[int64_t(o) * C + i] * xv[(int64_t(b) * N + n) * C + i];
          qkv[size_t(n) * 3 * C + o] = acc;
        }
      for (int n = 0; n < N; ++n) {
        std::vector<double> y(C, 0.0);
        if (n < lengths[b]) {
          for (int h = 0; h < H; ++h) {
            double den = 1e-6;
            const int keys = causal ? n + 1 : lengths[b];
            for (int j = 0; j < keys; ++j) {
              double kernel = 0;
              for (int t = 0; t < d; ++t)
                kernel += phi(qkv[size_t(n) * 3 * C + h * d + t]) *
                          phi(qkv[size_t(j) * 3 * C + C + h * d + t]);
              den += kernel;
              for (int t = 0; t < d; ++t)
                y[h * d + t] += kernel * qkv[size_t(j) * 3 * C + 2 * C + h * d + t];
            }
            for (int t = 0; t < d; ++t) y[h * d + t] /= den;
          }
        }
        for (int o = 0; o < C; ++o) {
          double want = bo[o];
          for (int i = 0; i < C; ++i) want += wo[int64_t(o) * C + i] * y[i];
          worst = std::max(worst, std::abs(out[(int64_t(b) * N + n) * C + o] - want));
        }
      }
    }
    EXPECT_LT(worst, 1e-12) << (causal ? "causal" : "encoder");
  }
}

// model_gemm_flops (the MFU numerator, from the kind's registry entry) equals the GEMM FLOPs
// a forward and a backward issue, in both forms, over several causal block counts.
TEST(LinearAttention, GemmFlopsMatchTheCounterExactly) {
  for (const int N : {1, 40, 64, 150}) {
    for (const bool lm : {true, false}) {
      ModelConfig config = lm ? testing::lm_config({kLinear, kSoftmax}, N)
                              : testing::classifier_config({kLinear, kPrimal}, InputKind::kTokens,
                                                           Pooling::kCls, N + 1, 2, 3);
      config.width = 16;
      config.heads = 2;
      Transformer<float> model(config);
      const Batch batch = testing::random_batch(config, 3, N, 9);
      Arena arena;
      const ModelFlops want = model_gemm_flops(config, 3, N);
      const uint64_t before = gemm_flops.load();
      model.forward(arena, batch, 0);
      const uint64_t forward = gemm_flops.load() - before;
      arena.reset();
      const uint64_t middle = gemm_flops.load();
      model.forward_backward(arena, batch, 1);
      const uint64_t both = gemm_flops.load() - middle;
      EXPECT_EQ(int64_t(forward), want.forward) << "N " << N << (lm ? " lm" : " classifier");
      EXPECT_EQ(int64_t(both - forward), want.backward)
          << "N " << N << (lm ? " lm" : " classifier");
    }
  }
}

// The spectrum's matrix: row n mixes the keys position n sees with weights summing to 1 (up to
// the 1e-6 in the denominator); causal rows see no later key.
TEST(LinearAttention, AnalysedMatrixIsRowStochasticAndCausal) {
  Transformer<float> model(testing::lm_config({kLinear}, 20));
  const Batch batch = testing::random_batch(model.config(), 2, 20, 4);
  Arena arena;
  model.forward(arena, batch, 0);
  const Attention<float>& attn = model.layers()[0].attention();
  ASSERT_EQ(attn.local_heads(), 2);
  std::vector<double> m;
  attn.analysed_matrix(1, 1, 20, m);
  for (int i = 0; i < 20; ++i) {
    double row = 0;
    for (int j = 0; j < 20; ++j) {
      row += m[size_t(i) * 20 + j];
      if (j > i) {
        EXPECT_EQ(m[size_t(i) * 20 + j], 0.0);
      } else {
        EXPECT_GT(m[size_t(i) * 20 + j], 0.0);
      }
    }
    EXPECT_NEAR(row, 1.0, 1e-5) << "row " << i;
  }
}

TEST(LinearAttention, RegistryEntryNamesItLinearWithoutKsvdTerms) {
  const AttentionKindSpec& spec = attention_kind(kLinear);
  EXPECT_STREQ(spec.name, "LINEAR");
  EXPECT_FALSE(spec.ksvd_loss);
  EXPECT_EQ(find_attention_kind("LINEAR"), &spec);
  EXPECT_EQ(find_attention_kind("linear"), nullptr);
  EXPECT_EQ(attention_kind_names(), "SOFTMAX, PRIMAL, LINEAR");
  EXPECT_EQ(testing::lm_config({kLinear, kPrimal, kLinear}, 8).num_primal_layers(), 1);
}

}  // namespace
}  // namespace primal
