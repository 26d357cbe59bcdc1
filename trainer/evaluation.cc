#include "trainer/evaluation.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

namespace primal {

EvalResult evaluate(Transformer<float>& model, Arena& arena, const Dataset& data, DataSplit split,
                    int batch_size, int64_t max_batches) {
  const bool lm = model.config().head == HeadKind::kLm;
  int64_t total = data.eval_size(split);
  if (max_batches > 0) total = std::min(total, max_batches * batch_size);
  EvalResult r;
  double ce_sum = 0, ksvd_sum = 0;
  int64_t correct = 0, batches = 0;
  Batch batch;
  for (int64_t first = 0; first < total; first += batch_size) {
    const int count = int(std::min<int64_t>(batch_size, total - first));
    data.eval_batch(split, first, count, batch);
    arena.reset();
    const LossTerms t = model.forward(arena, batch, 0, /*training=*/false);
    ce_sum += t.ce * double(t.predictions);
    ksvd_sum += t.ksvd;
    r.predictions += t.predictions;
    r.samples += count;
    ++batches;
    if (!lm) {
      const Tensor<float>& p = model.probabilities();
      const int64_t K = p.dim(1);
      for (int b = 0; b < count; ++b) {
        const float* row = p.data() + b * K;
        correct += (std::max_element(row, row + K) - row) == batch.targets[b];
      }
    }
  }
  if (r.predictions == 0) return r;
  r.ce = ce_sum / double(r.predictions);
  r.ksvd = ksvd_sum / double(batches);
  r.loss = r.ce + model.config().eta * r.ksvd;
  if (lm) {
    r.perplexity = std::exp(r.ce);
  } else {
    r.accuracy = double(correct) / double(r.samples);
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
  } else {
    j["perplexity"] = r.perplexity;
  }
  j["samples"] = r.samples;
  return j.dump();
}

}  // namespace primal
