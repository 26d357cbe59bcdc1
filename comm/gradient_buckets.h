// Data-parallel gradient averaging in buckets (SPEC §5), the way PyTorch DDP overlaps it with
// backward. The parameters' gradients live in one contiguous buffer; the caller lists their
// ranges in the order backward makes them final (reverse of registration, typically).
// Consecutive parameters in that order are grouped into buckets of at most bucket_bytes
// (a parameter larger than that gets a bucket of its own). During backward:
//
//   buckets.begin_backward();
//   ... as each parameter's gradient is final:  buckets.mark_ready(i);
//   buckets.wait_all();          // before clipping and the optimizer step
//
// A bucket whose parameters are all ready starts its non-blocking all-reduce (average) at
// once, while backward goes on; buckets start in bucket order on every rank (a bucket that is
// ready early waits for the ones before it), so all ranks issue the same collectives in the
// same order. MPI moves data only inside MPI calls: mark_ready() and poll() test the
// buckets in flight, which is what makes them progress during backward.
//
// With the rank-ordered all-reduce (the MPI backend's default) the result equals
// all_reduce_unbucketed() bit for bit, whatever the bucket size.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "comm/communicator.h"
#include "model/ready_order.h"

namespace primal {

// What the buckets did, in order, for tests and traces.
struct BucketEvent {
  enum Kind { kParamReady, kIssued, kCompleted, kWaitBegin, kWaitEnd };
  Kind kind;
  int index;      // the parameter (kParamReady) or the bucket (kIssued, kCompleted); else -1
  double time_s;  // since begin_backward()
};

class GradientBuckets {
 public:
  static constexpr size_t kDefaultBucketBytes = size_t{25} << 20;

  struct Bucket {
    int first_param = 0, num_params = 0;  // positions in the ready order
    int64_t count = 0;                    // elements
    bool contiguous = false;  // its ranges tile [offset, offset + count): reduced in place
    int64_t offset = 0;       // when contiguous
    size_t bytes() const { return static_cast<size_t>(count) * sizeof(float); }
  };

  // `ready_order[i]` is the range of the i-th parameter to become final; mark_ready(i)
  // refers to it. Ranges must lie inside [0, total_count) and not overlap. `comm` and
  // `grads` must outlive this object.
  GradientBuckets(Communicator& comm, float* grads, int64_t total_count,
                  std::vector<GradRange> ready_order, size_t bucket_bytes = kDefaultBucketBytes,
                  ReduceOp op = ReduceOp::kAverage);
  ~GradientBuckets();
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;

  int num_params() const { return static_cast<int>(ranges_.size()); }
  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  const Bucket& bucket(int b) const { return buckets_[b]; }
  int bucket_of(int param) const { return bucket_of_[param]; }
  size_t bucket_bytes() const { return bucket_bytes_; }

  // Starts a backward pass: no parameter is ready, no bucket issued; clears the events.
  void begin_backward();
  // Parameter i's gradient is final. Issues the buckets this completes, then polls.
  void mark_ready(int i);
  // Tests the buckets in flight (drives MPI progress); cheap.
  void poll();
  // Waits for every bucket (watched like any blocking collective). Every parameter must have
  // been marked ready.
  void wait_all();

  // The comparison path: one blocking all-reduce of grads[0, total_count) at the end.
  void all_reduce_unbucketed();

  // Events are recorded when enabled (default on; storage is reused from step to step).
  void set_record_events(bool on) { record_ = on; }
  const std::vector<BucketEvent>& events() const { return events_; }

 private:
  struct State;
  void issue_ready_buckets();
  void complete(int b);
  void record(BucketEvent::Kind kind, int index);

  Communicator& comm_;
  float* grads_;
  int64_t total_;
  std::vector<GradRange> ranges_;
  size_t bucket_bytes_;
  ReduceOp op_;
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_;
  std::vector<State> state_;
  std::vector<char> ready_;
  int next_issue_ = 0;  // buckets [0, next_issue_) have been issued
  int completed_ = 0;
  bool record_ = true;
  std::vector<BucketEvent> events_;
  std::chrono::steady_clock::time_point start_;
};

// The bucketing, shared with the device version (comm/nccl/device_gradient_buckets.h): greedy
// in ready order, a bucket closes when the next range would take it past bucket_bytes (a range
// larger than that gets a bucket of its own); a bucket is contiguous when its ranges tile
// [offset, offset + count). Throws when a range lies outside [0, total_count) or two overlap.
std::vector<GradientBuckets::Bucket> plan_buckets(std::span<const GradRange> ready_order,
                                                  int64_t total_count, size_t bucket_bytes);

}  // namespace primal
