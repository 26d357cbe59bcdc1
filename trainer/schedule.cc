#include "trainer/schedule.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numbers>

#include "core/error.h"

namespace primal {
namespace {

constexpr ScheduleOptions::Kind kKinds[] = {ScheduleOptions::kConstant, ScheduleOptions::kCosine,
                                            ScheduleOptions::kLinear,
                                            ScheduleOptions::kInverseSqrt};

}  // namespace

void validate(const ScheduleOptions& o) {
  auto require = [](bool ok, const char* field, const std::string& what) {
    if (!ok) throw Error(field, what);
  };
  require(o.lr > 0 && std::isfinite(o.lr), "schedule.lr",
          "must be finite and > 0, got " + format_number(o.lr));
  require(o.total_steps > 0, "schedule.total_steps",
          "must be > 0, got " + std::to_string(o.total_steps));
  require(o.warmup_steps >= 0, "schedule.warmup_steps",
          "must be >= 0, got " + std::to_string(o.warmup_steps));
  require(o.warmup_steps <= o.total_steps, "schedule.warmup_steps",
          "must be <= schedule.total_steps (" + std::to_string(o.total_steps) + "), got " +
              std::to_string(o.warmup_steps));
  require(o.min_lr >= 0 && o.min_lr <= o.lr, "schedule.min_lr",
          "must be in [0, schedule.lr] = [0, " + format_number(o.lr) + "], got " +
              format_number(o.min_lr));
  require(std::find(std::begin(kKinds), std::end(kKinds), o.kind) != std::end(kKinds),
          "schedule.kind", "unknown kind " + std::to_string(int(o.kind)));
}

double learning_rate(const ScheduleOptions& o, int64_t step) {
  validate(o);
  if (step < 0) throw Error("learning_rate", "negative step " + std::to_string(step));
  const int64_t warmup = o.warmup_steps;
  if (step < warmup) return o.lr * double(step + 1) / double(warmup);
  const int64_t decay_steps = o.total_steps - warmup;
  const double progress =
      decay_steps == 0 ? 1.0 : std::min(1.0, double(step - warmup) / double(decay_steps));
  switch (o.kind) {
    case ScheduleOptions::kConstant:
      return o.lr;
    case ScheduleOptions::kCosine:
      return o.min_lr + (o.lr - o.min_lr) * 0.5 * (1 + std::cos(std::numbers::pi * progress));
    case ScheduleOptions::kLinear:
      return o.min_lr + (o.lr - o.min_lr) * (1 - progress);
    case ScheduleOptions::kInverseSqrt:
      return std::max(o.min_lr,
                      o.lr * std::sqrt(double(std::max<int64_t>(warmup, 1)) / double(step + 1)));
  }
  return o.lr;  // unreachable: validate() rejects other kinds
}

const char* schedule_kind_name(ScheduleOptions::Kind kind) {
  switch (kind) {
    case ScheduleOptions::kConstant:
      return "constant";
    case ScheduleOptions::kCosine:
      return "cosine";
    case ScheduleOptions::kLinear:
      return "linear";
    case ScheduleOptions::kInverseSqrt:
      return "inverse_sqrt";
  }
  return "unknown";
}

ScheduleOptions::Kind parse_schedule_kind(const std::string& name) {
  for (ScheduleOptions::Kind k : kKinds) {
    if (name == schedule_kind_name(k)) return k;
  }
  throw Error("schedule.kind",
              "unknown kind \"" + name + "\" (constant, cosine, linear or inverse_sqrt)");
}

}  // namespace primal
