// Tensor and data parallelism of the device step (train.device CUDA on P > 1 processes, SPEC
// §5). One GPU per process (or ranks sharing one with parallel.device_transport STAGED_MPI:
// comm/nccl/device_communicator.h).
//
// Tensor parallelism (parallel.tp T > 1): the TP group's device communicator is the device
// model's DeviceTensorParallelGroup (model/cuda/tensor_parallel.h); each rank's model holds its
// shard and sums over the group on its stream, without a host wait.
//
// Data parallelism: each rank's cuda::DeviceTransformer trains on its share of the
// micro-batch, and
//   - the gradients are averaged over the DP group in buckets (parallel.bucket_mb)
//     (comm/nccl/device_gradient_buckets.h), each bucket issued as soon as backward has
//     enqueued the last gradient kernel of its parameters (grads_final, last layer first),
//     on the last micro-batch of a step only: earlier ones add into the local gradients, as
//     the CPU trainer's buckets do;
//   - with parallel.ksvd_sync GLOBAL the KSVD partial sums are summed over DP through NCCL
//     (comm/nccl/staged_all_reduce.h) in every training forward, the t-sums divided by the DP
//     size and d loss / d (e, r) scaled by it (ksvd_data_grad_scale), as the CPU trainer's
//     reduce_ksvd does; LOCAL: each rank's own sums, no collective;
//   - the compute stream waits for every bucket (wait_all) before the gradients are scaled,
//     clipped and stepped.
// The device communicators span ProcessGroups::tp and ::dp (MPI communicators) with
// parallel.watchdog_s as their timeout. Built only with PRIMAL_CUDA; where NCCL was not found
// at build time, device_data_parallel_unavailable.cc throws instead (config validation refuses
// such a job first).
#pragma once

#include <memory>

#include "comm/process_groups.h"
#include "configs/config.h"
#include "model/cuda/transformer.h"

namespace primal {

class DeviceDataParallel {
 public:
  virtual ~DeviceDataParallel() = default;
  // Between a micro-batch's forward and its backward; last: the step's last micro-batch,
  // whose backward makes the gradients final and issues the buckets.
  virtual void before_backward(bool last) = 0;
  // The last micro-batch's backward has enqueued the last gradient kernel of layer (-1: the
  // rest; after the TP sums of its replicated gradients): the buckets it completes are issued.
  // Called for the last micro-batch only.
  virtual void grads_final(int layer) = 0;
  // After the last micro-batch's backward: the compute stream waits (on the device) for every
  // bucket's all-reduce. Does not block the host.
  virtual void after_backward() = 0;
  // "data parallel over 8 GPUs (NCCL)", for the start-up line.
  virtual std::string describe() const = 0;
};

// Makes this process's GPU current and returns it: the node-local rank modulo the visible
// devices (select_local_device). Collective over groups.world (an MPI communicator).
int select_data_parallel_device(const LoadedConfig& config, ProcessGroups& groups);

// Collective over groups.tp: the TP group's device communicator on the current device, as the
// device model's tensor-parallel group.
std::unique_ptr<cuda::DeviceTensorParallelGroup> make_device_tensor_parallel(
    const LoadedConfig& config, ProcessGroups& groups);

// Collective over groups.dp: joins the DP group's device communicator on the current device
// and installs the KSVD and wait hooks above on model (removed again by the destructor). model
// must outlive the result.
std::unique_ptr<DeviceDataParallel> make_device_data_parallel(
    const LoadedConfig& config, ProcessGroups& groups, cuda::DeviceTransformer<float>& model);
std::unique_ptr<DeviceDataParallel> make_device_data_parallel(
    const LoadedConfig& config, ProcessGroups& groups, cuda::DeviceTransformer<cuda::bf16>& model);

}  // namespace primal
