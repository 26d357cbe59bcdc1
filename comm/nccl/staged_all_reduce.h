// Host values all-reduced through a device communicator (comm/nccl/device_communicator.h): copied
// there (a blocking, watched call), copied back. For the few doubles that stay on the host
// between device steps, e.g. the KSVD partial sums DeviceTransformer::reduce_ksvd hands over
// (one small call per step, on the communicator that spans the loss's ranks).
#pragma once

#include <cuda_runtime_api.h>

#include <span>

#include "comm/nccl/nccl_communicator.h"
#include "core/cuda/allocator.h"

namespace primal {

class StagedAllReduce {
 public:
  // comm must outlive this object; stream: on comm's device.
  StagedAllReduce(DeviceCommunicator& comm, cudaStream_t stream) : comm_(comm), stream_(stream) {}

  // values[i] = op over ranks of values[i], on every rank. The device buffer grows to the
  // largest count seen and is then reused.
  void all_reduce(std::span<double> values, ReduceOp op = ReduceOp::kSum);

 private:
  DeviceCommunicator& comm_;
  cudaStream_t stream_;
  cuda::CachingAllocator allocator_;
  cuda::DeviceBuffer<double> buffer_;
};

}  // namespace primal
