// What the device model needs from its tensor-parallel group (SPEC §5), as model/tensor_parallel.h
// is for the CPU model: the ranks that hold the other heads of every attention layer and the
// other slices of every MLP. comm/nccl implements it over a device communicator (NCCL, or
// staged through MPI for ranks that share a GPU); the model never sees those libraries.
//
// Every sum is enqueued on the caller's stream, after the kernels before it and before the ones
// after it, without a host wait: the model calls it where the CPU model calls tp_all_reduce.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace primal::cuda {

class DeviceTensorParallelGroup {
 public:
  virtual ~DeviceTensorParallelGroup() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // data[0, count) := the sum over the group, in place, ordered on stream.
  virtual void all_reduce_sum(float* data, int64_t count, cudaStream_t stream) = 0;
  virtual void all_reduce_sum(double* data, int64_t count, cudaStream_t stream) = 0;
  // Waits on the host for the work enqueued on stream so far, watched like the group's
  // collectives (that work may wait on a peer that died): `what` names the wait.
  virtual void wait(cudaStream_t stream, const char* what) = 0;
};

}  // namespace primal::cuda
