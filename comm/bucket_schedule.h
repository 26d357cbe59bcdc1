// The bucket plan and the bucket state machine that the host's and the device's gradient
// buckets share (comm/gradient_buckets.h over any Communicator, comm/nccl/device_gradient_
// buckets.h on an NCCL stream): which parameters are in which bucket, which are ready, which
// buckets may be issued (all their parameters ready, in bucket order: the same order on every
// rank, so that the collectives match), and what happened when, for tests and traces. The
// owner issues and completes the buckets on its own backend.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "model/ready_order.h"

namespace primal {

struct GradBucket {
  int first_param = 0, num_params = 0;  // positions in the ready order
  int64_t count = 0;                    // elements
  bool contiguous = false;  // its ranges tile [offset, offset + count): reduced in place
  int64_t offset = 0;       // when contiguous
  size_t bytes() const { return static_cast<size_t>(count) * sizeof(float); }
};

// Greedy in ready order: a bucket closes when the next range would take it past bucket_bytes
// (a range larger than that gets a bucket of its own); a bucket is contiguous when its ranges
// tile [offset, offset + count). Throws when a range lies outside [0, total_count) or two
// overlap.
std::vector<GradBucket> plan_buckets(std::span<const GradRange> ready_order, int64_t total_count,
                                     size_t bucket_bytes);

// What the buckets did, in order, for tests and traces.
struct BucketEvent {
  enum Kind { kParamReady, kIssued, kCompleted, kWaitBegin, kWaitEnd };
  Kind kind;
  int index;      // the parameter (kParamReady) or the bucket (kIssued, kCompleted); else -1
  double time_s;  // since begin_backward()
};

class BucketSchedule {
 public:
  // `owner` names the buckets in errors. ready_order[i] is the range of the i-th parameter to
  // become final: mark_ready(i) refers to it.
  BucketSchedule(std::string owner, std::vector<GradRange> ready_order, int64_t total_count,
                 size_t bucket_bytes);

  int num_params() const { return static_cast<int>(ranges_.size()); }
  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  const GradBucket& bucket(int b) const { return buckets_[b]; }
  int bucket_of(int param) const { return bucket_of_[param]; }
  const GradRange& range(int param) const { return ranges_[param]; }
  size_t bucket_bytes() const { return bucket_bytes_; }
  int issued() const { return next_issue_; }  // buckets [0, issued()) have been issued

  // No parameter ready, no bucket issued, no events; the clock of the events starts.
  void begin_backward();
  // Parameter i is final (an Error if i is no parameter or was marked already). Returns whether
  // this completed its bucket.
  bool mark_ready(int i);
  // The next bucket in bucket order once all its parameters are ready, counted as issued (and
  // recorded); -1 while there is none.
  int issue_next();
  // An Error naming the first parameter never marked ready in this backward.
  void check_all_ready(const char* call) const;

  void set_record_events(bool on) { record_ = on; }
  const std::vector<BucketEvent>& events() const { return events_; }
  void record(BucketEvent::Kind kind, int index);

 private:
  std::string owner_;
  std::vector<GradRange> ranges_;
  size_t bucket_bytes_;
  std::vector<GradBucket> buckets_;
  std::vector<int> bucket_of_;
  std::vector<int> pending_;  // per bucket: parameters not yet ready
  std::vector<char> ready_;
  int next_issue_ = 0;
  bool record_ = true;
  std::vector<BucketEvent> events_;  // storage reused from step to step
  std::chrono::steady_clock::time_point start_;
};

}  // namespace primal
