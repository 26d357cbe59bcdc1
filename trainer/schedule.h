// Learning-rate schedules: lr as a function of the 0-based step (the lr of that step's update).
//   warmup   (step < warmup_steps):  lr * (step + 1) / warmup_steps, so step 0 already moves
//            and the last warmup step reaches lr.
//   then, with progress = (step - warmup) / (total - warmup), capped at 1 (1 when equal):
//     kConstant     lr
//     kCosine       min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2
//     kLinear       min_lr + (lr - min_lr) * (1 - progress)
//     kInverseSqrt  max(min_lr, lr * sqrt(max(warmup, 1) / (step + 1)))   (fairseq)
// Cosine and linear reach min_lr at step == total_steps and stay there; the last update of a
// run (step total_steps - 1) is one step's worth above it.
#pragma once

#include <cstdint>
#include <string>

namespace primal {

struct ScheduleOptions {
  double lr = 0;             // peak learning rate, > 0
  int64_t warmup_steps = 0;  // 0 <= warmup_steps <= total_steps
  int64_t total_steps = 0;   // > 0
  // A fixed underlying type: any int is a value of it, so that validate() can refuse one that
  // names no kind (reading it is defined).
  enum Kind : int { kConstant, kCosine, kLinear, kInverseSqrt } kind = kConstant;
  double min_lr = 0;  // 0 <= min_lr <= lr; unused by kConstant
};

// Throws primal::Error naming the field ("schedule.warmup_steps", ...) unless usable.
void validate(const ScheduleOptions& options);

// The learning rate for the update of step (0-based, >= 0). Validates options.
double learning_rate(const ScheduleOptions& options, int64_t step);

// "constant", "cosine", "linear", "inverse_sqrt" and back; parsing throws primal::Error
// naming "schedule.kind".
const char* schedule_kind_name(ScheduleOptions::Kind kind);
ScheduleOptions::Kind parse_schedule_kind(const std::string& name);

}  // namespace primal
