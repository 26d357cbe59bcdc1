// What the model needs from its tensor-parallel group (SPEC §5): the ranks that hold the other
// heads of every attention layer and the other slices of every MLP. comm/ implements it over
// MPI (and NCCL); the model never sees those libraries.
#pragma once

#include <cstdint>
#include <stdexcept>

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

// A rank's place in a tensor-parallel group, without the group: the shard layout of a model
// whose arithmetic runs elsewhere (the device model builds its CPU twin with it, for the
// parameter registry: names, local shapes, sharding). It never communicates.
class ShardLayout final : public TensorParallelGroup {
 public:
  ShardLayout(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(float*, int64_t) override { refuse(); }
  void all_reduce_sum(double*, int64_t) override { refuse(); }

 private:
  [[noreturn]] static void refuse() {
    throw std::logic_error("ShardLayout: a layout-only tensor-parallel group cannot sum");
  }
  int rank_, size_;
};

// Sums t over the group in place; nothing to do without one.
template <typename T>
void tp_all_reduce(TensorParallelGroup* tp, const Tensor<T>& t) {
  if (tp && tp->size() > 1) tp->all_reduce_sum(t.data(), t.numel());
}

}  // namespace primal
