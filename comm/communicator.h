// Communicator: collectives over a group of ranks, one interface for several backends
// (c10d-style). The MPI backend (comm/mpi/) moves host memory; an NCCL backend for device
// buffers plugs in behind the same calls (see Place).
//
// Every collective is called by every rank of the group, in the same order, with the same
// count. Sums are deterministic: they never depend on timing, and the MPI backend's default
// algorithm adds the ranks' contributions in rank order, ((x0 + x1) + x2) + ..., for every
// element whatever the count or the element's position in the buffer, so a bucketed
// all-reduce equals one over the whole buffer bit for bit, and the async path equals the
// blocking one.
//
// Blocking calls are watched: one that does not complete within timeout_s() prints
//   rank R: all_reduce on group dp (2 ranks) did not complete in 30 s; aborting
// on stderr and aborts the whole job (no rank is left hanging).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>

#include "core/error.h"
#include "core/tensor.h"

namespace primal {

enum class ReduceOp { kSum, kAverage };  // average: the sum divided by size()
enum class DataType { kFloat32, kFloat64, kInt64 };

template <typename T>
concept CommScalar =
    std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, int64_t>;

template <CommScalar T>
constexpr DataType data_type_of() {
  if constexpr (std::is_same_v<T, float>) return DataType::kFloat32;
  if constexpr (std::is_same_v<T, double>) return DataType::kFloat64;
  return DataType::kInt64;
}
size_t data_type_size(DataType type);
const char* reduce_op_name(ReduceOp op);

// Where the buffers of a call live and, for device buffers, the stream the collective is
// ordered on. The MPI backend takes host buffers (Device::kCpu) and blocks or returns a Work;
// an NCCL backend takes Device::kCuda with stream = a cudaStream_t and enqueues the
// collective on it, its Work then waiting on an event recorded after it.
struct Place {
  Device device = Device::kCpu;
  void* stream = nullptr;
};

// Handle of a non-blocking collective. The buffers belong to the collective until wait()
// returns or test() has returned true.
class Work {
 public:
  virtual ~Work() = default;
  // Blocks until complete (watched like every blocking call).
  virtual void wait() = 0;
  // Drives progress and returns whether the collective has completed. Cheap: call it from
  // time to time while computing, as MPI moves data only inside MPI calls.
  virtual bool test() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;  // rank in this group
  virtual int size() const = 0;
  virtual const std::string& name() const = 0;  // "world", "tp", "dp", ...
  // Rank in the world group: the rank that error messages name.
  virtual int world_rank() const = 0;

  // Seconds a blocking call may wait before the job is aborted; <= 0 waits forever.
  // Groups made by split() start with their parent's value.
  virtual double timeout_s() const = 0;
  virtual void set_timeout_s(double seconds) = 0;

  // data[i] = op over ranks of data[i], in place, on every rank.
  template <CommScalar T>
  void all_reduce(T* data, int64_t count, ReduceOp op = ReduceOp::kSum, Place place = {}) {
    do_all_reduce(data, count, data_type_of<T>(), op, place);
  }
  // Starts an all-reduce and returns at once. `recycle`, a completed Work from an earlier
  // call on this communicator, is re-armed instead of allocating a new one (steady-state
  // training steps allocate nothing).
  template <CommScalar T>
  std::unique_ptr<Work> all_reduce_async(T* data, int64_t count, ReduceOp op = ReduceOp::kSum,
                                         std::unique_ptr<Work> recycle = nullptr,
                                         Place place = {}) {
    return do_all_reduce_async(data, count, data_type_of<T>(), op, std::move(recycle), place);
  }
  // data on every rank = data on root.
  template <CommScalar T>
  void broadcast(T* data, int64_t count, int root, Place place = {}) {
    do_broadcast(data, count, data_type_of<T>(), root, place);
  }
  // recv[r*count .. (r+1)*count) = send of rank r; recv holds size()*count values.
  template <CommScalar T>
  void all_gather(const T* send, T* recv, int64_t count, Place place = {}) {
    do_all_gather(send, recv, count, data_type_of<T>(), place);
  }
  // recv = block rank() of (op over ranks of send); send holds size()*count_per_rank values.
  // Bit for bit the same values as the matching slice of all_reduce.
  template <CommScalar T>
  void reduce_scatter(const T* send, T* recv, int64_t count_per_rank, ReduceOp op = ReduceOp::kSum,
                      Place place = {}) {
    do_reduce_scatter(send, recv, count_per_rank, data_type_of<T>(), op, place);
  }
  virtual void barrier() = 0;

  // Collective over this group: ranks passing the same color form a new group, ordered by
  // key (then by rank here). Like MPI_Comm_split / c10d new_group.
  virtual std::unique_ptr<Communicator> split(int color, int key, const std::string& name) = 0;

  // Prints "rank R: message" on stderr and ends every rank of the job with exit code `code`.
  [[noreturn]] virtual void abort(const std::string& message, int code) = 0;

 protected:
  Communicator() = default;
  virtual void do_all_reduce(void* data, int64_t count, DataType type, ReduceOp op,
                             Place place) = 0;
  virtual std::unique_ptr<Work> do_all_reduce_async(void* data, int64_t count, DataType type,
                                                    ReduceOp op, std::unique_ptr<Work> recycle,
                                                    Place place) = 0;
  virtual void do_broadcast(void* data, int64_t count, DataType type, int root, Place place) = 0;
  virtual void do_all_gather(const void* send, void* recv, int64_t count, DataType type,
                             Place place) = 0;
  virtual void do_reduce_scatter(const void* send, void* recv, int64_t count_per_rank,
                                 DataType type, ReduceOp op, Place place) = 0;
};

// True on every rank when `failed` is true on any rank of the group: lets all ranks agree
// to stop (one message from rank 0, a non-zero exit everywhere) instead of diverging.
bool any_rank(Communicator& comm, bool failed);

}  // namespace primal
