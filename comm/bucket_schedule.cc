#include "comm/bucket_schedule.h"

#include <algorithm>
#include <string>

#include "core/error.h"

namespace primal {

std::vector<GradBucket> plan_buckets(std::span<const GradRange> ready_order, int64_t total_count,
                                     size_t bucket_bytes) {
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
  std::vector<GradBucket> buckets;
  for (int i = 0; i < int(ready_order.size()); ++i) {
    const size_t bytes = static_cast<size_t>(ready_order[i].count) * sizeof(float);
    if (buckets.empty() ||
        (buckets.back().bytes() + bytes > bucket_bytes && buckets.back().num_params > 0)) {
      buckets.push_back(GradBucket{i, 0, 0, false, 0});
    }
    GradBucket& b = buckets.back();
    b.num_params++;
    b.count += ready_order[i].count;
  }
  for (GradBucket& b : buckets) {
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

BucketSchedule::BucketSchedule(std::string owner, std::vector<GradRange> ready_order,
                               int64_t total_count, size_t bucket_bytes)
    : owner_(std::move(owner)),
      ranges_(std::move(ready_order)),
      bucket_bytes_(bucket_bytes),
      buckets_(plan_buckets(ranges_, total_count, bucket_bytes_)) {
  bucket_of_.resize(ranges_.size());
  for (int bi = 0; bi < num_buckets(); ++bi) {
    const GradBucket& b = buckets_[bi];
    for (int p = b.first_param; p < b.first_param + b.num_params; ++p) bucket_of_[p] = bi;
  }
  pending_.resize(buckets_.size());
  ready_.assign(ranges_.size(), 0);
  begin_backward();
}

void BucketSchedule::begin_backward() {
  std::fill(ready_.begin(), ready_.end(), 0);
  for (int b = 0; b < num_buckets(); ++b) pending_[b] = buckets_[b].num_params;
  next_issue_ = 0;
  events_.clear();
  start_ = std::chrono::steady_clock::now();
}

void BucketSchedule::record(BucketEvent::Kind kind, int index) {
  if (!record_) return;
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  events_.push_back(BucketEvent{kind, index, t});
}

bool BucketSchedule::mark_ready(int i) {
  if (i < 0 || i >= num_params())
    throw Error(owner_ + "::mark_ready: parameter " + std::to_string(i) + " of " +
                std::to_string(num_params()));
  if (ready_[i])
    throw Error(owner_ + "::mark_ready: parameter " + std::to_string(i) +
                " marked ready twice in one backward");
  ready_[i] = 1;
  record(BucketEvent::kParamReady, i);
  return --pending_[bucket_of_[i]] == 0;
}

int BucketSchedule::issue_next() {
  if (next_issue_ == num_buckets() || pending_[next_issue_] != 0) return -1;
  record(BucketEvent::kIssued, next_issue_);
  return next_issue_++;
}

void BucketSchedule::check_all_ready(const char* call) const {
  for (int i = 0; i < num_params(); ++i)
    if (!ready_[i])
      throw Error(owner_ + "::" + call + ": parameter " + std::to_string(i) + " (elements [" +
                  std::to_string(ranges_[i].offset) + ", " +
                  std::to_string(ranges_[i].offset + ranges_[i].count) +
                  ")) was never marked ready");
}

}  // namespace primal
