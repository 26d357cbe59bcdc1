#include "comm/gradient_buckets.h"

#include "core/progress.h"

#include <algorithm>
#include <string>

namespace primal {

struct GradientBuckets::State {
  bool done = false;
  std::unique_ptr<Work> work;  // recycled from step to step
  std::vector<float> staging;  // packed gradients of a bucket that is not contiguous
};

GradientBuckets::GradientBuckets(Communicator& comm, float* grads, int64_t total_count,
                                 std::vector<GradRange> ready_order, size_t bucket_bytes,
                                 ReduceOp op)
    : comm_(comm),
      grads_(grads),
      total_(total_count),
      op_(op),
      schedule_("GradientBuckets", std::move(ready_order), total_count, bucket_bytes) {
  state_.resize(schedule_.num_buckets());
  for (int bi = 0; bi < num_buckets(); ++bi) {
    if (!bucket(bi).contiguous) state_[bi].staging.resize(bucket(bi).count);
  }
}

GradientBuckets::~GradientBuckets() {
  clear_progress_hook(this);
}

void GradientBuckets::begin_backward() {
  check(schedule_.issued() == completed_,
        "GradientBuckets::begin_backward: buckets of the previous step still in flight");
  schedule_.begin_backward();
  for (State& s : state_) s.done = false;
  completed_ = 0;
  // Until wait_all, the compute loops of this thread poll the buckets in flight.
  set_progress_hook([](void* self) { static_cast<GradientBuckets*>(self)->poll(); }, this);
}

void GradientBuckets::mark_ready(int i) {
  if (schedule_.mark_ready(i)) issue_ready_buckets();
  poll();
}

void GradientBuckets::issue_ready_buckets() {
  for (int bi; (bi = schedule_.issue_next()) >= 0;) {
    const Bucket& b = bucket(bi);
    State& s = state_[bi];
    float* data = grads_ + b.offset;
    if (!b.contiguous) {
      float* out = s.staging.data();
      for (int p = b.first_param; p < b.first_param + b.num_params; ++p) {
        const GradRange& r = schedule_.range(p);
        out = std::copy(grads_ + r.offset, grads_ + r.offset + r.count, out);
      }
      data = s.staging.data();
    }
    s.work = comm_.all_reduce_async(data, b.count, op_, std::move(s.work));
  }
}

void GradientBuckets::complete(int bi) {
  const Bucket& b = bucket(bi);
  State& s = state_[bi];
  if (!b.contiguous) {
    const float* in = s.staging.data();
    for (int p = b.first_param; p < b.first_param + b.num_params; ++p) {
      const GradRange& r = schedule_.range(p);
      std::copy(in, in + r.count, grads_ + r.offset);
      in += r.count;
    }
  }
  s.done = true;
  ++completed_;
  schedule_.record(BucketEvent::kCompleted, bi);
}

void GradientBuckets::poll() {
  for (int bi = 0; bi < schedule_.issued(); ++bi) {
    State& s = state_[bi];
    if (!s.done && s.work->test()) complete(bi);
  }
}

void GradientBuckets::wait_all() {
  clear_progress_hook(this);
  schedule_.check_all_ready("wait_all");
  schedule_.record(BucketEvent::kWaitBegin, -1);
  for (int bi = 0; bi < num_buckets(); ++bi) {
    State& s = state_[bi];
    if (s.done) continue;
    s.work->wait();
    complete(bi);
  }
  schedule_.record(BucketEvent::kWaitEnd, -1);
}

void GradientBuckets::all_reduce_unbucketed() {
  comm_.all_reduce(grads_, total_, op_);
}

}  // namespace primal
