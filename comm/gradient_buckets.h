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

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "comm/bucket_schedule.h"
#include "comm/communicator.h"

namespace primal {

class GradientBuckets {
 public:
  static constexpr size_t kDefaultBucketBytes = size_t{25} << 20;
  using Bucket = GradBucket;

  // `ready_order[i]` is the range of the i-th parameter to become final; mark_ready(i)
  // refers to it. Ranges must lie inside [0, total_count) and not overlap. `comm` and
  // `grads` must outlive this object.
  GradientBuckets(Communicator& comm, float* grads, int64_t total_count,
                  std::vector<GradRange> ready_order, size_t bucket_bytes = kDefaultBucketBytes,
                  ReduceOp op = ReduceOp::kAverage);
  ~GradientBuckets();
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;

  int num_params() const { return schedule_.num_params(); }
  int num_buckets() const { return schedule_.num_buckets(); }
  const Bucket& bucket(int b) const { return schedule_.bucket(b); }
  int bucket_of(int param) const { return schedule_.bucket_of(param); }
  size_t bucket_bytes() const { return schedule_.bucket_bytes(); }

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
  void set_record_events(bool on) { schedule_.set_record_events(on); }
  const std::vector<BucketEvent>& events() const { return schedule_.events(); }

 private:
  struct State;
  void issue_ready_buckets();
  void complete(int b);

  Communicator& comm_;
  float* grads_;
  int64_t total_;
  ReduceOp op_;
  BucketSchedule schedule_;
  std::vector<State> state_;
  int completed_ = 0;
};

}  // namespace primal
