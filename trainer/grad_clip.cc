#include "trainer/grad_clip.h"

#include <cmath>

#include "core/element_math.h"
#include "core/reduce.h"

namespace primal {

template <typename T>
double sum_of_squares(const T* x, int64_t n) {
  double partial[kReduceChunks];
#pragma omp parallel for schedule(static) if (n >= kParallelGrain)
  for (int64_t c = 0; c < kReduceChunks; ++c) {
    const int64_t begin = n * c / kReduceChunks, end = n * (c + 1) / kReduceChunks;
    // Four accumulators (a fixed function of the chunk) keep the adds pipelined.
    double acc[4] = {0, 0, 0, 0};
    int64_t i = begin;
    for (; i + 4 <= end; i += 4) {
      for (int k = 0; k < 4; ++k) acc[k] += double(x[i + k]) * double(x[i + k]);
    }
    for (; i < end; ++i) acc[0] += double(x[i]) * double(x[i]);
    partial[c] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  }
  double sum = 0;
  for (int64_t c = 0; c < kReduceChunks; ++c) sum += partial[c];
  return sum;
}

template <typename T>
double global_grad_norm(ParameterStore<T>& store) {
  return std::sqrt(grad_sum_of_squares(store));
}

template <typename T>
double clip_grads_to_norm(ParameterStore<T>& store, double norm, double max_norm) {
  em::check_max_norm(max_norm);
  const double coef = em::clip_coefficient(norm, max_norm);
  if (coef >= 1) return 1;
  const T scale = T(coef);
  T* g = store.grads().data();
  const int64_t n = store.numel();
#pragma omp parallel for schedule(static) if (n >= kParallelGrain)
  for (int64_t i = 0; i < n; ++i) g[i] *= scale;
  return coef;
}

template <typename T>
double clip_grad_norm(ParameterStore<T>& store, double max_norm) {
  const double norm = global_grad_norm(store);
  clip_grads_to_norm(store, norm, max_norm);
  return norm;
}

#define PRIMAL_INSTANTIATE(T)                                                \
  template double sum_of_squares<T>(const T*, int64_t);                      \
  template double global_grad_norm<T>(ParameterStore<T>&);                   \
  template double clip_grads_to_norm<T>(ParameterStore<T>&, double, double); \
  template double clip_grad_norm<T>(ParameterStore<T>&, double);
PRIMAL_INSTANTIATE(float)
PRIMAL_INSTANTIATE(double)
#undef PRIMAL_INSTANTIATE

}  // namespace primal
