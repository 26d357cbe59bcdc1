// The bucket state machine both gradient-bucket implementations run (comm/bucket_schedule.h),
// without a communicator: buckets are issued in bucket order once all their parameters are
// ready, whatever order the parameters arrive in, and misuse is an Error naming it.
#include "comm/bucket_schedule.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"

namespace primal {
namespace {

// Five parameters of 4 floats (16 bytes) in ready order, buckets of 32 bytes: {0, 1}, {2, 3},
// {4}. Parameter 2 lies apart from 3, so the middle bucket is not contiguous.
BucketSchedule five_params() {
  return BucketSchedule("Buckets", {{16, 4}, {12, 4}, {0, 4}, {8, 4}, {4, 4}}, 20, 32);
}

std::vector<int> issue_all(BucketSchedule& s) {
  std::vector<int> issued;
  for (int b; (b = s.issue_next()) >= 0;) issued.push_back(b);
  return issued;
}

TEST(BucketSchedule, PlansGreedyBucketsInReadyOrder) {
  const BucketSchedule s = five_params();
  ASSERT_EQ(s.num_buckets(), 3);
  EXPECT_EQ(s.bucket(0).first_param, 0);
  EXPECT_EQ(s.bucket(0).num_params, 2);
  EXPECT_TRUE(s.bucket(0).contiguous);
  EXPECT_EQ(s.bucket(0).offset, 12);
  EXPECT_FALSE(s.bucket(1).contiguous);
  EXPECT_EQ(s.bucket(2).count, 4);
  EXPECT_EQ(s.bucket_of(3), 1);
}

TEST(BucketSchedule, IssuesInBucketOrderOnceEveryParameterIsReady) {
  BucketSchedule s = five_params();
  EXPECT_TRUE(s.mark_ready(4));  // bucket 2 is complete, but buckets 0 and 1 come first
  EXPECT_TRUE(issue_all(s).empty());
  EXPECT_FALSE(s.mark_ready(2));
  EXPECT_FALSE(s.mark_ready(0));
  EXPECT_TRUE(issue_all(s).empty());
  EXPECT_TRUE(s.mark_ready(1));
  EXPECT_EQ(issue_all(s), std::vector<int>{0});
  EXPECT_TRUE(s.mark_ready(3));
  EXPECT_EQ(issue_all(s), (std::vector<int>{1, 2}));
  EXPECT_EQ(s.issued(), 3);
  s.check_all_ready("wait_all");
  std::vector<BucketEvent::Kind> kinds;
  for (const BucketEvent& e : s.events()) kinds.push_back(e.kind);
  using enum BucketEvent::Kind;
  EXPECT_EQ(kinds,
            (std::vector<BucketEvent::Kind>{kParamReady, kParamReady, kParamReady, kParamReady,
                                            kIssued, kParamReady, kIssued, kIssued}));
  // A new backward starts from nothing.
  s.begin_backward();
  EXPECT_EQ(s.issued(), 0);
  EXPECT_TRUE(s.events().empty());
  EXPECT_FALSE(s.mark_ready(0));
}

TEST(BucketSchedule, MisuseIsAnErrorNamingTheParameter) {
  BucketSchedule s = five_params();
  EXPECT_THROW(s.mark_ready(5), Error);
  s.mark_ready(3);
  try {
    s.mark_ready(3);
    FAIL() << "a parameter marked twice";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "Buckets::mark_ready: parameter 3 marked ready twice in one backward");
  }
  try {
    s.check_all_ready("wait_all");
    FAIL() << "parameters never marked";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "Buckets::wait_all: parameter 0 (elements [16, 20)) was never marked ready");
  }
  EXPECT_THROW(BucketSchedule("Buckets", {{0, 4}, {2, 4}}, 8, 32), Error);  // overlap
  EXPECT_THROW(BucketSchedule("Buckets", {{6, 4}}, 8, 32), Error);          // outside
}

}  // namespace
}  // namespace primal
