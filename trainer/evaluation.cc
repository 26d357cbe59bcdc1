#include "trainer/evaluation.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <vector>

namespace primal {

int64_t count_correct(const float* probs, int B, int K, const std::vector<int32_t>& targets) {
  int64_t correct = 0;
  for (int b = 0; b < B; ++b) {
    const float* row = probs + int64_t(b) * K;
    correct += (std::max_element(row, row + K) - row) == targets[b];
  }
  return correct;
}

EvalBatch evaluate_batch_on(Transformer<float>& model, Arena& arena, const Batch& batch) {
  arena.reset();
  EvalBatch out{model.forward(arena, batch, 0, /*training=*/false)};
  if (model.config().head != HeadKind::kLm) {
    const Tensor<float>& p = model.probabilities();
    out.correct = count_correct(p.data(), batch.B, int(p.dim(1)), batch.targets);
  }
  return out;
}

EvalResult evaluate(Transformer<float>& model, Arena& arena, const Dataset& data, DataSplit split,
                    int batch_size, int64_t max_batches, Communicator* dp) {
  const EvalForward forward = [&](const Batch& batch) {
    return evaluate_batch_on(model, arena, batch);
  };
  return evaluate(model.config(), forward, data, split, batch_size, max_batches, dp);
}

EvalResult evaluate(const ModelConfig& config, const EvalForward& forward, const Dataset& data,
                    DataSplit split, int batch_size, int64_t max_batches, Communicator* dp) {
  const bool lm = config.head == HeadKind::kLm;
  int64_t total = data.eval_size(split);
  if (max_batches > 0) total = std::min(total, max_batches * batch_size);
  const int64_t batches = (total + batch_size - 1) / batch_size;
  const int ranks = dp ? dp->size() : 1, me = dp ? dp->rank() : 0;
  // One row per batch: CE summed over its predictions, its KSVD loss, its predictions and
  // correct samples, and (classifier) how many of its samples have each class as target.
  // Rows of other ranks' batches stay 0, so the sum over DP fills in every row exactly
  // (x + 0 = x).
  enum { kCeSum, kKsvd, kPredictions, kCorrect, kClassCounts };
  const int classes = lm ? 0 : config.num_classes;
  const int64_t columns = kClassCounts + classes;
  std::vector<double> rows(batches * columns, 0.0);
  Batch batch;
  for (int64_t k = me; k < batches; k += ranks) {
    const int64_t first = k * batch_size;
    const int count = int(std::min<int64_t>(batch_size, total - first));
    data.eval_batch(split, first, count, batch);
    const EvalBatch b = forward(batch);
    double* row = &rows[k * columns];
    row[kCeSum] = b.terms.ce * double(b.terms.predictions);
    row[kKsvd] = b.terms.ksvd;
    row[kPredictions] = double(b.terms.predictions);
    row[kCorrect] = double(b.correct);
    if (!lm) {
      for (int i = 0; i < count; ++i) row[kClassCounts + batch.targets[size_t(i)]] += 1;
    }
  }
  if (ranks > 1) dp->all_reduce(rows.data(), static_cast<int64_t>(rows.size()), ReduceOp::kSum);

  EvalResult r;
  double ce_sum = 0, ksvd_sum = 0, correct = 0;
  std::vector<double> class_counts(size_t(classes), 0.0);
  for (int64_t k = 0; k < batches; ++k) {
    const double* row = &rows[k * columns];
    ce_sum += row[kCeSum];
    ksvd_sum += row[kKsvd];
    r.predictions += static_cast<int64_t>(row[kPredictions]);
    correct += row[kCorrect];
    for (int c = 0; c < classes; ++c) class_counts[size_t(c)] += row[kClassCounts + c];
  }
  r.samples = total;
  if (r.predictions == 0) return r;
  r.ce = ce_sum / double(r.predictions);
  r.ksvd = ksvd_sum / double(batches);
  r.loss = r.ce + config.eta * r.ksvd;
  if (lm) {
    r.perplexity = std::exp(r.ce);
  } else {
    r.accuracy = correct / double(r.samples);
    r.majority = *std::max_element(class_counts.begin(), class_counts.end()) / double(r.samples);
  }
  return r;
}

std::string eval_json(const EvalResult& r, const std::string& split, int64_t step) {
  nlohmann::ordered_json j;
  if (step >= 0) j["step"] = step;
  j["split"] = split;
  j["loss"] = r.loss;
  j["ce"] = r.ce;
  j["ksvd"] = r.ksvd;
  if (r.accuracy >= 0) {
    j["accuracy"] = r.accuracy;
    j["majority"] = r.majority;
  } else {
    j["perplexity"] = r.perplexity;
  }
  j["samples"] = r.samples;
  return j.dump();
}

}  // namespace primal
