// One training step of the trainer (trainer/trainer.h), wherever it runs: on the host
// (trainer/host_step.h: the CPU model, with its tensor- and data-parallel collectives) or on a
// GPU (trainer/device_step.h). The trainer's one step loop calls it:
//
//   step->zero_grads();
//   for each micro-batch k: terms = step->forward_backward(batch_k, step, last);  // add up
//   step->scale_grads(1 / micro_steps);         // accumulation only
//   norm = step->clip(max_norm);                 // 0: the norm only
//   step->adamw_step(lr);                        // unless the step is skipped (non-finite)
//   step->evaluate_batch(batch);                 // evaluation
//   step->download(model.params(), optimizer);   // before saving (a GPU's state)
#pragma once

#include <cstdint>
#include <string>

#include "model/batch.h"
#include "model/transformer.h"
#include "trainer/adamw.h"
#include "trainer/evaluation.h"

namespace primal {

class TrainingStep {
 public:
  virtual ~TrainingStep() = default;

  // Where the step runs, for the start-up line ("GPU 0: NVIDIA H200 (sm_90), FP32").
  virtual std::string describe() const = 0;

  virtual void zero_grads() = 0;
  // Loss of the batch (dropout keyed by step), its gradients added into the step's. The
  // ksvd_terms span stays valid until the next call. last: the step's last micro-batch; with
  // data parallelism its backward averages the (accumulated) gradients over the DP group, and
  // the scale, clip and step enqueued after it see the average.
  virtual LossTerms forward_backward(const Batch& batch, int64_t step, bool last) = 0;
  // g *= scale (float), as the CPU path averages accumulated micro-batches.
  virtual void scale_grads(float scale) = 0;
  // The global gradient norm before clipping; clips to max_norm when that is > 0. A
  // non-finite norm leaves the gradients as they are.
  virtual double clip(double max_norm) = 0;
  // One AdamW step with the config's hyper-parameters (optimizer.*), at learning rate lr.
  virtual void adamw_step(double lr) = 0;
  // One evaluation batch (no dropout, this rank's batch alone: no data-parallel collective),
  // for trainer/evaluation.h. Leaves the gradients and the optimizer as they are.
  virtual EvalBatch evaluate_batch(const Batch& batch) = 0;

  // Host copies, for a step that keeps its own state (a GPU's; the host step works on the
  // trainer's model and optimizer, and these do nothing). download: the parameter values (and
  // gradients with grads) into params, and, where optimizer is not null, its moments and step
  // count. upload: the values, moments and step count from the host (start-up, resume).
  virtual void download(ParameterStore<float>& params, AdamW<float>* optimizer,
                        bool grads = false) = 0;
  virtual void upload(const ParameterStore<float>& params, AdamW<float>& optimizer) = 0;
};

}  // namespace primal
