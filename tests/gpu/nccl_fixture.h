// The fixture of the device-communicator tests under mpirun (labels gpu;mpi). With NCCL: one
// GPU per rank, every rank checks that it has a device of its own; with STAGED_MPI the ranks
// may share one. Where any rank lacks what it needs, every rank reports SKIPPED with the reason
// (the runtime's, or too few GPUs for the node's ranks). Otherwise it owns a device
// communicator over the world, a stream and an allocator, and copies to and from the device on
// that stream.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "comm/nccl/device_communicator.h"
#include "comm/nccl/nccl_communicator.h"
#include "core/cuda/allocator.h"
#include "tests/mpi/mpi_test_env.h"

namespace primal::testing {

class NcclFixture : public ::testing::Test {
 protected:
  // group: the name the communicator reports in errors and watchdog lines.
  explicit NcclFixture(std::string group, DeviceTransport transport = DeviceTransport::kNccl)
      : group_(std::move(group)), transport_(transport) {}

  void SetUp() override {
    MpiCommunicator& w = world();
    const int devices = cuda::device_count();
    const bool shared = transport_ == DeviceTransport::kStagedMpi;
    const bool missing = shared ? devices == 0 : node_local_rank(w) >= devices;
    if (any_rank(w, missing)) {
      GTEST_SKIP() << (devices == 0 ? cuda::no_device_reason()
                                    : "fewer GPUs than ranks on a node (" +
                                          std::to_string(devices) + " visible)");
    }
    select_local_device(w);
    comm_ = make_device_communicator(w, group_, transport_);
    stream_ = std::make_unique<cuda::Stream>();
    allocator_ = std::make_unique<cuda::CachingAllocator>();
  }
  void TearDown() override {
    if (stream_) stream_->synchronize();
    comm_.reset();  // before the allocator and stream: no collective is in flight
  }

  template <typename T>
  cuda::DeviceBuffer<T> upload(const std::vector<T>& host) {
    cuda::DeviceBuffer<T> d(*allocator_, int64_t(host.size()), stream_->get());
    cuda::copy_to_device(d.data(), host.data(), d.bytes(), stream_->get());
    return d;
  }
  // Enqueued on the stream after everything before it; waits for it.
  template <typename T>
  std::vector<T> download(const cuda::DeviceBuffer<T>& d) {
    std::vector<T> host(d.size());
    cuda::copy_to_host(host.data(), d.data(), d.bytes(), stream_->get());
    stream_->synchronize();
    return host;
  }
  Place place() const { return {Device::kCuda, stream_->get()}; }

  std::string group_;
  DeviceTransport transport_;
  std::unique_ptr<DeviceCommunicator> comm_;
  std::unique_ptr<cuda::Stream> stream_;
  std::unique_ptr<cuda::CachingAllocator> allocator_;
};

}  // namespace primal::testing
