#include "comm/nccl/nccl_communicator.h"

#include <sched.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <future>

#include "core/cuda/check.h"

namespace primal {
namespace {

ncclDataType_t nccl_type(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return ncclFloat32;
    case DataType::kFloat64:
      return ncclFloat64;
    case DataType::kInt64:
      return ncclInt64;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(DataType type, ReduceOp op, const char* collective) {
  if (op == ReduceOp::kSum) return ncclSum;
  if (type == DataType::kInt64)
    throw Error(std::string(collective) + ": average of int64 values is not defined; use sum");
  return ncclAvg;
}

bool env_int(const char* name, int& value) {
  const char* s = std::getenv(name);
  if (!s || !*s) return false;
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (*end != '\0' || v < 0) return false;
  value = int(v);
  return true;
}

}  // namespace

int node_local_rank(MpiCommunicator& world) {
  int local = 0;
  if (env_int("OMPI_COMM_WORLD_LOCAL_RANK", local) || env_int("SLURM_LOCALID", local)) return local;
  MPI_Comm node;
  MPI_Comm_split_type(world.mpi_comm(), MPI_COMM_TYPE_SHARED, world.rank(), MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local);
  MPI_Comm_free(&node);
  return local;
}

int select_local_device(MpiCommunicator& world) {
  const int local = node_local_rank(world);
  const int devices = cuda::device_count();
  if (devices == 0)
    throw Error("rank " + std::to_string(world.world_rank()), cuda::no_device_reason());
  const int device = local % devices;
  cuda::set_device(device);
  return device;
}

Error NcclCommunicator::nccl_error(ncclResult_t result, const char* call) const {
  const char* last = comm_ ? ncclGetLastError(comm_) : nullptr;
  return Error("rank " + std::to_string(world_rank()) + ": " + call + " on group " + name_,
               std::string(ncclGetErrorString(result)) +
                   (last && *last ? std::string(" (") + last + ")" : ""));
}

void NcclCommunicator::check_nccl(ncclResult_t result, const char* call) const {
  if (result != ncclSuccess) throw nccl_error(result, call);
}

void NcclCommunicator::check_async(const char* collective) {
  ncclResult_t async = ncclSuccess;
  check_nccl(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError");
  if (async == ncclSuccess || async == ncclInProgress) return;
  // NCCL's rule for an asynchronous error: abort the communicator first. That stops its
  // kernels, so the streams that wait on them drain (a bucket's destructor synchronises its
  // stream while the error unwinds), and then the error goes on.
  const Error error = nccl_error(async, collective);
  ncclCommAbort(comm_);
  comm_ = nullptr;
  throw error;
}

NcclCommunicator::NcclCommunicator(MpiCommunicator& mpi, std::string name)
    : mpi_(&mpi), name_(std::move(name)), timeout_s_(mpi.timeout_s()) {
  device_ = cuda::current_device();
  // Rank 0 makes the id and sends its result with it, through the MPI backend's watched
  // broadcast: when ncclGetUniqueId fails there (or rank 0 is gone), every rank ends with the
  // error instead of waiting for an id that never comes.
  struct Root {
    ncclUniqueId id;
    int64_t result;
  };
  std::array<int64_t, (sizeof(Root) + sizeof(int64_t) - 1) / sizeof(int64_t)> words{};
  Root root{};
  if (mpi_->rank() == 0) root.result = ncclGetUniqueId(&root.id);
  std::memcpy(words.data(), &root, sizeof root);
  mpi_->broadcast(words.data(), int64_t(words.size()), 0);
  std::memcpy(&root, words.data(), sizeof root);
  check_nccl(ncclResult_t(root.result), "ncclGetUniqueId (on rank 0)");
  // ncclCommInitRank returns once every rank of the group has called it, so a rank that died or
  // hangs before would hold the others for ever: it runs on a helper thread (on this rank's
  // device; the current device is per thread) while this one watches the clock, as watch()
  // does for the collectives. Past the timeout abort_job ends the process, helper and all.
  std::future<ncclResult_t> init = std::async(std::launch::async, [this, &root] {
    cuda::set_device(device_);
    return ncclCommInitRank(&comm_, mpi_->size(), root.id, mpi_->rank());
  });
  if (timeout_s_ > 0 &&
      init.wait_for(std::chrono::duration<double>(timeout_s_)) != std::future_status::ready)
    abort_job(timeout_message("ncclCommInitRank"), kWatchdogExitCode);
  check_nccl(init.get(), "ncclCommInitRank");
  blocking_event_ = std::make_unique<cuda::Event>();
}

std::string NcclCommunicator::timeout_message(const char* call) const {
  return std::string(call) + " on group " + name_ + " (" + std::to_string(size()) +
         " ranks) did not complete in " + format_number(timeout_s_) + " s; aborting";
}

NcclCommunicator::NcclCommunicator(std::unique_ptr<MpiCommunicator> owned, std::string name)
    : NcclCommunicator(*owned, std::move(name)) {
  owned_ = std::move(owned);
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_) ncclCommDestroy(comm_);
}

void NcclCommunicator::barrier() {
  mpi_->barrier();
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key, const std::string& name) {
  std::unique_ptr<Communicator> child = mpi_->split(color, key, name);
  std::unique_ptr<MpiCommunicator> mpi(static_cast<MpiCommunicator*>(child.release()));
  return std::unique_ptr<Communicator>(new NcclCommunicator(std::move(mpi), name));
}

void NcclCommunicator::abort(const std::string& message, int code) {
  if (comm_) ncclCommAbort(comm_);
  comm_ = nullptr;
  abort_job(message, code);
}

cudaStream_t NcclCommunicator::stream_of(Place place, const char* collective) const {
  if (place.device != Device::kCuda)
    throw Error(std::string(collective) + " on group " + name_,
                "the NCCL backend takes device buffers: Place{Device::kCuda, stream}");
  return static_cast<cudaStream_t>(place.stream);
}

void NcclCommunicator::watch(const char* collective, const cuda::Event& event) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  while (!event.query()) {
    check_async(collective);
    if (timeout_s_ > 0 && std::chrono::duration<double>(Clock::now() - start).count() > timeout_s_)
      abort(timeout_message(collective), kWatchdogExitCode);
    sched_yield();
  }
}

void NcclCommunicator::do_all_reduce(void* data, int64_t count, DataType type, ReduceOp op,
                                     Place place) {
  const cudaStream_t stream = stream_of(place, "all_reduce");
  check_nccl(ncclAllReduce(data, data, size_t(count), nccl_type(type),
                           nccl_op(type, op, "all_reduce"), comm_, stream),
             "ncclAllReduce");
  blocking_event_->record(stream);
  watch("all_reduce", *blocking_event_);
}

std::unique_ptr<Work> NcclCommunicator::do_all_reduce_async(void* data, int64_t count,
                                                            DataType type, ReduceOp op,
                                                            std::unique_ptr<Work> recycle,
                                                            Place place) {
  const cudaStream_t stream = stream_of(place, "all_reduce_async");
  std::unique_ptr<NcclWork> work;
  if (auto* w = dynamic_cast<NcclWork*>(recycle.get()); w && w->comm_ == this) {
    recycle.release();
    work.reset(w);
  } else {
    work = std::make_unique<NcclWork>(this);
  }
  check_nccl(ncclAllReduce(data, data, size_t(count), nccl_type(type),
                           nccl_op(type, op, "all_reduce"), comm_, stream),
             "ncclAllReduce");
  work->event_.record(stream);
  return work;
}

void NcclCommunicator::do_broadcast(void* data, int64_t count, DataType type, int root,
                                    Place place) {
  const cudaStream_t stream = stream_of(place, "broadcast");
  check_nccl(ncclBroadcast(data, data, size_t(count), nccl_type(type), root, comm_, stream),
             "ncclBroadcast");
  blocking_event_->record(stream);
  watch("broadcast", *blocking_event_);
}

void NcclCommunicator::do_all_gather(const void* send, void* recv, int64_t count, DataType type,
                                     Place place) {
  const cudaStream_t stream = stream_of(place, "all_gather");
  check_nccl(ncclAllGather(send, recv, size_t(count), nccl_type(type), comm_, stream),
             "ncclAllGather");
  blocking_event_->record(stream);
  watch("all_gather", *blocking_event_);
}

void NcclCommunicator::do_reduce_scatter(const void* send, void* recv, int64_t count_per_rank,
                                         DataType type, ReduceOp op, Place place) {
  const cudaStream_t stream = stream_of(place, "reduce_scatter");
  check_nccl(ncclReduceScatter(send, recv, size_t(count_per_rank), nccl_type(type),
                               nccl_op(type, op, "reduce_scatter"), comm_, stream),
             "ncclReduceScatter");
  blocking_event_->record(stream);
  watch("reduce_scatter", *blocking_event_);
}

void NcclWork::wait() {
  comm_->watch(collective_, event_);
}

bool NcclWork::test() {
  comm_->check_async(collective_);
  return event_.query();
}

}  // namespace primal
