#include "comm/nccl/staged_all_reduce.h"

#include "core/cuda/check.h"

namespace primal {

void StagedAllReduce::all_reduce(std::span<double> values, ReduceOp op) {
  const int64_t n = int64_t(values.size());
  if (n == 0) return;
  if (buffer_.size() < n) {
    buffer_.reset();
    buffer_ = cuda::DeviceBuffer<double>(allocator_, n, stream_);
  }
  const size_t bytes = sizeof(double) * size_t(n);
  cuda::copy_to_device(buffer_.data(), values.data(), bytes, stream_);
  comm_.all_reduce(buffer_.data(), n, op, Place{Device::kCuda, stream_});  // waits (watched)
  cuda::copy_to_host(values.data(), buffer_.data(), bytes, stream_);
  PRIMAL_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace primal
