// What the model needs from its tensor-parallel group (SPEC §5): the ranks that hold the other
// heads of every attention layer and the other slices of every MLP. comm/ implements it over
// MPI (and NCCL); the model never sees those libraries.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace primal {

class TensorParallelGroup {
 public:
  virtual ~TensorParallelGroup() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual void all_reduce_sum(float* data, int64_t count) = 0;
  virtual void all_reduce_sum(double* data, int64_t count) = 0;
};

// Sums t over the group in place; nothing to do without one.
template <typename T>
void tp_all_reduce(TensorParallelGroup* tp, const Tensor<T>& t) {
  if (tp && tp->size() > 1) tp->all_reduce_sum(t.data(), t.numel());
}

}  // namespace primal
