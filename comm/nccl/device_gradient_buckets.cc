#include "comm/nccl/device_gradient_buckets.h"

#include <algorithm>
#include <string>

#include "core/cuda/check.h"

namespace primal {

struct DeviceGradientBuckets::State {
  std::unique_ptr<cuda::Event> ready;  // compute stream: the bucket's last gradient kernel
  std::unique_ptr<cuda::Event> done;   // communication stream: all-reduced (and unpacked)
  std::unique_ptr<Work> work;          // recycled from step to step
  cuda::DeviceBuffer<float> staging;   // packed gradients of a bucket that is not contiguous
};

DeviceGradientBuckets::DeviceGradientBuckets(DeviceCommunicator& comm, float* grads,
                                             int64_t total_count,
                                             std::vector<GradRange> ready_order,
                                             cudaStream_t compute, size_t bucket_bytes, ReduceOp op)
    : comm_(comm),
      grads_(grads),
      total_(total_count),
      op_(op),
      compute_(compute),
      start_event_(/*timing=*/true),
      schedule_("DeviceGradientBuckets", std::move(ready_order), total_count, bucket_bytes) {
  state_.resize(schedule_.num_buckets());
  for (int bi = 0; bi < num_buckets(); ++bi) {
    const Bucket& b = bucket(bi);
    State& s = state_[bi];
    s.ready = std::make_unique<cuda::Event>(/*timing=*/true);
    s.done = std::make_unique<cuda::Event>(/*timing=*/true);
    if (!b.contiguous) s.staging = cuda::DeviceBuffer<float>(allocator_, b.count, comm_stream());
  }
  begin_backward();
}

DeviceGradientBuckets::~DeviceGradientBuckets() {
  // No all-reduce may still read the staging buffers, which return to the allocator next. The
  // wait is watched (past the timeout the job ends, naming it); when it throws, NCCL's error has
  // aborted the communicator (check_async), so the stream drains.
  try {
    synchronize();
  } catch (const std::exception&) {
    cudaStreamSynchronize(comm_stream_.get());
  }
}

void DeviceGradientBuckets::begin_backward() {
  check(waited_ || schedule_.issued() == 0,
        "DeviceGradientBuckets::begin_backward: wait_all() of the previous step was not called "
        "(its all-reduces would race with this step's gradients)");
  schedule_.begin_backward();
  seen_complete_ = 0;
  waited_ = false;
  start_event_.record(compute_);
}

void DeviceGradientBuckets::mark_ready(int i) {
  // The bucket's last gradient kernel is on the compute stream before this event.
  if (schedule_.mark_ready(i)) state_[bucket_of(i)].ready->record(compute_);
  issue_ready_buckets();
  poll();
}

// Each bucket, in bucket order, on the communication stream:
//   wait(ready event);  [pack];  ncclAllReduce(avg) in place;  [unpack];  record(done event)
void DeviceGradientBuckets::issue_ready_buckets() {
  const cudaStream_t stream = comm_stream();
  for (int bi; (bi = schedule_.issue_next()) >= 0;) {
    const Bucket& b = bucket(bi);
    State& s = state_[bi];
    s.ready->wait(stream);
    float* data = grads_ + b.offset;
    if (!b.contiguous) {
      int64_t at = 0;
      for (int p = b.first_param; p < b.first_param + b.num_params; ++p) {
        const GradRange& r = schedule_.range(p);
        PRIMAL_CUDA_CHECK(cudaMemcpyAsync(s.staging.data() + at, grads_ + r.offset,
                                          sizeof(float) * size_t(r.count), cudaMemcpyDeviceToDevice,
                                          stream));
        at += r.count;
      }
      data = s.staging.data();
    }
    s.work =
        comm_.all_reduce_async(data, b.count, op_, std::move(s.work), Place{Device::kCuda, stream});
    if (!b.contiguous) {
      int64_t at = 0;
      for (int p = b.first_param; p < b.first_param + b.num_params; ++p) {
        const GradRange& r = schedule_.range(p);
        PRIMAL_CUDA_CHECK(cudaMemcpyAsync(grads_ + r.offset, s.staging.data() + at,
                                          sizeof(float) * size_t(r.count), cudaMemcpyDeviceToDevice,
                                          stream));
        at += r.count;
      }
    }
    s.done->record(stream);
  }
}

void DeviceGradientBuckets::poll() {
  // The communication stream completes buckets in order: stop at the first one still running.
  while (seen_complete_ < schedule_.issued()) {
    State& s = state_[seen_complete_];
    if (!s.work->test() || !s.done->query()) break;  // test() raises NCCL's async errors
    schedule_.record(BucketEvent::kCompleted, seen_complete_++);
  }
}

void DeviceGradientBuckets::wait_all() {
  schedule_.check_all_ready("wait_all");
  schedule_.record(BucketEvent::kWaitBegin, -1);
  // Every bucket was issued (all parameters are ready); the last one's done event follows
  // every earlier bucket on the communication stream.
  if (num_buckets() > 0) state_[num_buckets() - 1].done->wait(compute_);
  waited_ = true;
  schedule_.record(BucketEvent::kWaitEnd, -1);
}

void DeviceGradientBuckets::synchronize() {
  const int issued = schedule_.issued();
  if (issued > 0) comm_.wait_event(*state_[issued - 1].done, "all_reduce (buckets)");
  poll();
}

std::vector<DeviceBucketTimes> DeviceGradientBuckets::device_times() const {
  std::vector<DeviceBucketTimes> times(static_cast<size_t>(schedule_.issued()));
  for (int bi = 0; bi < schedule_.issued(); ++bi) {
    const State& s = state_[bi];
    if (!s.done->query())
      throw Error("DeviceGradientBuckets::device_times: bucket " + std::to_string(bi) +
                  " has not completed (call synchronize() first)");
    times[bi] = {s.ready->elapsed_ms(start_event_), s.done->elapsed_ms(start_event_)};
  }
  return times;
}

void DeviceGradientBuckets::all_reduce_unbucketed() {
  comm_.all_reduce(grads_, total_, op_, Place{Device::kCuda, compute_});
}

}  // namespace primal
