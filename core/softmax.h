// One row of a softmax, in place: row[j] = e^(row[j] - max) / sum over the first `keys`
// entries. The CPU attention's forward and the generator's one-token step share it, so that
// both give the same bits. Vectorised: the exponentials through em::exp_vec, the sum in the
// compiler's fixed SIMD order (the same on every run of a build, whatever the thread count).
#pragma once

#include <algorithm>
#include <limits>

#include "core/element_math.h"

namespace primal {

template <typename T>
void softmax_row(T* row, int keys) {
  T max = -std::numeric_limits<T>::infinity();
  for (int j = 0; j < keys; ++j) max = std::max(max, row[j]);
#pragma omp simd
  for (int j = 0; j < keys; ++j) row[j] = em::exp_vec(row[j] - max);
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int j = 0; j < keys; ++j) sum += row[j];
#pragma omp simd
  for (int j = 0; j < keys; ++j) row[j] /= sum;
}

}  // namespace primal
