#include "comm/gradient_buckets.h"

#include <algorithm>
#include <string>

namespace primal {

std::vector<GradientBuckets::Bucket> plan_buckets(std::span<const GradRange> ready_order,
                                                  int64_t total_count, size_t bucket_bytes) {
  using Bucket = GradientBuckets::Bucket;
  check(bucket_bytes > 0, "gradient buckets: bucket_bytes must be positive");
  // Ranges inside the buffer and disjoint (an overlap would be averaged twice).
  std::vector<GradRange> sorted(ready_order.begin(), ready_order.end());
  auto by_offset = [](const GradRange& a, const GradRange& b) { return a.offset < b.offset; };
  std::sort(sorted.begin(), sorted.end(), by_offset);
  for (size_t i = 0; i < sorted.size(); ++i) {
    const GradRange& r = sorted[i];
    if (r.offset < 0 || r.count < 0 || r.offset + r.count > total_count)
      throw Error("gradient buckets: range [" + std::to_string(r.offset) + ", " +
                  std::to_string(r.offset + r.count) + ") is outside the gradient buffer of " +
                  std::to_string(total_count));
    if (i > 0 && sorted[i - 1].offset + sorted[i - 1].count > r.offset)
      throw Error("gradient buckets: ranges overlap at element " + std::to_string(r.offset));
  }

  // Greedy in ready order: close a bucket when the next parameter would overflow it.
  std::vector<Bucket> buckets;
  for (int i = 0; i < int(ready_order.size()); ++i) {
    const size_t bytes = static_cast<size_t>(ready_order[i].count) * sizeof(float);
    if (buckets.empty() ||
        (buckets.back().bytes() + bytes > bucket_bytes && buckets.back().num_params > 0)) {
      buckets.push_back(Bucket{i, 0, 0, false, 0});
    }
    Bucket& b = buckets.back();
    b.num_params++;
    b.count += ready_order[i].count;
  }
  for (Bucket& b : buckets) {
    std::vector<GradRange> parts(ready_order.begin() + b.first_param,
                                 ready_order.begin() + b.first_param + b.num_params);
    std::sort(parts.begin(), parts.end(), by_offset);
    b.contiguous = true;
    for (size_t k = 1; k < parts.size(); ++k)
      if (parts[k - 1].offset + parts[k - 1].count != parts[k].offset) b.contiguous = false;
    b.offset = parts.empty() ? 0 : parts.front().offset;
  }
  return buckets;
}

struct GradientBuckets::State {
  int pending = 0;  // parameters not yet ready
  bool issued = false, done = false;
  std::unique_ptr<Work> work;  // recycled from step to step
  std::vector<float> staging;  // packed gradients of a bucket that is not contiguous
};

GradientBuckets::GradientBuckets(Communicator& comm, float* grads, int64_t total_count,
                                 std::vector<GradRange> ready_order, size_t bucket_bytes,
                                 ReduceOp op)
    : comm_(comm),
      grads_(grads),
      total_(total_count),
      ranges_(std::move(ready_order)),
      bucket_bytes_(bucket_bytes),
      op_(op) {
  buckets_ = plan_buckets(ranges_, total_, bucket_bytes_);
  bucket_of_.resize(ranges_.size());
  state_.resize(buckets_.size());
  for (int bi = 0; bi < num_buckets(); ++bi) {
    const Bucket& b = buckets_[bi];
    for (int p = b.first_param; p < b.first_param + b.num_params; ++p) bucket_of_[p] = bi;
    if (!b.contiguous) state_[bi].staging.resize(b.count);
  }
  ready_.assign(ranges_.size(), 0);
  begin_backward();
}

GradientBuckets::~GradientBuckets() = default;

void GradientBuckets::begin_backward() {
  check(next_issue_ == completed_,
        "GradientBuckets::begin_backward: buckets of the previous step still in flight");
  std::fill(ready_.begin(), ready_.end(), 0);
  for (int b = 0; b < num_buckets(); ++b) {
    state_[b].pending = buckets_[b].num_params;
    state_[b].issued = state_[b].done = false;
  }
  next_issue_ = completed_ = 0;
  events_.clear();
  start_ = std::chrono::steady_clock::now();
}

void GradientBuckets::record(BucketEvent::Kind kind, int index) {
  if (!record_) return;
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  events_.push_back(BucketEvent{kind, index, t});
}

void GradientBuckets::mark_ready(int i) {
  if (i < 0 || i >= num_params())
    throw Error("GradientBuckets::mark_ready: parameter " + std::to_string(i) + " of " +
                std::to_string(num_params()));
  if (ready_[i])
    throw Error("GradientBuckets::mark_ready: parameter " + std::to_string(i) +
                " marked ready twice in one backward");
  ready_[i] = 1;
  record(BucketEvent::kParamReady, i);
  if (--state_[bucket_of_[i]].pending == 0) issue_ready_buckets();
  poll();
}

void GradientBuckets::issue_ready_buckets() {
  while (next_issue_ < num_buckets() && state_[next_issue_].pending == 0) {
    const int bi = next_issue_++;
    const Bucket& b = buckets_[bi];
    State& s = state_[bi];
    float* data = grads_ + b.offset;
    if (!b.contiguous) {
      float* out = s.staging.data();
      for (int p = b.first_param; p < b.first_param + b.num_params; ++p) {
        std::copy(grads_ + ranges_[p].offset, grads_ + ranges_[p].offset + ranges_[p].count, out);
        out += ranges_[p].count;
      }
      data = s.staging.data();
    }
    s.work = comm_.all_reduce_async(data, b.count, op_, std::move(s.work));
    s.issued = true;
    record(BucketEvent::kIssued, bi);
  }
}

void GradientBuckets::complete(int bi) {
  const Bucket& b = buckets_[bi];
  State& s = state_[bi];
  if (!b.contiguous) {
    const float* in = s.staging.data();
    for (int p = b.first_param; p < b.first_param + b.num_params; ++p) {
      std::copy(in, in + ranges_[p].count, grads_ + ranges_[p].offset);
      in += ranges_[p].count;
    }
  }
  s.done = true;
  ++completed_;
  record(BucketEvent::kCompleted, bi);
}

void GradientBuckets::poll() {
  for (int bi = 0; bi < next_issue_; ++bi) {
    State& s = state_[bi];
    if (!s.done && s.work->test()) complete(bi);
  }
}

void GradientBuckets::wait_all() {
  for (int i = 0; i < num_params(); ++i)
    if (!ready_[i])
      throw Error("GradientBuckets::wait_all: parameter " + std::to_string(i) + " (elements [" +
                  std::to_string(ranges_[i].offset) + ", " +
                  std::to_string(ranges_[i].offset + ranges_[i].count) +
                  ")) was never marked ready");
  record(BucketEvent::kWaitBegin, -1);
  for (int bi = 0; bi < num_buckets(); ++bi) {
    State& s = state_[bi];
    if (s.done) continue;
    s.work->wait();
    complete(bi);
  }
  record(BucketEvent::kWaitEnd, -1);
}

void GradientBuckets::all_reduce_unbucketed() {
  comm_.all_reduce(grads_, total_, op_);
}

}  // namespace primal
