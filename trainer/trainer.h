// The training loop, on one process or as one rank of a (TP x DP) job: batches from a
// Dataset (this rank's slice of the global batch), forward/backward with gradient
// accumulation, the KSVD all-reduce, the data-parallel gradient average in buckets that start
// during backward, global-norm clipping over all shards, AdamW on a schedule, periodic
// evaluation, and metrics on the console and in <logging.dir>/metrics.jsonl (world rank 0).
#pragma once

#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/gradient_buckets.h"
#include "comm/process_groups.h"
#include "comm/tensor_parallel_group.h"
#include "configs/config.h"
#include "data/dataset.h"
#include "model/transformer.h"
#include "trainer/adamw.h"
#include "trainer/checkpointer.h"
#include "trainer/device_step.h"
#include "trainer/evaluation.h"
#include "trainer/host_step.h"
#include "trainer/schedule.h"
#include "trainer/telemetry.h"

namespace primal {

// The dataset a config names (data.kind, data.path, ...). Throws primal::Error naming the
// file on unreadable data.
std::unique_ptr<Dataset> make_dataset(const LoadedConfig& config);

// A run stopped by a non-finite loss (train.on_nonfinite: STOP); the CLI exits with
// kExitNonFinite (bad input is 2, a job ended by the collectives' watchdog 3).
class NonFiniteLoss : public Error {
 public:
  using Error::Error;
};
inline constexpr int kExitNonFinite = 4;

// A run stopped early by SIGTERM or SIGUSR1 (or checkpoint.stop_at_step) after it saved a
// checkpoint exits with kExitRequeue (EX_TEMPFAIL): "requeue me", and the requeued job
// continues with `primal train --resume auto` (docs/checkpoints.md).
inline constexpr int kExitRequeue = 75;

// From now on SIGTERM and SIGUSR1 ask the training loop to stop: it finishes the current step,
// every rank agrees on that step, saves a checkpoint and returns with Trainer::stopped().
void install_stop_signal_handlers();

class Trainer {
 public:
  // Builds the step of train.device CUDA: make_device_step, or a test's stand-in for a GPU.
  using DeviceStepFactory = std::function<std::unique_ptr<TrainingStep>(
      const LoadedConfig&, const ParameterStore<float>&, AdamW<float>&, ProcessGroups*)>;

  // groups: this rank's world/TP/DP groups; null trains on this process alone.
  Trainer(const LoadedConfig& config, ProcessGroups* groups = nullptr,
          const DeviceStepFactory& make_device = make_device_step);
  ~Trainer();

  // Collective: restores a checkpoint before run() ("auto": the newest valid one of
  // checkpoint.dir, if any; else that checkpoint exactly). Throws CheckpointError.
  void resume(const std::string& what);

  // Trains up to train.steps steps; returns the final validation result. World rank 0 writes
  // metrics.jsonl and model.safetensors (the full, unsharded weights) in logging.dir.
  // Checkpoints: every checkpoint.every steps, at the end, and on a stop request.
  EvalResult run();
  // Whether run() stopped early on a signal or checkpoint.stop_at_step (and saved).
  bool stopped() const { return stopped_; }
  int64_t start_step() const { return start_step_; }
  Checkpointer& checkpointer() { return *checkpointer_; }

  // With train.device CUDA these are the host copy of the device's state, current after
  // evaluations, checkpoints and run().
  Transformer<float>& model() { return model_; }
  AdamW<float>& optimizer() { return optimizer_; }
  // The data-parallel buckets of the host step (null without data parallelism, and on the
  // device, whose buckets are its step's own), for tests and traces.
  GradientBuckets* buckets() { return host_ ? host_->buckets() : nullptr; }
  // The full parameter tensors (SPEC §4 shapes), gathered over the TP group.
  ParameterStore<float> gather_full_parameters();

 private:
  struct StepResult {
    double loss = 0, ce = 0, ksvd = 0, grad_norm = 0, lr = 0;
    bool skipped = false;
  };
  StepResult train_step(int64_t step);
  // Whether a step with loss and grad_norm is dropped (train.on_nonfinite: SKIP); throws
  // NonFiniteLoss with STOP.
  bool skip_nonfinite(int64_t step, double loss, double grad_norm) const;
  // With train.device CUDA: the device's parameters (gradients too with grads) and AdamW state
  // into model_ and optimizer_, where a step changed them since the last copy.
  void copy_to_host(bool grads = false);
  void save_checkpoint(int64_t step, double lr);
  void write_bucket_trace();
  void log_step(int64_t step, const StepResult& r, double step_seconds, double elapsed);
  EvalResult evaluate_and_log(int64_t step);
  bool leader() const { return !groups_ || groups_->world->rank() == 0; }

  const LoadedConfig& config_;
  const config::Config& proto_;
  ProcessGroups* groups_;
  int tp_size_ = 1, dp_size_ = 1, dp_rank_ = 0;
  std::unique_ptr<CommTensorParallelGroup> tp_group_;
  std::unique_ptr<Dataset> data_;
  Transformer<float> model_;
  AdamW<float> optimizer_;
  std::unique_ptr<Checkpointer> checkpointer_;
  // The step: on the host (host_ is it) or on a GPU (train.device CUDA, on_device_); a GPU's
  // state is copied to the host on demand, when it stepped since the last copy.
  std::unique_ptr<TrainingStep> step_;
  HostStep* host_ = nullptr;
  bool on_device_ = false;
  bool host_stale_ = false, host_grads_stale_ = false;

  int64_t start_step_ = 0;  // the step a resumed run continues with
  bool resumed_ = false, stopped_ = false;
  ScheduleOptions schedule_;
  Batch batch_;
  std::string run_dir_;
  std::FILE* metrics_ = nullptr;
  std::unique_ptr<Telemetry> telemetry_;  // TensorBoard (logging.logdir), world rank 0
  std::vector<double> ksvd_terms_;        // J_l of the last step, per PRIMAL layer
  bool tty_ = false;
  int64_t predictions_per_step_ = 0;
};

}  // namespace primal
