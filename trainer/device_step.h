// The training step on one GPU, for train.device: CUDA (docs/training.md): the trainer's
// batches go to a cuda::DeviceTransformer (model/cuda/transformer.h) of the run's model, which
// runs forward, backward, the global-norm clip and AdamW on the device, FP32 or BF16
// (train.precision). The trainer keeps its CPU model and optimizer as the host copy: they are
// what evaluation, telemetry, checkpoints (SPEC §6, unchanged) and model.safetensors read, and
// what a resumed run uploads from.
//
//   auto device = make_device_step(config, model.params(), optimizer, groups);  // uploads
//   device->zero_grads();
//   for each micro-batch k: terms = device->forward_backward(batch_k, step, last);  // add up
//   device->scale_grads(1 / micro_steps);         // accumulation only
//   norm = device->clip(max_norm);                 // 0: the norm only
//   device->adamw_step(lr);
//   device->evaluate_batch(batch);                 // evaluation, on the device
//   device->download(model.params(), optimizer);   // before saving
//
// Data parallelism (P > 1 processes, parallel.tp 1): one GPU per process, each rank steps on
// its share of the micro-batch, and the step averages the gradients over the DP group (NCCL
// buckets during the last micro-batch's backward) and sums the KSVD partials per
// parallel.ksvd_sync (trainer/device_data_parallel.h): every rank then clips and steps alike.
//
// The declarations need no CUDA headers: trainer.cc picks the device at run time. In a build
// without PRIMAL_CUDA, make_device_step throws (config validation has said so first).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "comm/process_groups.h"
#include "configs/config.h"
#include "model/batch.h"
#include "model/transformer.h"
#include "trainer/adamw.h"
#include "trainer/evaluation.h"

namespace primal {

class DeviceStep {
 public:
  virtual ~DeviceStep() = default;

  // The device the step runs on, for the start-up line ("GPU 0: NVIDIA H200 (sm_90), FP32").
  virtual std::string describe() const = 0;

  virtual void zero_grads() = 0;
  // Loss of the batch (dropout keyed by step), its gradients added into the device's. The
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
  // One evaluation batch on the device (no dropout, this rank's batch alone: no collective),
  // for trainer/evaluation.h. Leaves the gradients and the optimizer as they are.
  virtual EvalBatch evaluate_batch(const Batch& batch) = 0;

  // Host copies. download: the parameter values (and gradients with grads) into params, and,
  // where optimizer is not null, its moments and step count. upload: the values, moments and
  // step count from the host (start-up, resume).
  virtual void download(ParameterStore<float>& params, AdamW<float>* optimizer,
                        bool grads = false) = 0;
  virtual void upload(const ParameterStore<float>& params, AdamW<float>& optimizer) = 0;
};

// The step on the first visible GPU (CUDA_VISIBLE_DEVICES picks it), FP32 or BF16 per
// train.precision, starting from params and optimizer's state. With groups of more than one
// DP rank (collective over them): the GPU of the node-local rank (modulo the visible devices)
// and data parallelism over groups->dp. Throws primal::Error naming train.device, with the
// CUDA runtime's reason, where no device can be used.
std::unique_ptr<DeviceStep> make_device_step(const LoadedConfig& config,
                                             const ParameterStore<float>& params,
                                             AdamW<float>& optimizer,
                                             ProcessGroups* groups = nullptr);

}  // namespace primal
