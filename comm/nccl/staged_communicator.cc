#include "comm/nccl/staged_communicator.h"

#include <cuda_runtime_api.h>

#include <utility>

#include "comm/nccl/nccl_communicator.h"
#include "core/cuda/check.h"

namespace primal {
namespace {

// f(T{}) with T the C++ type of `type`.
template <typename F>
void with_type(DataType type, F&& f) {
  switch (type) {
    case DataType::kFloat32:
      return f(float{});
    case DataType::kFloat64:
      return f(double{});
    case DataType::kInt64:
      return f(int64_t{});
  }
}

cudaStream_t stream_of(void* stream) {
  return static_cast<cudaStream_t>(stream);
}

// A collective that completed before its Work was returned.
class CompletedWork final : public Work {
 public:
  void wait() override {}
  bool test() override { return true; }
};

}  // namespace

StagedCommunicator::StagedCommunicator(MpiCommunicator& mpi, std::string name)
    : mpi_(&mpi), name_(std::move(name)) {}

StagedCommunicator::StagedCommunicator(std::unique_ptr<MpiCommunicator> owned, std::string name)
    : owned_(std::move(owned)), mpi_(owned_.get()), name_(std::move(name)) {}

std::unique_ptr<Communicator> StagedCommunicator::split(int color, int key,
                                                        const std::string& name) {
  std::unique_ptr<Communicator> sub = mpi_->split(color, key, name);
  auto* mpi = static_cast<MpiCommunicator*>(sub.release());
  return std::unique_ptr<Communicator>(
      new StagedCommunicator(std::unique_ptr<MpiCommunicator>(mpi), name));
}

std::byte* StagedCommunicator::to_host(const void* device, size_t bytes, void* stream, int which) {
  std::vector<std::byte>& host = staging_[which];
  if (host.size() < bytes) host.resize(bytes);
  PRIMAL_CUDA_CHECK(
      cudaMemcpyAsync(host.data(), device, bytes, cudaMemcpyDeviceToHost, stream_of(stream)));
  PRIMAL_CUDA_CHECK(cudaStreamSynchronize(stream_of(stream)));
  return host.data();
}

void StagedCommunicator::to_device(void* device, const std::byte* host, size_t bytes,
                                   void* stream) {
  PRIMAL_CUDA_CHECK(
      cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream_of(stream)));
  PRIMAL_CUDA_CHECK(cudaStreamSynchronize(stream_of(stream)));
}

template <typename F>
void StagedCommunicator::in_place(void* data, int64_t count, DataType type, Place place,
                                  F&& collective) {
  if (place.device == Device::kCpu) {
    with_type(type, [&]<typename T>(T) { collective(static_cast<T*>(data)); });
    return;
  }
  const size_t bytes = data_type_size(type) * size_t(count);
  std::byte* host = to_host(data, bytes, place.stream, 0);
  with_type(type, [&]<typename T>(T) { collective(reinterpret_cast<T*>(host)); });
  to_device(data, host, bytes, place.stream);
}

void StagedCommunicator::do_all_reduce(void* data, int64_t count, DataType type, ReduceOp op,
                                       Place place) {
  in_place(data, count, type, place, [&](auto* values) { mpi_->all_reduce(values, count, op); });
}

std::unique_ptr<Work> StagedCommunicator::do_all_reduce_async(void* data, int64_t count,
                                                              DataType type, ReduceOp op,
                                                              std::unique_ptr<Work> recycle,
                                                              Place place) {
  do_all_reduce(data, count, type, op, place);
  return recycle ? std::move(recycle) : std::make_unique<CompletedWork>();
}

void StagedCommunicator::do_broadcast(void* data, int64_t count, DataType type, int root,
                                      Place place) {
  in_place(data, count, type, place, [&](auto* values) { mpi_->broadcast(values, count, root); });
}

void StagedCommunicator::do_all_gather(const void* send, void* recv, int64_t count, DataType type,
                                       Place place) {
  if (place.device == Device::kCpu) {
    with_type(type, [&]<typename T>(T) {
      mpi_->all_gather(static_cast<const T*>(send), static_cast<T*>(recv), count);
    });
    return;
  }
  const size_t bytes = data_type_size(type) * size_t(count);
  const std::byte* host_send = to_host(send, bytes, place.stream, 0);
  std::vector<std::byte>& host_recv = staging_[1];
  if (host_recv.size() < bytes * size_t(size())) host_recv.resize(bytes * size_t(size()));
  with_type(type, [&]<typename T>(T) {
    mpi_->all_gather(reinterpret_cast<const T*>(host_send), reinterpret_cast<T*>(host_recv.data()),
                     count);
  });
  to_device(recv, host_recv.data(), bytes * size_t(size()), place.stream);
}

void StagedCommunicator::do_reduce_scatter(const void* send, void* recv, int64_t count_per_rank,
                                           DataType type, ReduceOp op, Place place) {
  if (place.device == Device::kCpu) {
    with_type(type, [&]<typename T>(T) {
      mpi_->reduce_scatter(static_cast<const T*>(send), static_cast<T*>(recv), count_per_rank, op);
    });
    return;
  }
  const size_t bytes = data_type_size(type) * size_t(count_per_rank);
  const std::byte* host_send = to_host(send, bytes * size_t(size()), place.stream, 0);
  std::vector<std::byte>& host_recv = staging_[1];
  if (host_recv.size() < bytes) host_recv.resize(bytes);
  with_type(type, [&]<typename T>(T) {
    mpi_->reduce_scatter(reinterpret_cast<const T*>(host_send),
                         reinterpret_cast<T*>(host_recv.data()), count_per_rank, op);
  });
  to_device(recv, host_recv.data(), bytes, place.stream);
}

std::unique_ptr<DeviceCommunicator> make_device_communicator(MpiCommunicator& mpi, std::string name,
                                                             DeviceTransport transport) {
  if (transport == DeviceTransport::kStagedMpi) {
    return std::make_unique<StagedCommunicator>(mpi, std::move(name));
  }
  return std::make_unique<NcclCommunicator>(mpi, std::move(name));
}

}  // namespace primal
