// The MPI backend of Communicator (host buffers), the process-wide MPI runtime, and the
// helpers that end the whole job when one rank fails.
//
// Threading: MPI is initialised with MPI_THREAD_FUNNELED. Every call into comm/ comes from
// the thread that constructed MpiRuntime (OpenMP regions may run between calls).
//
// Blocking collectives are non-blocking MPI calls finished by a poll loop (MPI_Test; with
// sched_yield between polls when ranks outnumber cores, see IdleWait) with a deadline: the
// watchdog needs no extra thread, and a rank that never joins ends the job instead of hanging.
#pragma once

#include <mpi.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace primal {

enum class AllReduceAlgorithm {
  // Direct reduce-scatter + all-gather over point-to-point messages: rank r receives block r
  // from every rank, adds the contributions in rank order ((x0 + x1) + x2) + ..., and sends
  // the result back. The same bus traffic as a ring, 2(n-1)/n of the bytes per rank, and
  // the same bits whatever the count, the block boundaries or the timing.
  kRankOrdered,
  // MPI_Iallreduce / MPI_Ireduce_scatter_block: the library's choice of algorithm, which
  // can change the order of the sum with the message size (deterministic for a fixed size
  // and layout only).
  kMpi,
};

// How a rank waits inside a blocking collective: spinning on MPI_Test (fastest when every
// rank has a core of its own) or giving its core away between polls (needed when ranks
// outnumber cores: the rank being waited for may need that core). kAuto: yield when this
// node runs more ranks than the CPUs they may run on (their affinity masks together).
enum class IdleWait { kAuto, kSpin, kYield };

struct MpiOptions {
  double timeout_s = 300;                // watchdog of blocking calls; <= 0: wait forever
  IdleWait idle_wait = IdleWait::kAuto;  // MpiRuntime resolves kAuto for the whole job
  AllReduceAlgorithm algorithm = AllReduceAlgorithm::kRankOrdered;
  // kRankOrdered all-reduces of at most this many bytes send every rank's whole buffer to
  // every rank and reduce it everywhere: one round of messages (latency) instead of two.
  size_t replicated_max_bytes = size_t{64} << 10;
  // kRankOrdered: blocks travel and are reduced in segments of this many bytes, so that the
  // reduction of one segment overlaps the transfer of the next (any value gives the same bits).
  size_t segment_bytes = size_t{1} << 20;
};

// Exit code of a job ended by the watchdog.
inline constexpr int kWatchdogExitCode = 3;

class MpiWork;

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm` (freed by the destructor).
  MpiCommunicator(MPI_Comm comm, std::string name, MpiOptions options);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  int world_rank() const override { return world_ranks_[rank_]; }
  // World rank of this group's rank r.
  int world_rank_of(int r) const { return world_ranks_[r]; }
  double timeout_s() const override { return options_.timeout_s; }
  void set_timeout_s(double seconds) override { options_.timeout_s = seconds; }
  AllReduceAlgorithm algorithm() const { return options_.algorithm; }
  void set_algorithm(AllReduceAlgorithm a) { options_.algorithm = a; }
  void set_replicated_max_bytes(size_t bytes) { options_.replicated_max_bytes = bytes; }
  void set_segment_bytes(size_t bytes) { options_.segment_bytes = bytes; }
  IdleWait idle_wait() const { return options_.idle_wait; }
  MPI_Comm mpi_comm() const { return comm_; }

  void barrier() override;
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;
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
  friend class MpiWork;
  void check_host(Place place, const char* collective) const;
  // Polls `done` until it returns true; past the deadline prints the watchdog line (with
  // `detail` when it has one) and aborts the job.
  template <typename Done, typename Detail>
  void watch(const char* collective, Done&& done, Detail&& detail);
  void watch_request(const char* collective, MPI_Request& request);
  [[noreturn]] void watchdog_abort(const char* collective, const std::string& detail);
  int next_tag_base();

  MPI_Comm comm_ = MPI_COMM_NULL;
  std::string name_;
  MpiOptions options_;
  int rank_ = 0, size_ = 1;
  std::vector<int> world_ranks_;
  int tag_ub_ = 32767;
  int64_t sequence_ = 0;  // collectives issued on point-to-point messages, same on all ranks
  std::unique_ptr<MpiWork> blocking_work_;  // reused by the blocking calls
};

// MPI_Init_thread(FUNNELED) on construction, MPI_Finalize on destruction. Works under mpirun
// and srun, and without either (a singleton: world size 1). Also installs a terminate handler
// that prints the exception with the rank and aborts the job.
class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv, MpiOptions options = {});
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  MpiCommunicator& world() { return *world_; }

 private:
  std::unique_ptr<MpiCommunicator> world_;
  bool finalize_ = false;
  int uncaught_at_start_ = 0;
};

// Prints "rank R: message" (rank_label) on stderr and ends the whole job with `code` (MPI_Abort):
// for a fatal error seen by one rank while the others may be waiting for it in a collective.
// Without MPI (not initialised or already finalised) prints and exits this process.
[[noreturn]] void abort_job(const std::string& message, int code = 1);

// Runs body(); an exception escaping it ends the whole job through abort_job(what, code).
int run_or_abort(const std::function<int()>& body, int code = 1);

// This process's rank in MPI_COMM_WORLD (0 when MPI is not running).
int mpi_world_rank();

// hosts[r]: the host name of world rank r when the job's ranks run on more than one host;
// empty on one host (gathered once by MpiRuntime).
const std::vector<std::string>& job_hosts();

// "rank 3", or "rank 3 on node1" when the job spans hosts: how errors and the watchdog name a
// rank.
std::string rank_label(int world_rank);

}  // namespace primal
