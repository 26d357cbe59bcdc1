#include "trainer/adamw.h"

#include <cmath>
#include <cstdio>

#include "core/element_math.h"
#include "core/parallel.h"

namespace primal {

void validate(const AdamWOptions& o) {
  auto require = [](bool ok, const char* field, const std::string& what) {
    if (!ok) throw Error(field, what);
  };
  require(o.beta1 >= 0 && o.beta1 < 1, "adamw.beta1",
          "must be in [0, 1), got " + format_number(o.beta1));
  require(o.beta2 >= 0 && o.beta2 < 1, "adamw.beta2",
          "must be in [0, 1), got " + format_number(o.beta2));
  require(o.eps >= 0 && std::isfinite(o.eps), "adamw.eps",
          "must be finite and >= 0, got " + format_number(o.eps));
  require(o.weight_decay >= 0 && std::isfinite(o.weight_decay), "adamw.weight_decay",
          "must be finite and >= 0, got " + format_number(o.weight_decay));
}

template <typename T>
AdamW<T>::AdamW(ParameterStore<T>& store, AdamWOptions options) : store_(store), options_(options) {
  validate(options_);
  const int64_t n = store_.numel();
  int64_t declared = 0;
  for (const auto& p : store_.all()) declared += p.local_shape.numel();
  check(declared == n && (n == 0 || !store_.all().front().value.empty()),
        "AdamW: the ParameterStore is not finalized");
  for (const auto& p : store_.all()) decay_.push_back(p.weight_decay);
  exp_avg_.assign(n, T(0));
  exp_avg_sq_.assign(n, T(0));
  build_runs();
}

template <typename T>
void AdamW<T>::build_runs() {
  runs_.clear();
  const T* base = store_.values().data();
  size_t i = 0;
  for (const auto& p : store_.all()) {
    const int64_t begin = p.value.data() - base, end = begin + p.value.numel();
    const bool decay = decay_[i++];
    if (!runs_.empty() && runs_.back().end == begin && runs_.back().decay == decay) {
      runs_.back().end = end;
    } else {
      runs_.push_back({begin, end, decay});
    }
  }
}

template <typename T>
size_t AdamW<T>::index_of(const std::string& name) const {
  size_t i = 0;
  for (const auto& p : store_.all()) {
    if (p.name == name) return i;
    ++i;
  }
  throw Error("AdamW: no parameter named " + name);
}

template <typename T>
void AdamW<T>::set_weight_decay(const std::string& name, bool decay) {
  decay_[index_of(name)] = decay;
  build_runs();
}

template <typename T>
bool AdamW<T>::weight_decay(const std::string& name) const {
  return decay_[index_of(name)];
}

template <typename T>
void AdamW<T>::set_steps(int64_t steps) {
  check(steps >= 0, "AdamW::set_steps: negative step count");
  steps_ = steps;
}

template <typename T>
void AdamW<T>::step(double lr) {
  // The per-step scalars with and without weight decay (core/element_math.h, shared with the
  // device model).
  const em::AdamWStepScalars<T> scalars = em::adamw_step_scalars<T>(lr, options_, steps_ + 1);
  ++steps_;

  T* p = store_.values().data();
  const T* g = store_.grads().data();
  T* m = exp_avg_.data();
  T* v = exp_avg_sq_.data();
  // Every element is independent: any split over threads gives the same result.
#pragma omp parallel if (store_.numel() >= kParallelGrain)
  for (const Run& run : runs_) {
    const em::AdamWScalars<T>& s = scalars.of(run.decay);
#pragma omp for schedule(static) nowait
    for (int64_t i = run.begin; i < run.end; ++i) {
      // This file is compiled with -ffp-contract=off: the fused multiply-adds are the
      // explicit ones of adamw_update, where torch's kernels (as Debian's GCC built them) use
      // them: add_'s vectorised fmadd(g, alpha, m), and addcmul_'s m + (value*g)*g.
      em::adamw_update(p[i], m[i], v[i], g[i], s);
    }
  }
}

template class AdamW<float>;
template class AdamW<double>;

}  // namespace primal
