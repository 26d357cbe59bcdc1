// The NCCL backend of Communicator: collectives on device buffers, each enqueued on the
// caller's stream (Place{Device::kCuda, stream}). MPI orchestrates: rank 0 of a group makes
// the ncclUniqueId and the group's MPI communicator broadcasts it, so one NCCL communicator
// exists per group (world, each TP group, each DP group), made by split() like the MPI ones.
//
// Completion. A blocking call enqueues the collective, records an event after it and waits
// for the event on the host, watched like the MPI backend's calls: past timeout_s() the NCCL
// communicator is aborted and the job ends with the watchdog's line. The async all-reduce
// returns a Work that owns that event: wait() is the watched host wait, test() an event query.
// To overlap without the host, make a compute stream wait on the event (NcclWork::event()).
//
// Sums. NCCL's reduction order depends on its algorithm (ring, tree) and protocol, chosen by
// message size and topology: repeatable for a fixed size and layout, not rank-ordered like the
// MPI backend's. NCCL_ALGO=Ring NCCL_PROTO=Simple fixes the choice.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <memory>
#include <string>

#include "comm/mpi/mpi_communicator.h"
#include "comm/nccl/device_communicator.h"
#include "core/cuda/device.h"

namespace primal {

// The node-local rank of this process: OMPI_COMM_WORLD_LOCAL_RANK (mpirun), SLURM_LOCALID
// (srun), else its rank among the ranks of `world` on the same node (MPI_Comm_split_type).
// Collective over world only in the last case, which every rank then reaches alike.
int node_local_rank(MpiCommunicator& world);
// Makes device (local rank mod the visible devices) current and returns it. Throws
// primal::Error when the process sees no device.
int select_local_device(MpiCommunicator& world);

class NcclWork;

class NcclCommunicator final : public DeviceCommunicator {
 public:
  // Collective over `mpi`: joins an NCCL communicator of the same ranks on the current device.
  // `mpi` must outlive this communicator.
  NcclCommunicator(MpiCommunicator& mpi, std::string name);
  ~NcclCommunicator() override;

  int rank() const override { return mpi_->rank(); }
  int size() const override { return mpi_->size(); }
  const std::string& name() const override { return name_; }
  int world_rank() const override { return mpi_->world_rank(); }
  double timeout_s() const override { return timeout_s_; }
  void set_timeout_s(double seconds) override { timeout_s_ = seconds; }
  ncclComm_t nccl_comm() const { return comm_; }
  int device() const { return device_; }

  // A watched MPI barrier (host-side; device work is not waited for).
  void barrier() override;
  // Waits on the host until `event` (recorded after collectives of this communicator) has
  // completed, watched like a blocking call: NCCL's async errors become an Error, and past
  // timeout_s() the communicator is aborted and the job ends with the watchdog's line. `what`
  // names the collective in those messages.
  void wait_event(const cuda::Event& event, const char* what) override { watch(what, event); }
  // MPI_Comm_split, then a new NCCL communicator over the new group (owning its MPI group).
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;
  // Aborts the NCCL communicator (no rank left inside a kernel), then the job.
  [[noreturn]] void abort(const std::string& message, int code) override;

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
  friend class NcclWork;
  NcclCommunicator(std::unique_ptr<MpiCommunicator> owned, std::string name);
  cudaStream_t stream_of(Place place, const char* collective) const;
  // Waits on the host until `event` completes, watching NCCL's async errors and the deadline.
  void watch(const char* collective, const cuda::Event& event);
  Error nccl_error(ncclResult_t result, const char* call) const;
  void check_nccl(ncclResult_t result, const char* call) const;
  // NCCL's asynchronous error of this communicator, if any: aborts the communicator, throws.
  void check_async(const char* collective);
  // The watchdog's line for `call` on this group, past timeout_s().
  std::string timeout_message(const char* call) const;

  std::unique_ptr<MpiCommunicator> owned_;  // set for groups made by split()
  MpiCommunicator* mpi_;
  std::string name_;
  double timeout_s_;
  int device_ = 0;
  ncclComm_t comm_ = nullptr;
  std::unique_ptr<cuda::Event> blocking_event_;
};

// The Work of an async NCCL collective: an event recorded on the stream after it.
class NcclWork final : public Work {
 public:
  explicit NcclWork(NcclCommunicator* comm) : comm_(comm) {}
  void wait() override;
  bool test() override;
  const cuda::Event& event() const { return event_; }

 private:
  friend class NcclCommunicator;
  NcclCommunicator* comm_;
  cuda::Event event_;
  const char* collective_ = "all_reduce";
};

}  // namespace primal
