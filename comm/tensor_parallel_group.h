// The model's view of its tensor-parallel group (model/tensor_parallel.h), served by a
// Communicator: the TP all-reduces of row-parallel outputs and input gradients go here.
#pragma once

#include "comm/communicator.h"
#include "model/tensor_parallel.h"

namespace primal {

class CommTensorParallelGroup final : public TensorParallelGroup {
 public:
  explicit CommTensorParallelGroup(Communicator& tp) : tp_(tp) {}
  int rank() const override { return tp_.rank(); }
  int size() const override { return tp_.size(); }
  void all_reduce_sum(float* data, int64_t count) override {
    tp_.all_reduce(data, count, ReduceOp::kSum);
  }
  void all_reduce_sum(double* data, int64_t count) override {
    tp_.all_reduce(data, count, ReduceOp::kSum);
  }

 private:
  Communicator& tp_;
};

}  // namespace primal
