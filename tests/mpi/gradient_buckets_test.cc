// GradientBuckets under mpirun: bucketed averaging equals one all-reduce of the whole buffer
// bit for bit, buckets start while "backward" is still running, and bucket sizes respect
// bucket_bytes.
#include "comm/gradient_buckets.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <vector>

#include "comm/process_groups.h"
#include "tests/mpi/mpi_test_env.h"

namespace primal {
namespace {

using testing::world;

// Parameter sizes (elements) in registration order: a small model's worth, about 3.4 MB.
const std::vector<int64_t> kParamSizes = {50000, 128,   128,  300000, 1200,   65536, 3,
                                          90000, 4096,  4096, 250000, 17,     70000, 1,
                                          8192,  33333, 2,    48000,  120000, 77};

// Gradients laid out contiguously in registration order; `gap` unused elements between them.
std::vector<GradRange> registration_ranges(int64_t gap, int64_t* total) {
  std::vector<GradRange> r;
  int64_t offset = 0;
  for (int64_t n : kParamSizes) {
    r.push_back({offset, n});
    offset += n + gap;
  }
  *total = offset;
  return r;
}

std::vector<GradRange> reversed(std::vector<GradRange> r) {
  std::reverse(r.begin(), r.end());
  return r;
}

float grad_value(int world_rank, int step, int64_t i) {
  const double x = std::sin(0.011 * static_cast<double>(i) + 0.7 * world_rank + 0.3 * step);
  return static_cast<float>(x * std::pow(10.0, static_cast<double>(i % 5) - 2) + 1e-3 * world_rank);
}

// The "backward" of one parameter: writes its gradient and burns a little time, as a layer's
// backward would between two mark_ready calls.
double backward_of(float* grads, const GradRange& r, int step) {
  const int w = world().rank();
  for (int64_t i = 0; i < r.count; ++i) grads[r.offset + i] = grad_value(w, step, r.offset + i);
  double acc = 0;
  for (int i = 0; i < 20000; ++i) acc += std::sqrt(static_cast<double>(i));
  return acc;
}

void fill_all(std::vector<float>& grads, int step) {
  for (size_t i = 0; i < grads.size(); ++i)
    grads[i] = grad_value(world().rank(), step, static_cast<int64_t>(i));
}

// One backward with buckets: gradients become final in ready order, mark_ready after each.
void bucketed_backward(GradientBuckets& b, std::vector<float>& grads,
                       const std::vector<GradRange>& ready, int step) {
  b.begin_backward();
  double acc = 0;
  for (int i = 0; i < static_cast<int>(ready.size()); ++i) {
    acc += backward_of(grads.data(), ready[i], step);
    b.mark_ready(i);
  }
  b.wait_all();
  EXPECT_GT(acc, 0);
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The data-parallel group of every layout of this world.
template <typename Fn>
void for_each_dp_group(Fn&& fn) {
  fn(static_cast<Communicator&>(world()), std::string("world"));
  for (int tp : {2, 4}) {
    if (world().size() % tp != 0) continue;
    ProcessGroups g = make_process_groups(world(), tp);
    fn(*g.dp, "dp (tp=" + std::to_string(tp) + ")");
  }
}

TEST(GradientBuckets, BucketedAverageEqualsUnbucketedBitwiseForEveryBucketSize) {
  int64_t total = 0;
  const std::vector<GradRange> ready = reversed(registration_ranges(0, &total));
  for_each_dp_group([&](Communicator& dp, const std::string& label) {
    for (size_t bucket_bytes : {size_t{1}, size_t{64} << 10, size_t{256} << 10, size_t{1} << 20,
                                GradientBuckets::kDefaultBucketBytes}) {
      std::vector<float> grads(total), reference(total);
      GradientBuckets buckets(dp, grads.data(), total, ready, bucket_bytes);
      GradientBuckets unbucketed(dp, reference.data(), total, ready, bucket_bytes);
      for (int step = 0; step < 2; ++step) {  // the second step reuses every buffer
        bucketed_backward(buckets, grads, ready, step);
        fill_all(reference, step);
        unbucketed.all_reduce_unbucketed();
        EXPECT_TRUE(same_bits(grads, reference))
            << label << " bucket_bytes " << bucket_bytes << " step " << step << " ("
            << buckets.num_buckets() << " buckets)";
      }
    }
  });
}

TEST(GradientBuckets, AllReducesAreInFlightDuringBackward) {
  int64_t total = 0;
  const std::vector<GradRange> ready = reversed(registration_ranges(0, &total));
  std::vector<float> grads(total);
  GradientBuckets b(world(), grads.data(), total, ready, size_t{512} << 10);
  ASSERT_GT(b.num_buckets(), 3);
  bucketed_backward(b, grads, ready, 0);

  const std::vector<BucketEvent>& ev = b.events();
  auto position = [&](BucketEvent::Kind kind, int index) {
    for (size_t k = 0; k < ev.size(); ++k)
      if (ev[k].kind == kind && ev[k].index == index) return static_cast<int>(k);
    return -1;
  };
  const int last_ready = position(BucketEvent::kParamReady, b.num_params() - 1);
  const int wait_begin = position(BucketEvent::kWaitBegin, -1);
  ASSERT_GE(last_ready, 0);
  ASSERT_GT(wait_begin, last_ready);
  int issued_during_backward = 0, completed_during_backward = 0;
  for (int bi = 0; bi < b.num_buckets(); ++bi) {
    const int issued = position(BucketEvent::kIssued, bi);
    const int completed = position(BucketEvent::kCompleted, bi);
    const int its_last_param = b.bucket(bi).first_param + b.bucket(bi).num_params - 1;
    ASSERT_GE(issued, 0) << "bucket " << bi;
    ASSERT_GT(completed, issued) << "bucket " << bi;
    // Issued at once: right after its last parameter became ready, before the next one.
    EXPECT_EQ(issued, position(BucketEvent::kParamReady, its_last_param) + 1) << "bucket " << bi;
    if (issued < last_ready) ++issued_during_backward;
    if (completed < last_ready) ++completed_during_backward;
  }
  // Every bucket but the last starts before backward ends.
  EXPECT_EQ(issued_during_backward, b.num_buckets() - 1);
  if (world().rank() == 0) {
    std::printf(
        "[ buckets ] %d buckets of <= 512 KiB; %d issued and %d completed before the "
        "last gradient was final; events:\n ",
        b.num_buckets(), issued_during_backward, completed_during_backward);
    const char* names[] = {"ready", "ISSUE", "DONE", "wait", "waited"};
    for (const BucketEvent& e : ev) std::printf(" %s%d", names[e.kind], e.index < 0 ? 0 : e.index);
    std::printf("\n");
  }
}

TEST(GradientBuckets, BucketSizesRespectBucketBytes) {
  int64_t total = 0;
  const std::vector<GradRange> ready = reversed(registration_ranges(0, &total));
  std::vector<float> grads(total);
  for (size_t bucket_bytes : {size_t{1}, size_t{4096}, size_t{64} << 10, size_t{300} << 10,
                              size_t{1} << 20, size_t{2} << 20, size_t{64} << 20}) {
    GradientBuckets b(world(), grads.data(), total, ready, bucket_bytes);
    EXPECT_EQ(b.bucket_bytes(), bucket_bytes);
    int next_param = 0;
    for (int bi = 0; bi < b.num_buckets(); ++bi) {
      const GradientBuckets::Bucket& k = b.bucket(bi);
      EXPECT_EQ(k.first_param, next_param) << "buckets take consecutive parameters";
      ASSERT_GT(k.num_params, 0);
      int64_t count = 0;
      for (int p = k.first_param; p < k.first_param + k.num_params; ++p) {
        count += ready[p].count;
        EXPECT_EQ(b.bucket_of(p), bi);
      }
      EXPECT_EQ(k.count, count);
      EXPECT_TRUE(k.contiguous) << "reverse registration order tiles the buffer";
      // At most bucket_bytes, unless one parameter alone is larger.
      if (k.num_params > 1) {
        EXPECT_LE(k.bytes(), bucket_bytes) << "bucket " << bi;
      }
      // Greedy: the next parameter would not have fitted.
      if (bi + 1 < b.num_buckets()) {
        EXPECT_GT(k.bytes() + ready[k.first_param + k.num_params].count * sizeof(float),
                  bucket_bytes)
            << "bucket " << bi;
      }
      next_param += k.num_params;
    }
    EXPECT_EQ(next_param, b.num_params());
  }
  GradientBuckets one(world(), grads.data(), total, ready);
  EXPECT_EQ(one.bucket_bytes(), size_t{25} << 20);
  EXPECT_EQ(one.num_buckets(), 1);
  GradientBuckets each(world(), grads.data(), total, ready, 1);
  EXPECT_EQ(each.num_buckets(), each.num_params());
}

TEST(GradientBuckets, ScatteredRangesInAnyOrderAreStagedAndStillBitwiseEqual) {
  int64_t total = 0;
  std::vector<GradRange> ranges = registration_ranges(5, &total);  // gaps of 5 elements
  // A ready order unrelated to the memory order.
  std::vector<GradRange> ready;
  for (size_t k = 0; k < ranges.size(); ++k) ready.push_back(ranges[(k * 7) % ranges.size()]);
  std::vector<float> grads(total), reference(total);
  GradientBuckets b(world(), grads.data(), total, ready, size_t{400} << 10);
  GradientBuckets u(world(), reference.data(), total, ready);
  bool any_staged = false;
  for (int bi = 0; bi < b.num_buckets(); ++bi) any_staged |= !b.bucket(bi).contiguous;
  EXPECT_TRUE(any_staged);

  fill_all(grads, 3);
  const std::vector<float> before = grads;
  // Mark in reverse of the ready order: buckets still start in bucket order, on every rank.
  b.begin_backward();
  for (int i = b.num_params() - 1; i >= 0; --i) b.mark_ready(i);
  b.wait_all();
  fill_all(reference, 3);
  u.all_reduce_unbucketed();
  for (const GradRange& r : ranges) {
    EXPECT_EQ(
        std::memcmp(grads.data() + r.offset, reference.data() + r.offset, r.count * sizeof(float)),
        0)
        << "range at " << r.offset;
    for (int64_t g = r.offset + r.count; g < r.offset + r.count + 5; ++g)
      EXPECT_EQ(grads[g], before[g]) << "gap element " << g << " is left alone";
  }
  int last_issue = -1;
  for (const BucketEvent& e : b.events())
    if (e.kind == BucketEvent::kIssued) {
      EXPECT_EQ(e.index, last_issue + 1) << "buckets issue in bucket order";
      last_issue = e.index;
    }
  EXPECT_EQ(last_issue, b.num_buckets() - 1);
}

TEST(GradientBuckets, MisuseIsAnError) {
  std::vector<float> grads(100, 1.f);
  EXPECT_THROW(GradientBuckets(world(), grads.data(), 100, {{0, 60}, {50, 10}}), Error);
  EXPECT_THROW(GradientBuckets(world(), grads.data(), 100, {{0, 60}, {90, 20}}), Error);
  GradientBuckets b(world(), grads.data(), 100, {{50, 50}, {0, 50}});
  b.begin_backward();
  b.mark_ready(0);
  EXPECT_THROW(b.mark_ready(0), Error);
  EXPECT_THROW(b.mark_ready(2), Error);
  EXPECT_THROW(b.wait_all(), Error);  // parameter 1 never marked; nothing was issued
  b.mark_ready(1);
  b.wait_all();
  for (float g : grads) EXPECT_EQ(g, 1.f);  // the average of ones
  b.set_record_events(false);
  b.begin_backward();
  b.mark_ready(0);
  b.mark_ready(1);
  b.wait_all();
  EXPECT_TRUE(b.events().empty());
}

}  // namespace
}  // namespace primal
