#include "comm/mpi/mpi_communicator.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>

namespace primal {
namespace {

MPI_Datatype mpi_type(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return MPI_FLOAT;
    case DataType::kFloat64:
      return MPI_DOUBLE;
    case DataType::kInt64:
      return MPI_INT64_T;
  }
  return MPI_DATATYPE_NULL;
}

int mpi_count(int64_t count, const char* collective) {
  if (count < 0 || count > INT_MAX)
    throw Error(std::string(collective) + ": count " + std::to_string(count) +
                " is outside what one MPI message carries (0.." + std::to_string(INT_MAX) + ")");
  return static_cast<int>(count);
}

void check_op(DataType type, ReduceOp op, const char* collective) {
  if (type == DataType::kInt64 && op == ReduceOp::kAverage)
    throw Error(std::string(collective) + ": average of int64 values is not defined; use sum");
}

// out[i] = finish(((src[0][i] + src[1][i]) + src[2][i]) + ...): the same additions in the
// same order for every element, whatever block or segment it falls in. `out` may be one of
// the sources: it is written only by the last pass, after that element of every source has
// been read.
template <typename T, typename Finish>
void reduce_in_rank_order(const T* const* src, int n, int64_t count, T* out, Finish finish) {
  if (n == 1) {
    for (int64_t i = 0; i < count; ++i) out[i] = finish(src[0][i]);
    return;
  }
  if (n == 2) {  // one pass, the common case of a data-parallel pair
    const T *a = src[0], *b = src[1];
    for (int64_t i = 0; i < count; ++i) out[i] = finish(a[i] + b[i]);
    return;
  }
  constexpr int64_t kChunk = 1024;  // partial sums stay in L1
  T tmp[kChunk];
  for (int64_t i0 = 0; i0 < count; i0 += kChunk) {
    const int64_t m = std::min(kChunk, count - i0);
    const T *a = src[0] + i0, *b = src[1] + i0, *last = src[n - 1] + i0;
    for (int64_t j = 0; j < m; ++j) tmp[j] = a[j] + b[j];
    for (int p = 2; p < n - 1; ++p) {
      const T* s = src[p] + i0;
      for (int64_t j = 0; j < m; ++j) tmp[j] += s[j];
    }
    T* o = out + i0;
    for (int64_t j = 0; j < m; ++j) o[j] = finish(tmp[j] + last[j]);
  }
}

// The sum, or the average: x / n, computed as x * (1/n) when n is a power of two (the same
// correctly rounded value: 1/n is exact), which is several times cheaper than a division.
template <typename T>
void reduce_in_rank_order(const T* const* src, int n, int64_t count, T* out, bool average) {
  if (!average) return reduce_in_rank_order(src, n, count, out, [](T v) { return v; });
  if ((n & (n - 1)) == 0) {
    const T reciprocal = T{1} / static_cast<T>(n);
    return reduce_in_rank_order(src, n, count, out, [=](T v) { return v * reciprocal; });
  }
  const T divisor = static_cast<T>(n);
  reduce_in_rank_order(src, n, count, out, [=](T v) { return v / divisor; });
}

template <typename T>
void divide_in_place(T* data, int64_t count, int n) {
  const T divisor = static_cast<T>(n);
  for (int64_t i = 0; i < count; ++i) data[i] /= divisor;
}

void divide(void* data, int64_t count, DataType type, int n) {
  if (type == DataType::kFloat32) divide_in_place(static_cast<float*>(data), count, n);
  if (type == DataType::kFloat64) divide_in_place(static_cast<double*>(data), count, n);
}

std::string format_seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

std::vector<std::string>& mutable_job_hosts() {
  static std::vector<std::string> hosts;
  return hosts;
}

void gather_job_hosts(MPI_Comm world) {
  char mine[256] = {};
  gethostname(mine, sizeof mine - 1);
  int n = 1;
  MPI_Comm_size(world, &n);
  std::vector<char> all(sizeof mine * n);
  MPI_Allgather(mine, sizeof mine, MPI_CHAR, all.data(), sizeof mine, MPI_CHAR, world);
  std::vector<std::string> hosts;
  for (int r = 0; r < n; ++r) hosts.emplace_back(&all[sizeof mine * r]);
  if (std::any_of(hosts.begin(), hosts.end(), [&](const std::string& h) { return h != hosts[0]; }))
    mutable_job_hosts() = std::move(hosts);
}

void terminate_handler() {
  std::string what = "terminate called without an active exception";
  if (std::exception_ptr e = std::current_exception()) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      what = x.what();
    } catch (...) {
      what = "unknown exception";
    }
  }
  abort_job(what, 1);
}

}  // namespace

// One collective in flight: the state machine of the rank-ordered all-reduce and
// reduce-scatter, or an MPI request (AllReduceAlgorithm::kMpi). Reused: start_*() re-arms a
// finished one, keeping its scratch memory and request arrays.
//
// The rank-ordered algorithm is pipelined in segments (MpiOptions::segment_bytes): rank r's
// block arrives from every rank segment by segment; each segment is reduced as soon as all of
// its contributions are in (while it is still in cache) and, for an all-reduce, sent back to
// every rank at once, while the next segments are still on their way. Segmenting changes
// which additions run when, never which additions run: the bits do not depend on it.
class MpiWork final : public Work {
 public:
  explicit MpiWork(MpiCommunicator* comm) : comm_(comm) {}
  ~MpiWork() override {
    // A Work dropped while in flight would leave MPI writing into freed memory: finish it.
    if (stage_ != Stage::kIdle && stage_ != Stage::kDone) wait();
  }

  void start_all_reduce(void* data, int64_t count, DataType type, ReduceOp op,
                        const char* collective) {
    begin(type, op, collective);
    auto* bytes = static_cast<std::byte*>(data);
    send_ = bytes;
    out_ = bytes;
    count_ = count;
    if (comm_->algorithm() == AllReduceAlgorithm::kMpi) {
      result_ = out_;
      result_count_ = count;
      requests_.assign(1, MPI_REQUEST_NULL);
      MPI_Iallreduce(MPI_IN_PLACE, data, mpi_count(count, collective), mpi_type(type), MPI_SUM,
                     comm_->comm_, requests_.data());
      stage_ = Stage::kMpi;
      return;
    }
    // Balanced blocks: the first count % n ranks get one element more.
    const int n = comm_->size_;
    offset_.resize(n + 1);
    for (int r = 0; r <= n; ++r) offset_[r] = count / n * r + std::min<int64_t>(r, count % n);
    // Small buffers: every rank gets every buffer and reduces all of it, one round of
    // messages instead of two (the same additions in the same order).
    replicated_ =
        n > 1 && count * esize_ <= static_cast<int64_t>(comm_->options_.replicated_max_bytes);
    gather_ = !replicated_;
    result_ = out_ + my_offset() * esize_;
    start_exchange();
  }

  void start_reduce_scatter(const void* send, void* recv, int64_t count_per_rank, DataType type,
                            ReduceOp op, const char* collective) {
    begin(type, op, collective);
    const int n = comm_->size_;
    send_ = static_cast<const std::byte*>(send);
    out_ = nullptr;
    count_ = count_per_rank * n;
    result_ = static_cast<std::byte*>(recv);
    if (comm_->algorithm() == AllReduceAlgorithm::kMpi) {
      result_count_ = count_per_rank;
      requests_.assign(1, MPI_REQUEST_NULL);
      MPI_Ireduce_scatter_block(send, recv, mpi_count(count_per_rank, collective), mpi_type(type),
                                MPI_SUM, comm_->comm_, requests_.data());
      stage_ = Stage::kMpi;
      return;
    }
    offset_.resize(n + 1);
    for (int r = 0; r <= n; ++r) offset_[r] = count_per_rank * r;
    start_exchange();
  }

  bool test() override {
    switch (stage_) {
      case Stage::kIdle:
      case Stage::kDone:
        return true;
      case Stage::kMpi:
        if (!all_complete()) return false;
        if (op_ == ReduceOp::kAverage) divide(result_, result_count_, type_, comm_->size_);
        stage_ = Stage::kDone;
        return true;
      case Stage::kPipeline:
        reduce_arrived_segments();
        if (gather_) post_gather_receives();
        if (reduced_ < segments(my_count()) || (gather_ && !all_gather_posted()) || !all_complete())
          return false;
        stage_ = Stage::kDone;
        return true;
    }
    return false;
  }

  void wait() override {
    comm_->watch(
        collective_, [this] { return test(); }, [this] { return missing(); });
  }

  bool idle() const { return stage_ == Stage::kIdle || stage_ == Stage::kDone; }
  const MpiCommunicator* comm() const { return comm_; }

 private:
  enum class Stage { kIdle, kPipeline, kMpi, kDone };

  void begin(DataType type, ReduceOp op, const char* collective) {
    check(idle(), "MpiWork: re-armed while a collective is in flight");
    check_op(type, op, collective);
    type_ = type;
    op_ = op;
    replicated_ = false;
    gather_ = false;
    esize_ = static_cast<int64_t>(data_type_size(type));
    collective_ = collective;
  }

  int block_count(int r) const { return static_cast<int>(offset_[r + 1] - offset_[r]); }
  // What this rank reduces, and what it sends to rank p for that in the exchange.
  int64_t my_offset() const { return replicated_ ? 0 : offset_[comm_->rank_]; }
  int my_count() const {
    return replicated_ ? static_cast<int>(count_) : block_count(comm_->rank_);
  }
  int64_t send_offset(int p) const { return replicated_ ? 0 : offset_[p]; }
  int send_count(int p) const { return replicated_ ? static_cast<int>(count_) : block_count(p); }

  // A block of `count` elements goes in segments of seg_ elements, the last one shorter.
  int segments(int64_t count) const { return static_cast<int>((count + seg_ - 1) / seg_); }
  int segment_count(int64_t count, int j) const {
    return static_cast<int>(std::min<int64_t>(seg_, count - int64_t{j} * seg_));
  }
  // Peers in rank order without this rank: k = 0 .. n-2.
  int peer(int k) const { return k < comm_->rank_ ? k : k + 1; }

  // Posts everything of the first round: the receives of this rank's block from every peer and
  // the sends of each peer's block, segment by segment. Request layout (all MPI_REQUEST_NULL
  // until posted): [exchange receives, segment-major | exchange sends, peer-major | gather
  // sends, segment-major | gather receives, peer-major].
  void start_exchange() {
    const int n = comm_->size_;
    mpi_count(replicated_ ? count_ : offset_[1] - offset_[0], collective_);  // fits one message
    tag_ = comm_->next_tag_base();
    seg_ = std::max<int64_t>(1, static_cast<int64_t>(comm_->options_.segment_bytes) / esize_);
    const int mine = my_count();
    const size_t need = static_cast<size_t>(n - 1) * mine * esize_;
    if (need > scratch_bytes_) {
      scratch_.reset(new std::byte[need]);
      scratch_bytes_ = need;
    }
    const int my_segments = segments(mine);
    exchange_sends_.assign(n, 0);
    gather_receives_.assign(n, 0);
    int64_t sends = 0, gather_receives = 0;
    for (int k = 0; k < n - 1; ++k) {
      exchange_sends_[k] = sends;
      sends += segments(send_count(peer(k)));
      gather_receives_[k] = gather_receives;
      gather_receives += gather_ ? segments(block_count(peer(k))) : 0;
    }
    const int64_t per_round = int64_t{my_segments} * (n - 1);
    first_send_ = per_round;
    first_gather_send_ = first_send_ + sends;
    first_gather_receive_ = first_gather_send_ + (gather_ ? per_round : 0);
    requests_.assign(first_gather_receive_ + gather_receives, MPI_REQUEST_NULL);
    peers_.assign(requests_.size(), -1);
    posted_.assign(n, 0);

    const MPI_Datatype dt = mpi_type(type_);
    for (int j = 0; j < my_segments; ++j) {
      for (int k = 0; k < n - 1; ++k) {
        const int64_t i = int64_t{j} * (n - 1) + k;
        MPI_Irecv(slot(peer(k)) + int64_t{j} * seg_ * esize_, segment_count(mine, j), dt, peer(k),
                  tag_, comm_->comm_, &requests_[i]);
        peers_[i] = peer(k);
      }
    }
    for (int k = 0; k < n - 1; ++k) {
      const int p = peer(k), c = send_count(p);
      for (int j = 0; j < segments(c); ++j)
        MPI_Isend(send_ + (send_offset(p) + int64_t{j} * seg_) * esize_, segment_count(c, j), dt, p,
                  tag_, comm_->comm_, &requests_[first_send_ + exchange_sends_[k] + j]);
    }
    reduced_ = 0;
    stage_ = Stage::kPipeline;
  }

  // Reduces, in order, the segments of this rank's block whose contributions have all
  // arrived; for an all-reduce sends each result segment to every peer at once.
  void reduce_arrived_segments() {
    const int n = comm_->size_, mine = my_count();
    while (reduced_ < segments(mine)) {
      const int64_t first = int64_t{reduced_} * (n - 1);
      int flag = 0;
      // data() + first, not &requests_[first]: one rank has no peers and no requests.
      MPI_Testall(n - 1, requests_.data() + first, &flag, MPI_STATUSES_IGNORE);
      if (!flag) return;
      // Replicated, the result overwrites what is being sent: the segment's sends go first.
      for (int k = 0; replicated_ && k < n - 1; ++k) {
        MPI_Test(&requests_[first_send_ + exchange_sends_[k] + reduced_], &flag, MPI_STATUS_IGNORE);
        if (!flag) return;
      }
      const int64_t at = int64_t{reduced_} * seg_;
      const int c = segment_count(mine, reduced_);
      reduce(at, c);
      if (gather_)
        for (int k = 0; k < n - 1; ++k)
          MPI_Isend(result_ + at * esize_, c, mpi_type(type_), peer(k), tag_ + 1, comm_->comm_,
                    &requests_[first_gather_send_ + first + k]);
      ++reduced_;
    }
  }

  // The second round's receives write over what the first round sent: each segment's receive
  // is posted once the send of that segment has completed (MPI forbids touching a send
  // buffer before).
  void post_gather_receives() {
    const int n = comm_->size_;
    for (int k = 0; k < n - 1; ++k) {
      const int p = peer(k), c = block_count(p);
      while (posted_[k] < segments(c)) {
        const int j = posted_[k];
        int flag = 0;
        MPI_Test(&requests_[first_send_ + exchange_sends_[k] + j], &flag, MPI_STATUS_IGNORE);
        if (!flag) break;
        const int64_t i = first_gather_receive_ + gather_receives_[k] + j;
        MPI_Irecv(out_ + (offset_[p] + int64_t{j} * seg_) * esize_, segment_count(c, j),
                  mpi_type(type_), p, tag_ + 1, comm_->comm_, &requests_[i]);
        peers_[i] = p;
        ++posted_[k];
      }
    }
  }

  bool all_gather_posted() const {
    for (int k = 0; k < comm_->size_ - 1; ++k)
      if (posted_[k] < segments(block_count(peer(k)))) return false;
    return true;
  }

  std::byte* slot(int p) const {
    const int me = comm_->rank_;
    return scratch_.get() + static_cast<size_t>(p < me ? p : p - 1) * my_count() * esize_;
  }

  // result[at, at + c) = the rank-ordered reduction of every rank's elements [at, at + c) of
  // this rank's block.
  void reduce(int64_t at, int c) {
    const int n = comm_->size_, me = comm_->rank_;
    const std::byte* own = send_ + (my_offset() + at) * esize_;
    const std::byte* src[kMaxInline];
    std::vector<const std::byte*> many;
    const std::byte** s = src;
    if (n > kMaxInline) {
      many.resize(n);
      s = many.data();
    }
    for (int p = 0; p < n; ++p) s[p] = p == me ? own : slot(p) + at * esize_;
    const bool avg = op_ == ReduceOp::kAverage;
    std::byte* out = result_ + at * esize_;
    switch (type_) {
      case DataType::kFloat32:
        reduce_in_rank_order(reinterpret_cast<const float* const*>(s), n, c,
                             reinterpret_cast<float*>(out), avg);
        break;
      case DataType::kFloat64:
        reduce_in_rank_order(reinterpret_cast<const double* const*>(s), n, c,
                             reinterpret_cast<double*>(out), avg);
        break;
      case DataType::kInt64:
        reduce_in_rank_order(reinterpret_cast<const int64_t* const*>(s), n, c,
                             reinterpret_cast<int64_t*>(out), false);
        break;
    }
  }

  bool all_complete() {
    int flag = 0;
    MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &flag, MPI_STATUSES_IGNORE);
    return flag != 0;
  }

  // The ranks whose data has not arrived, for the watchdog's message. A rank missing from the
  // first round holds up everyone's second round: the first round's missing ranks are named
  // when there are any, the second round's otherwise.
  std::string missing() {
    if (stage_ != Stage::kPipeline) return "";
    const int n = comm_->size_;
    std::vector<char> waiting(n, 0);
    bool any = false;
    auto test_receives = [&](int64_t from, int64_t to) {
      for (int64_t i = from; i < to; ++i) {
        if (peers_[i] < 0 || waiting[peers_[i]]) continue;
        int flag = 0;
        MPI_Test(&requests_[i], &flag, MPI_STATUS_IGNORE);
        if (!flag) waiting[peers_[i]] = any = true;
      }
    };
    test_receives(0, first_send_);
    if (!any && gather_) {
      test_receives(first_gather_receive_, static_cast<int64_t>(requests_.size()));
      // A gather receive not yet posted waits for this rank's own send to that peer.
      for (int k = 0; k < n - 1; ++k)
        if (posted_[k] < segments(block_count(peer(k)))) waiting[peer(k)] = true;
    }
    std::string ranks;
    for (int p = 0; p < n; ++p)
      if (waiting[p]) ranks += (ranks.empty() ? "" : ", ") + rank_label(comm_->world_rank_of(p));
    return ranks.empty() ? "" : "waiting for " + ranks;
  }

  static constexpr int kMaxInline = 64;
  MpiCommunicator* comm_;
  Stage stage_ = Stage::kIdle;
  const char* collective_ = "all_reduce";
  DataType type_ = DataType::kFloat32;
  ReduceOp op_ = ReduceOp::kSum;
  int64_t esize_ = 4, count_ = 0;
  const std::byte* send_ = nullptr;
  std::byte* out_ = nullptr;     // all-reduce: the whole buffer, gathered in place
  std::byte* result_ = nullptr;  // where this rank's reduced block goes
  int64_t result_count_ = 0;     // kMpi: elements of the result
  bool gather_ = false;          // all-reduce by blocks: a second round sends the results back
  bool replicated_ = false;      // all-reduce of a small buffer: one round, every rank reduces all
  int tag_ = 0;
  int64_t seg_ = 1;              // elements per segment
  int reduced_ = 0;              // segments of this rank's block reduced so far
  std::vector<int64_t> offset_;  // block r is [offset_[r], offset_[r+1]) elements
  // Where peer k's requests start within their section of requests_, and how many of its
  // gather receives have been posted.
  std::vector<int64_t> exchange_sends_, gather_receives_;
  std::vector<int> posted_;
  int64_t first_send_ = 0, first_gather_send_ = 0, first_gather_receive_ = 0;
  std::vector<MPI_Request> requests_;
  std::vector<int> peers_;  // the rank each receive request waits for; -1 for sends
  std::unique_ptr<std::byte[]> scratch_;
  size_t scratch_bytes_ = 0;
};

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name, MpiOptions options)
    : comm_(comm), name_(std::move(name)), options_(options) {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  MPI_Group group, world;
  MPI_Comm_group(comm_, &group);
  MPI_Comm_group(MPI_COMM_WORLD, &world);
  std::vector<int> ranks(size_);
  for (int r = 0; r < size_; ++r) ranks[r] = r;
  world_ranks_.resize(size_);
  MPI_Group_translate_ranks(group, size_, ranks.data(), world, world_ranks_.data());
  MPI_Group_free(&group);
  MPI_Group_free(&world);
  int* tag_ub = nullptr;
  int found = 0;
  MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_ub, &found);
  if (found && tag_ub) tag_ub_ = *tag_ub;
  blocking_work_ = std::make_unique<MpiWork>(this);
}

MpiCommunicator::~MpiCommunicator() {
  blocking_work_.reset();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

int MpiCommunicator::next_tag_base() {
  const int64_t slots = tag_ub_ / 2;  // tags 2k (exchange) and 2k+1 (gather)
  return static_cast<int>(2 * (sequence_++ % slots));
}

void MpiCommunicator::check_host(Place place, const char* collective) const {
  if (place.device != Device::kCpu)
    throw Error(std::string(collective) + " on group " + name_ +
                ": the MPI backend takes host buffers; device buffers need the NCCL backend");
}

template <typename Done, typename Detail>
void MpiCommunicator::watch(const char* collective, Done&& done, Detail&& detail) {
  if (done()) return;
  using Clock = std::chrono::steady_clock;
  const double limit = options_.timeout_s;
  const Clock::time_point start = Clock::now();
  const bool yield = options_.idle_wait == IdleWait::kYield;
  for (int polls = 1; !done(); ++polls) {
    if (yield && polls > 32) sched_yield();
    if (limit > 0 && polls % 16 == 0 &&
        std::chrono::duration<double>(Clock::now() - start).count() > limit)
      watchdog_abort(collective, detail());
  }
}

void MpiCommunicator::watch_request(const char* collective, MPI_Request& request) {
  watch(
      collective,
      [&] {
        int flag = 0;
        MPI_Test(&request, &flag, MPI_STATUS_IGNORE);
        return flag != 0;
      },
      [] { return std::string(); });
}

void MpiCommunicator::watchdog_abort(const char* collective, const std::string& detail) {
  abort(std::string(collective) + " on group " + name_ + " (" + std::to_string(size_) +
            " ranks) did not complete in " + format_seconds(options_.timeout_s) + " s; aborting" +
            (detail.empty() ? "" : " (" + detail + ")"),
        kWatchdogExitCode);
}

void MpiCommunicator::abort(const std::string& message, int code) {
  abort_job(message, code);
}

void MpiCommunicator::do_all_reduce(void* data, int64_t count, DataType type, ReduceOp op,
                                    Place place) {
  check_host(place, "all_reduce");
  blocking_work_->start_all_reduce(data, count, type, op, "all_reduce");
  blocking_work_->wait();
}

std::unique_ptr<Work> MpiCommunicator::do_all_reduce_async(void* data, int64_t count, DataType type,
                                                           ReduceOp op,
                                                           std::unique_ptr<Work> recycle,
                                                           Place place) {
  check_host(place, "all_reduce_async");
  std::unique_ptr<MpiWork> work;
  if (auto* w = dynamic_cast<MpiWork*>(recycle.get()); w && w->comm() == this) {
    w->wait();  // normally done already; the caller handed it back
    work.reset(static_cast<MpiWork*>(recycle.release()));
  } else {
    work = std::make_unique<MpiWork>(this);
  }
  work->start_all_reduce(data, count, type, op, "all_reduce_async");
  return work;
}

void MpiCommunicator::do_broadcast(void* data, int64_t count, DataType type, int root,
                                   Place place) {
  check_host(place, "broadcast");
  if (root < 0 || root >= size_)
    throw Error("broadcast on group " + name_ + ": root " + std::to_string(root) +
                " is not a rank of a group of " + std::to_string(size_));
  MPI_Request request;
  MPI_Ibcast(data, mpi_count(count, "broadcast"), mpi_type(type), root, comm_, &request);
  watch_request("broadcast", request);
}

void MpiCommunicator::do_all_gather(const void* send, void* recv, int64_t count, DataType type,
                                    Place place) {
  check_host(place, "all_gather");
  const int n = mpi_count(count, "all_gather");
  const auto* own = static_cast<const std::byte*>(recv) + count * rank_ * data_type_size(type);
  const void* s = send == own ? MPI_IN_PLACE : send;
  MPI_Request request;
  MPI_Iallgather(s, n, mpi_type(type), recv, n, mpi_type(type), comm_, &request);
  watch_request("all_gather", request);
}

void MpiCommunicator::do_reduce_scatter(const void* send, void* recv, int64_t count_per_rank,
                                        DataType type, ReduceOp op, Place place) {
  check_host(place, "reduce_scatter");
  blocking_work_->start_reduce_scatter(send, recv, count_per_rank, type, op, "reduce_scatter");
  blocking_work_->wait();
}

void MpiCommunicator::barrier() {
  MPI_Request request;
  MPI_Ibarrier(comm_, &request);
  watch_request("barrier", request);
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key, const std::string& name) {
  // MPI_Comm_split blocks unwatched; a watched barrier first catches a rank that never comes.
  barrier();
  MPI_Comm comm;
  MPI_Comm_split(comm_, color, key, &comm);
  return std::make_unique<MpiCommunicator>(comm, name, options_);
}

MpiRuntime::MpiRuntime(int* argc, char*** argv, MpiOptions options) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    finalize_ = true;
  }
  MPI_Comm world;
  MPI_Comm_dup(MPI_COMM_WORLD, &world);
  gather_job_hosts(world);
  if (options.idle_wait == IdleWait::kAuto) {
    // Every rank of a node decides the same: the ranks sharing this node's memory against
    // the CPUs they may run on together (the union of their affinity masks, not the CPUs
    // online: a node's processes may be confined to some of them, by a cgroup, a batch
    // system or a container, and two ranks spinning on one CPU wait a scheduler time slice
    // for each other, ~24 ms).
    MPI_Comm node;
    MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    int local_ranks = 1;
    MPI_Comm_size(node, &local_ranks);
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    if (sched_getaffinity(0, sizeof cpus, &cpus) != 0)
      for (long c = 0; c < sysconf(_SC_NPROCESSORS_ONLN) && c < CPU_SETSIZE; ++c) CPU_SET(c, &cpus);
    MPI_Allreduce(MPI_IN_PLACE, &cpus, sizeof cpus, MPI_BYTE, MPI_BOR, node);
    MPI_Comm_free(&node);
    options.idle_wait = local_ranks > CPU_COUNT(&cpus) ? IdleWait::kYield : IdleWait::kSpin;
  }
  world_ = std::make_unique<MpiCommunicator>(world, "world", options);
  std::set_terminate(terminate_handler);
  uncaught_at_start_ = std::uncaught_exceptions();
}

MpiRuntime::~MpiRuntime() {
  if (std::uncaught_exceptions() > uncaught_at_start_) {
    // Unwinding: the other ranks may be waiting for this one in a collective, and
    // MPI_Finalize would wait for them. Leave MPI as it is; the exception's handler ends the
    // process (run_or_abort, or the terminate handler) and the launcher ends the job.
    (void)world_.release();
    return;
  }
  world_.reset();
  if (finalize_) MPI_Finalize();
}

int mpi_world_rank() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return 0;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

const std::vector<std::string>& job_hosts() {
  return mutable_job_hosts();
}

std::string rank_label(int world_rank) {
  const auto& hosts = job_hosts();
  const std::string rank = "rank " + std::to_string(world_rank);
  return world_rank < static_cast<int>(hosts.size()) ? rank + " on " + hosts[world_rank] : rank;
}

void abort_job(const std::string& message, int code) {
  std::cout.flush();
  std::fflush(stdout);
  std::fprintf(stderr, "%s: %s\n", rank_label(mpi_world_rank()).c_str(), message.c_str());
  std::fflush(stderr);
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

int run_or_abort(const std::function<int()>& body, int code) {
  try {
    return body();
  } catch (const std::exception& e) {
    abort_job(e.what(), code);
  } catch (...) {
    abort_job("unknown exception", code);
  }
}

}  // namespace primal
