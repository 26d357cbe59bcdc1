// The loss indexes the logits with each target: a target outside the classes, or a batch with
// the wrong number of them, is an Error naming it, never a read outside the logits.
#include <gtest/gtest.h>

#include "core/error.h"
#include "model/transformer.h"
#include "tests/model/model_configs.h"

namespace primal {
namespace {

using enum AttentionKind;

std::string forward_error(const ModelConfig& config, const Batch& batch) {
  Transformer<float> model(config);
  Arena arena;
  try {
    model.forward(arena, batch, 0);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(CrossEntropy, TargetOutsideTheClassesIsAnErrorNamingIt) {
  const ModelConfig lm = testing::lm_config({kSoftmax, kPrimal}, 8);
  Batch batch = testing::random_batch(lm, 2, 8, 3);
  batch.targets[5] = lm.vocab;
  EXPECT_EQ(forward_error(lm, batch),
            "cross-entropy: target 5 is 11, outside the model's 11 classes [0, 11)");
  batch.targets[5] = -1;
  EXPECT_EQ(forward_error(lm, batch),
            "cross-entropy: target 5 is -1, outside the model's 11 classes [0, 11)");

  const ModelConfig classifier =
      testing::classifier_config({kPrimal}, InputKind::kTokens, Pooling::kMean, 8, 2, 2);
  Batch labels = testing::random_batch(classifier, 3, 8, 4);
  labels.targets[2] = classifier.num_classes;
  EXPECT_EQ(forward_error(classifier, labels),
            "cross-entropy: target 2 is 5, outside the model's 5 classes [0, 5)");
  labels.targets.pop_back();
  EXPECT_EQ(forward_error(classifier, labels),
            "cross-entropy: the batch has 2 targets for 3 predictions");
  EXPECT_EQ(forward_error(classifier, testing::random_batch(classifier, 3, 8, 4)), "");
}

}  // namespace
}  // namespace primal
