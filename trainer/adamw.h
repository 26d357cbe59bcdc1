// AdamW (Loshchilov & Hutter, decoupled weight decay) with torch.optim.AdamW's arithmetic:
// the single-tensor algorithm of torch 1.13 (foreach=False, amsgrad=False), every element
// operation in T, in torch's order, so float results agree with torch's bit for bit.
//   At step t (1-based), for every element of every parameter:
//     p  = p * (1 - lr*wd)                       only where the parameter decays
//     m  = m*b1 + g*(1-b1)                       torch: mul_(b1).add_(g, alpha=1-b1), an FMA
//     v  = v*b2 + ((1-b2)*g)*g                   torch: mul_(b2).addcmul_(g, g, value=1-b2), an FMA
//     p  = p + (-lr/bc1 * m) / (sqrt(v)/sqrt(bc2) + eps),   bc1 = 1 - b1^t, bc2 = 1 - b2^t
//   The scalars (1 - lr*wd, 1-b1, lr/bc1, sqrt(bc2)) are computed in double, then rounded to
//   T, as torch does with Python floats. (torch >= 2.0 writes m.lerp_(g, 1-b1): same value up
//   to rounding.)
// exp_avg (m) and exp_avg_sq (v) are contiguous buffers parallel to ParameterStore::values(),
// so a checkpoint saves them as they are. step() allocates nothing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/element_math.h"
#include "model/parameters.h"

namespace primal {

using AdamWOptions = em::AdamWOptions;

// Throws primal::Error naming the field ("adamw.beta1", ...) unless 0 <= beta1, beta2 < 1,
// eps >= 0 and weight_decay >= 0 (all finite).
void validate(const AdamWOptions& options);

template <typename T>
class AdamW {
 public:
  // store must be finalized; the optimizer keeps a reference to it.
  AdamW(ParameterStore<T>& store, AdamWOptions options);
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;

  // Updates every parameter from its gradient with learning rate lr (finite, >= 0).
  void step(double lr);

  // Overrides whether the named parameter decays (default: its Parameter::weight_decay).
  void set_weight_decay(const std::string& name, bool decay);
  bool weight_decay(const std::string& name) const;

  const AdamWOptions& options() const { return options_; }
  // Steps taken so far: the t of the last update.
  int64_t steps() const { return steps_; }
  // For restoring a checkpoint together with exp_avg() and exp_avg_sq().
  void set_steps(int64_t steps);
  Tensor<T> exp_avg() { return Tensor<T>(exp_avg_.data(), {int64_t(exp_avg_.size())}); }
  Tensor<T> exp_avg_sq() { return Tensor<T>(exp_avg_sq_.data(), {int64_t(exp_avg_sq_.size())}); }

 private:
  // A maximal range [begin, end) of the flat buffers whose parameters share one decay flag.
  struct Run {
    int64_t begin, end;
    bool decay;
  };
  size_t index_of(const std::string& name) const;
  void build_runs();

  ParameterStore<T>& store_;
  AdamWOptions options_;
  std::vector<char> decay_;  // per parameter, in store order
  std::vector<Run> runs_;
  std::vector<T> exp_avg_, exp_avg_sq_;
  int64_t steps_ = 0;
};

}  // namespace primal
