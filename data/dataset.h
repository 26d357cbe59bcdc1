// Datasets (SPEC §7). A training batch is a pure function of (seed, step, global sample
// index): a data-parallel rank asks for its slice [first, first + count) of the global batch,
// and a resumed run asks for the same step again, and both get exactly what one
// uninterrupted process would have seen.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "model/batch.h"

namespace primal {

enum class DataSplit { kTrain, kVal, kTest };
enum class DataOrder { kRandom, kSequential };

class Dataset {
 public:
  virtual ~Dataset() = default;

  // Samples [first, first + count) of the global training batch of `step` (global_batch
  // samples in all). Fills batch in place (its vectors keep their capacity: no allocation
  // once warm).
  virtual void train_batch(int64_t step, int64_t first, int count, int global_batch,
                           Batch& batch) const = 0;
  // Evaluation samples of a split, in a fixed order: [first, first + count) of eval_size().
  virtual int64_t eval_size(DataSplit split) const = 0;
  virtual void eval_batch(DataSplit split, int64_t first, int count, Batch& batch) const = 0;
};

}  // namespace primal
