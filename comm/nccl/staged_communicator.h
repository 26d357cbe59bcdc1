// The STAGED_MPI backend of DeviceCommunicator (comm/nccl/device_communicator.h): each
// collective waits for its stream, copies the device buffer to host memory, runs the MPI
// group's collective there (watched, rank-ordered sums: comm/mpi/mpi_communicator.h) and copies
// the result back before it returns. Nothing needs a GPU of its own, so 2-4 ranks that share
// one device run the tensor- and data-parallel device code that NCCL runs on a GPU each. Every
// collective is a host round trip: for tests and small checks only, chosen by
// parallel.device_transport, never instead of NCCL by itself.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "comm/nccl/device_communicator.h"

namespace primal {

class StagedCommunicator final : public DeviceCommunicator {
 public:
  // `mpi` must outlive this communicator.
  StagedCommunicator(MpiCommunicator& mpi, std::string name);

  int rank() const override { return mpi_->rank(); }
  int size() const override { return mpi_->size(); }
  const std::string& name() const override { return name_; }
  int world_rank() const override { return mpi_->world_rank(); }
  double timeout_s() const override { return mpi_->timeout_s(); }
  void set_timeout_s(double seconds) override { mpi_->set_timeout_s(seconds); }

  void barrier() override { mpi_->barrier(); }
  // Every collective has completed on return, so the work before `event` is this rank's own.
  void wait_event(const cuda::Event& event, const char*) override { event.synchronize(); }
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;
  [[noreturn]] void abort(const std::string& message, int code) override {
    mpi_->abort(message, code);
  }

 protected:
  void do_all_reduce(void* data, int64_t count, DataType type, ReduceOp op, Place place) override;
  std::unique_ptr<Work> do_all_reduce_async(void* data, int64_t count, DataType type, ReduceOp op,
                                            std::unique_ptr<Work> recycle, Place place) override;
  void do_broadcast(void* data, int64_t count, DataType type, int root, Place place) override;
  void do_all_gather(const void* send, void* recv, int64_t count, DataType type,
                     Place place) override;
  void do_reduce_scatter(const void* send, void* recv, int64_t count_per_rank, DataType type,
                         ReduceOp op, Place place) override;

 private:
  StagedCommunicator(std::unique_ptr<MpiCommunicator> owned, std::string name);
  // The host copy of `bytes` of device memory at `device` (after the stream's earlier work),
  // in staging buffer `which` (0 or 1: a collective with a separate send buffer uses both).
  std::byte* to_host(const void* device, size_t bytes, void* stream, int which);
  // device := the host bytes, then the stream is synchronised (the buffer is reused).
  void to_device(void* device, const std::byte* host, size_t bytes, void* stream);
  // collective(T* values) on the count values of `type` at data: in place on the host, or on
  // the host copy of a device buffer, copied back.
  template <typename F>
  void in_place(void* data, int64_t count, DataType type, Place place, F&& collective);

  std::unique_ptr<MpiCommunicator> owned_;  // set for groups made by split()
  MpiCommunicator* mpi_;
  std::string name_;
  std::vector<std::byte> staging_[2];
};

}  // namespace primal
