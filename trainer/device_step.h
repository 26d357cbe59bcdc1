// The training step on one GPU, for train.device: CUDA (docs/training.md): the trainer's
// batches go to a cuda::DeviceTransformer (model/cuda/transformer.h) of the run's model, which
// runs forward, backward, the global-norm clip and AdamW on the device, FP32 or BF16
// (train.precision). The trainer keeps its CPU model and optimizer as the host copy: they are
// what evaluation, telemetry, checkpoints (SPEC §6, unchanged) and model.safetensors read, and
// what a resumed run uploads from.
//
// The trainer calls it as any TrainingStep (trainer/training_step.h); make_device_step uploads
// the host's state first.
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
#include "trainer/adamw.h"
#include "trainer/training_step.h"

namespace primal {

// The step on the first visible GPU (CUDA_VISIBLE_DEVICES picks it), FP32 or BF16 per
// train.precision, starting from params and optimizer's state. With groups of more than one
// DP rank (collective over them): the GPU of the node-local rank (modulo the visible devices)
// and data parallelism over groups->dp. Throws primal::Error naming train.device, with the
// CUDA runtime's reason, where no device can be used.
std::unique_ptr<TrainingStep> make_device_step(const LoadedConfig& config,
                                               const ParameterStore<float>& params,
                                               AdamW<float>& optimizer,
                                               ProcessGroups* groups = nullptr);

}  // namespace primal
