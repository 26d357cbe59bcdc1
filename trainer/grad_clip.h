// Global-norm gradient clipping, as torch.nn.utils.clip_grad_norm_ (norm_type 2):
//   norm = sqrt(sum over every gradient element of g^2)
//   coef = max_norm / (norm + 1e-6);  g *= coef  only if coef < 1
// The sum of squares is taken in double over kReduceChunks fixed chunks of the flat gradient
// buffer, added in chunk order: bitwise the same for any number of threads.
// Split in pieces for data/tensor parallelism: each rank computes grad_sum_of_squares() over
// the gradients it owns, the sums are all-reduced, and every rank calls
// clip_grads_to_norm(store, sqrt(total), max_norm).
#pragma once

#include <cstdint>

#include "model/parameters.h"

namespace primal {

// sum of x[i]^2, i < n, in double; deterministic as above.
template <typename T>
double sum_of_squares(const T* x, int64_t n);

template <typename T>
double grad_sum_of_squares(ParameterStore<T>& store) {
  return sum_of_squares(store.grads().data(), store.numel());
}

// sqrt(grad_sum_of_squares(store)).
template <typename T>
double global_grad_norm(ParameterStore<T>& store);

// Scales every gradient by max_norm / (norm + 1e-6) if that is below 1, given the global
// norm. Returns the factor applied (1 when none). A non-finite norm leaves the gradients as
// they are (the caller sees it and skips the step). max_norm must be finite and > 0.
template <typename T>
double clip_grads_to_norm(ParameterStore<T>& store, double norm, double max_norm);

// Computes the global norm, clips to max_norm, and returns the norm before clipping.
template <typename T>
double clip_grad_norm(ParameterStore<T>& store, double max_norm);

}  // namespace primal
