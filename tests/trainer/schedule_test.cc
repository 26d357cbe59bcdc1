// Learning-rate schedules: exact values at the warmup boundary and the end, torch LambdaLR
// numbers for cosine, monotonicity, and validation messages that name the field.
#include "trainer/schedule.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/error.h"

namespace primal {
namespace {

using K = ScheduleOptions::Kind;

TEST(Schedule, WarmupRisesLinearlyAndReachesPeakOnItsLastStep) {
  for (K kind : {K::kConstant, K::kCosine, K::kLinear, K::kInverseSqrt}) {
    const ScheduleOptions o{1e-3, 4, 100, kind, 1e-5};
    EXPECT_DOUBLE_EQ(learning_rate(o, 0), 0.25e-3) << schedule_kind_name(kind);
    EXPECT_DOUBLE_EQ(learning_rate(o, 1), 0.5e-3);
    EXPECT_DOUBLE_EQ(learning_rate(o, 2), 0.75e-3);
    EXPECT_EQ(learning_rate(o, 3), 1e-3);
  }
}

// torch.optim.lr_scheduler.LambdaLR(SGD(lr=1e-3), lam), lam(s) = (s+1)/10 for s < 10, else
// (1e-4 + 0.9e-3 * 0.5 * (1 + cos(pi * min(1, (s-10)/100)))) / 1e-3; lr read before step s.
TEST(Schedule, CosineMatchesTorchLambdaLR) {
  const ScheduleOptions o{1e-3, 10, 110, K::kCosine, 1e-4};
  EXPECT_DOUBLE_EQ(learning_rate(o, 0), 0.0001);
  EXPECT_DOUBLE_EQ(learning_rate(o, 4), 0.0005);
  EXPECT_DOUBLE_EQ(learning_rate(o, 9), 0.001);
  EXPECT_DOUBLE_EQ(learning_rate(o, 10), 0.001);
  EXPECT_DOUBLE_EQ(learning_rate(o, 35), 0.0008681980515339464);
  EXPECT_DOUBLE_EQ(learning_rate(o, 60), 0.00055);
  EXPECT_DOUBLE_EQ(learning_rate(o, 85), 0.00023180194846605365);
  EXPECT_DOUBLE_EQ(learning_rate(o, 109), 0.00010022204783542078);
  EXPECT_EQ(learning_rate(o, 110), 1e-4);
  EXPECT_EQ(learning_rate(o, 120), 1e-4);
}

TEST(Schedule, LinearDecaysToMinLrAtTotalSteps) {
  const ScheduleOptions o{1e-3, 10, 110, K::kLinear, 1e-4};
  EXPECT_EQ(learning_rate(o, 10), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(o, 60), 5.5e-4);
  EXPECT_DOUBLE_EQ(learning_rate(o, 109), 1e-4 + 0.9e-3 * 0.01);
  EXPECT_EQ(learning_rate(o, 110), 1e-4);
  EXPECT_EQ(learning_rate(o, 500), 1e-4);
}

TEST(Schedule, ConstantHoldsPeakAfterWarmup) {
  const ScheduleOptions o{3e-4, 2, 50, K::kConstant, 0};
  EXPECT_EQ(learning_rate(o, 2), 3e-4);
  EXPECT_EQ(learning_rate(o, 49), 3e-4);
  const ScheduleOptions no_warmup{3e-4, 0, 50, K::kConstant, 0};
  EXPECT_EQ(learning_rate(no_warmup, 0), 3e-4);
}

// fairseq's inverse_sqrt: lr * sqrt(warmup / (step + 1)) after warmup, floored at min_lr.
TEST(Schedule, InverseSqrtDecaysAsFairseq) {
  const ScheduleOptions o{1.0, 4, 10000, K::kInverseSqrt, 0};
  EXPECT_EQ(learning_rate(o, 3), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(o, 4), std::sqrt(4.0 / 5.0));
  EXPECT_EQ(learning_rate(o, 15), 0.5);
  EXPECT_DOUBLE_EQ(learning_rate(o, 99), 0.2);
  const ScheduleOptions floored{1.0, 4, 10000, K::kInverseSqrt, 0.3};
  EXPECT_EQ(learning_rate(floored, 99), 0.3);
  const ScheduleOptions no_warmup{1.0, 0, 100, K::kInverseSqrt, 0};
  EXPECT_EQ(learning_rate(no_warmup, 0), 1.0);
  EXPECT_EQ(learning_rate(no_warmup, 3), 0.5);
}

TEST(Schedule, NonDecreasingInWarmupAndNonIncreasingAfter) {
  for (K kind : {K::kConstant, K::kCosine, K::kLinear, K::kInverseSqrt}) {
    for (int64_t warmup : {0, 1, 7, 50}) {
      const ScheduleOptions o{2e-3, warmup, 50, kind, 2e-4};
      double prev = 0;
      for (int64_t s = 0; s < 60; ++s) {
        const double lr = learning_rate(o, s);
        if (s < warmup) {
          EXPECT_GE(lr, prev) << schedule_kind_name(kind) << " warmup " << warmup << " step " << s;
        } else if (s > warmup) {
          EXPECT_LE(lr, prev) << schedule_kind_name(kind) << " warmup " << warmup << " step " << s;
        }
        EXPECT_GT(lr, 0);
        EXPECT_LE(lr, 2e-3);
        prev = lr;
      }
    }
  }
}

// Warmup spanning the whole run: cosine and linear have nothing left to decay over.
TEST(Schedule, WarmupEqualToTotalEndsAtMinLr) {
  const ScheduleOptions o{1e-3, 10, 10, K::kCosine, 1e-4};
  EXPECT_EQ(learning_rate(o, 9), 1e-3);
  EXPECT_EQ(learning_rate(o, 10), 1e-4);
}

TEST(Schedule, RejectsBadOptionsNamingTheField) {
  auto message = [](ScheduleOptions o, int64_t step = 0) {
    try {
      learning_rate(o, step);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  auto names = [](const std::string& msg, const char* field) {
    return msg.rfind(field, 0) == 0;  // the message starts with the field
  };
  EXPECT_TRUE(names(message({0, 0, 10, K::kCosine, 0}), "schedule.lr"));
  EXPECT_TRUE(names(message({NAN, 0, 10, K::kCosine, 0}), "schedule.lr"));
  EXPECT_TRUE(names(message({1e-3, 0, 0, K::kCosine, 0}), "schedule.total_steps"));
  EXPECT_TRUE(names(message({1e-3, -1, 10, K::kCosine, 0}), "schedule.warmup_steps"));
  EXPECT_TRUE(names(message({1e-3, 11, 10, K::kCosine, 0}), "schedule.warmup_steps"));
  EXPECT_TRUE(names(message({1e-3, 0, 10, K::kCosine, 2e-3}), "schedule.min_lr"));
  EXPECT_TRUE(names(message({1e-3, 0, 10, K::kCosine, -1e-5}), "schedule.min_lr"));
  EXPECT_TRUE(names(message({1e-3, 0, 10, K(17), 0}), "schedule.kind"));
  EXPECT_NE(message({1e-3, 0, 10, K::kCosine, 0}, -1), "no error");
  EXPECT_EQ(message({1e-3, 10, 10, K::kCosine, 1e-3}), "no error");
}

TEST(Schedule, KindNamesRoundTrip) {
  for (K kind : {K::kConstant, K::kCosine, K::kLinear, K::kInverseSqrt}) {
    EXPECT_EQ(parse_schedule_kind(schedule_kind_name(kind)), kind);
  }
  EXPECT_EQ(parse_schedule_kind("inverse_sqrt"), K::kInverseSqrt);
  try {
    parse_schedule_kind("cosin");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("schedule.kind", 0), 0u) << e.what();
  }
}

}  // namespace
}  // namespace primal
