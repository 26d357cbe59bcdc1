// Data-parallel gradient averaging in buckets on the device (SPEC §5): comm/gradient_buckets.h's
// rules over a device float buffer, with NCCL on a dedicated communication stream. Usage is the
// host version's:
//
//   buckets.begin_backward();
//   ... backward enqueues each parameter's last gradient kernel, then:  buckets.mark_ready(i);
//   buckets.wait_all();          // before clipping and the optimizer step
//
// Nothing on the backward path blocks the host. When mark_ready completes a bucket, an event is
// recorded on the compute stream (after every kernel enqueued so far, among them the bucket's last
// gradient kernel). Buckets are issued in bucket order on every rank (a bucket complete early
// waits for the ones before it), each one as: the communication stream waits for its event
// (cudaStreamWaitEvent), packs its ranges into a staging buffer if they are not contiguous,
// all-reduces (ncclAvg) in place, unpacks, and records the bucket's done event. The compute
// stream meanwhile goes on with the backward of earlier layers: the all-reduces overlap it on
// the device. wait_all() makes the compute stream wait for the last bucket's done event (the
// communication stream runs the buckets in order, so that is every bucket): the clip and the
// optimizer step enqueued after it see averaged gradients. synchronize() is the host-side wait,
// watched like every NCCL call (async errors become an Error, past the communicator's timeout
// the job is aborted with the watchdog's line).
//
// Ordering between steps: begin_backward() requires the last step's wait_all(); the next
// step's zero_grads on the compute stream then comes after every all-reduce of this one. The
// staging buffers and events are reused from step to step (no allocation after construction).
// Other collectives on the same communicator (e.g. the KSVD sums) must be ordered with the
// buckets on the device too: enqueued on the compute stream before the step's first mark_ready
// or after its wait_all(), never on a third stream, so every rank's NCCL kernels run in one order.
//
// Sums: NCCL adds in its own order (ring, tree); with 1 or 2 ranks every element is x0 + x1 in
// either order, so the bucketed average equals all_reduce_unbucketed() bit for bit whatever
// the bucket size. With more ranks the two can differ by rounding.
#pragma once

#include <cuda_runtime_api.h>

#include <memory>
#include <span>
#include <vector>

#include "comm/gradient_buckets.h"
#include "comm/nccl/nccl_communicator.h"
#include "core/cuda/allocator.h"

namespace primal {

// Device times of one step's buckets, in ms from begin_backward() on the compute stream.
struct DeviceBucketTimes {
  float ready_ms = 0;  // the bucket's ready event (compute stream)
  float done_ms = 0;   // its all-reduce (and unpack) done (communication stream)
};

class DeviceGradientBuckets {
 public:
  static constexpr size_t kDefaultBucketBytes = GradientBuckets::kDefaultBucketBytes;
  using Bucket = GradientBuckets::Bucket;

  // `grads`: total_count floats on comm's device; `compute`: the stream backward and the
  // optimizer run on. `ready_order[i]` is the range of the i-th parameter to become final;
  // mark_ready(i) refers to it. comm and grads must outlive this object. Creates the
  // communication stream and, for buckets that are not contiguous, their staging buffers.
  DeviceGradientBuckets(DeviceCommunicator& comm, float* grads, int64_t total_count,
                        std::vector<GradRange> ready_order, cudaStream_t compute,
                        size_t bucket_bytes = kDefaultBucketBytes,
                        ReduceOp op = ReduceOp::kAverage);
  // Waits (on the host, watched) for the buckets in flight: the staging buffers and events must not
  // be freed under a running all-reduce.
  ~DeviceGradientBuckets();
  DeviceGradientBuckets(const DeviceGradientBuckets&) = delete;
  DeviceGradientBuckets& operator=(const DeviceGradientBuckets&) = delete;

  int num_params() const { return schedule_.num_params(); }
  int num_buckets() const { return schedule_.num_buckets(); }
  const Bucket& bucket(int b) const { return schedule_.bucket(b); }
  int bucket_of(int param) const { return schedule_.bucket_of(param); }
  size_t bucket_bytes() const { return schedule_.bucket_bytes(); }
  cudaStream_t compute_stream() const { return compute_; }
  cudaStream_t comm_stream() const { return comm_stream_.get(); }

  // Starts a backward pass (the constructor starts the first): no parameter ready, no bucket
  // issued; clears the events and records the step's start on the compute stream. A step
  // that issued buckets must have called wait_all() first.
  void begin_backward();
  // Parameter i's last gradient kernel is enqueued on the compute stream. Issues the buckets
  // this completes (no host wait), then polls.
  void mark_ready(int i);
  // Records the buckets whose done event has passed (cudaEventQuery: never blocks).
  void poll();
  // The compute stream waits (on the device) for every bucket. Every parameter must have been
  // marked ready. Does not block the host.
  void wait_all();
  // Host-side watched wait for every issued bucket (tests, shutdown); records the completions.
  void synchronize();

  // The comparison path: one all-reduce of grads[0, total_count) on the compute stream,
  // waited for on the host (watched).
  void all_reduce_unbucketed();

  // Events are recorded when enabled (default on). kParamReady, kIssued, kWaitBegin and kWaitEnd
  // carry host times since begin_backward(): when the host enqueued them. kCompleted is
  // recorded when poll() or synchronize() sees a bucket's done event passed (host time of
  // that observation, in bucket order); the device's own times are device_times().
  void set_record_events(bool on) { schedule_.set_record_events(on); }
  const std::vector<BucketEvent>& events() const { return schedule_.events(); }
  // Per bucket of the last step, after synchronize(): device times from the step's start
  // (timing events; reading them never waits). Throws when a bucket has not completed.
  std::vector<DeviceBucketTimes> device_times() const;

 private:
  struct State;
  void issue_ready_buckets();

  DeviceCommunicator& comm_;
  float* grads_;
  int64_t total_;
  ReduceOp op_;
  cudaStream_t compute_;
  cuda::Stream comm_stream_;
  cuda::CachingAllocator allocator_;  // the staging buffers
  cuda::Event start_event_;           // timing: begin_backward() on the compute stream
  BucketSchedule schedule_;
  std::vector<State> state_;
  int seen_complete_ = 0;  // buckets [0, seen_complete_) were seen done by the host
  bool waited_ = true;     // wait_all() was called since the last begin_backward()
};

}  // namespace primal
