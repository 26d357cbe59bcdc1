// Evaluation (SPEC §7): the model over every sample of a split (or its first max_batches
// batches), cross-entropy averaged over every prediction.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "data/dataset.h"
#include "model/transformer.h"

namespace primal {

struct EvalResult {
  double loss = 0, ce = 0, ksvd = 0;
  double perplexity = 0;  // LM: exp(ce)
  double accuracy = -1;   // classifier: share of samples whose argmax is the target
  double majority = -1;   // classifier: share of the most frequent target (always guessing it)
  int64_t predictions = 0;
  int64_t samples = 0;
};

// What evaluation needs of a model for one batch, run in evaluation mode (no dropout): its
// loss terms, and (classifier) how many of its samples have the target as their argmax.
struct EvalBatch {
  LossTerms terms;
  int64_t correct = 0;
};
using EvalForward = std::function<EvalBatch(const Batch& batch)>;

// Samples of probs [B, K] whose largest probability (the first, on ties) is at their target.
int64_t count_correct(const float* probs, int B, int K, const std::vector<int32_t>& targets);
// One evaluation batch of the CPU model (its arena holds the batch's activations).
EvalBatch evaluate_batch_on(Transformer<float>& model, Arena& arena, const Batch& batch);

// dp: the data-parallel group (null: this process alone). Batch k is run by DP rank
// k % dp->size() (with its TP group), and every rank gets the same result, bitwise equal to
// one process's: the per-batch sums are gathered and added in batch order everywhere.
EvalResult evaluate(const ModelConfig& config, const EvalForward& forward, const Dataset& data,
                    DataSplit split, int batch_size, int64_t max_batches,
                    Communicator* dp = nullptr);
// The CPU model (its arena holds each batch's activations).
EvalResult evaluate(Transformer<float>& model, Arena& arena, const Dataset& data, DataSplit split,
                    int batch_size, int64_t max_batches, Communicator* dp = nullptr);

// One JSON object: {"split": ..., "loss": ..., "ce": ..., "ksvd": ..., "perplexity" or
// "accuracy" and "majority"}.
std::string eval_json(const EvalResult& r, const std::string& split, int64_t step = -1);

}  // namespace primal
