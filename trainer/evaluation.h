// Evaluation (SPEC §7): the model over every sample of a split (or its first max_batches
// batches), cross-entropy averaged over every prediction.
#pragma once

#include <string>

#include "data/dataset.h"
#include "model/transformer.h"

namespace primal {

struct EvalResult {
  double loss = 0, ce = 0, ksvd = 0;
  double perplexity = 0;  // LM: exp(ce)
  double accuracy = -1;   // classifier: share of samples whose argmax is the target
  int64_t predictions = 0;
  int64_t samples = 0;
};

EvalResult evaluate(Transformer<float>& model, Arena& arena, const Dataset& data, DataSplit split,
                    int batch_size, int64_t max_batches);

// One JSON object: {"split": ..., "loss": ..., "ce": ..., "ksvd": ..., "perplexity"|"accuracy"}.
std::string eval_json(const EvalResult& r, const std::string& split, int64_t step = -1);

}  // namespace primal
