// The whole model, loss = CE + eta KSVD, against central finite differences in double
// precision: both attention forms, both heads, padding, dropout, and the shapes the issue
// names (N = 1, N < s*m, N > s*m, N not divisible by anything).
#include <gtest/gtest.h>

#include "model/transformer.h"
#include "tests/model/gradcheck.h"
#include "tests/model/model_configs.h"

namespace primal {
namespace {

using enum AttentionKind;

struct ModelCase {
  const char* name;
  ModelConfig config;
  int B, N;
  std::vector<int32_t> lengths;
};

void PrintTo(const ModelCase& c, std::ostream* os) {
  *os << c.name;
}

class ModelGrad : public ::testing::TestWithParam<ModelCase> {};

TEST_P(ModelGrad, MatchesFiniteDifferences) {
  const ModelCase& c = GetParam();
  Transformer<double> model(c.config);
  testing::randomize(model.params(), 70);
  Batch batch = testing::random_batch(c.config, c.B, c.N, 71, c.lengths);
  Arena arena;
  LossTerms terms;
  auto loss = [&] {
    arena.reset();
    terms = model.forward(arena, batch, 3);
    return terms.loss;
  };
  auto forward_backward = [&] {
    arena.reset();
    model.forward_backward(arena, batch, 3);
  };
  testing::check_gradients(loss, forward_backward, testing::all_parameters(model.params()), 1e-6);
  loss();
  if (c.config.num_primal_layers() > 0) {
    EXPECT_GT(terms.ksvd, 0.0);  // the KSVD term is live
  }
  EXPECT_NEAR(terms.loss, terms.ce + c.config.eta * terms.ksvd, 1e-12);
}

ModelConfig with_dropout(ModelConfig c, double p) {
  c.dropout = p;
  return c;
}

INSTANTIATE_TEST_SUITE_P(
    Models, ModelGrad,
    ::testing::Values(
        // LM (causal): Primal.+Trans., PrimalFormer, N = 1, dropout.
        ModelCase{"LmSoftmaxThenPrimal", testing::lm_config({kSoftmax, kPrimal}, 9), 2, 7, {}},
        ModelCase{"LmPrimalformerN1", testing::lm_config({kPrimal, kPrimal}, 4), 3, 1, {}},
        ModelCase{
            "LmDropout", with_dropout(testing::lm_config({kPrimal, kSoftmax}, 8), 0.3), 2, 5, {}},
        // Classifier (encoder form), tokens, MEAN pooling, padding; s*m = 4 < N = 11.
        ModelCase{"ClassifierPaddedNAboveL",
                  testing::classifier_config({kPrimal, kSoftmax}, InputKind::kTokens,
                                             Pooling::kMean, 11, 2, 2),
                  3,
                  11,
                  {11, 6, 1}},
        // Classifier on patches with CLS; N + 1 = 6 < s*m = 9.
        ModelCase{
            "ClassifierPatchesClsNBelowL",
            testing::classifier_config({kPrimal}, InputKind::kPatches, Pooling::kCls, 10, 3, 3),
            2,
            5,
            {}},
        // N = 1 in the encoder form.
        ModelCase{"ClassifierN1",
                  testing::classifier_config({kPrimal, kPrimal}, InputKind::kTokens, Pooling::kMean,
                                             3, 2, 2),
                  2,
                  1,
                  {}}),
    [](const ::testing::TestParamInfo<ModelCase>& info) { return info.param.name; });

}  // namespace
}  // namespace primal
