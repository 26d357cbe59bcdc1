// The single-process training loop: batches from a Dataset, forward/backward with gradient
// accumulation, global-norm clipping, AdamW on a schedule, periodic evaluation, and metrics
// on the console (rank 0) and in <logging.dir>/metrics.jsonl.
#pragma once

#include <cstdio>
#include <memory>
#include <string>

#include "configs/config.h"
#include "data/dataset.h"
#include "model/transformer.h"
#include "trainer/adamw.h"
#include "trainer/evaluation.h"
#include "trainer/schedule.h"

namespace primal {

// The dataset a config names (data.kind, data.path, ...). Throws primal::Error naming the
// file on unreadable data.
std::unique_ptr<Dataset> make_dataset(const LoadedConfig& config);

// A run stopped by a non-finite loss (train.on_nonfinite: STOP); the CLI exits with
// kExitNonFinite (bad input is 2).
class NonFiniteLoss : public Error {
 public:
  using Error::Error;
};
inline constexpr int kExitNonFinite = 3;

class Trainer {
 public:
  explicit Trainer(const LoadedConfig& config);

  // Trains train.steps steps; returns the final validation result. Writes metrics.jsonl and
  // model.safetensors in logging.dir.
  EvalResult run();

  Transformer<float>& model() { return model_; }

 private:
  struct StepResult {
    double loss = 0, ce = 0, ksvd = 0, grad_norm = 0, lr = 0;
    bool skipped = false;
  };
  StepResult train_step(int64_t step);
  void log_step(int64_t step, const StepResult& r, double step_seconds, double elapsed);
  EvalResult evaluate_and_log(int64_t step);

  const LoadedConfig& config_;
  const config::Config& proto_;
  std::unique_ptr<Dataset> data_;
  Transformer<float> model_;
  AdamW<float> optimizer_;
  ScheduleOptions schedule_;
  Arena arena_, eval_arena_;
  Batch batch_;
  std::string run_dir_;
  std::FILE* metrics_ = nullptr;
  bool tty_ = false;
  int64_t predictions_per_step_ = 0;
};

}  // namespace primal
