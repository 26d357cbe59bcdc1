// Linear layer, PyTorch convention: W stored [out, in] row-major. Under tensor parallelism
// (Megatron's column- and row-parallel linear layers):
//   column-parallel: W cut by output rows; y is this rank's slice of the outputs.
//   row-parallel:    W cut by input columns; x is this rank's slice of the inputs, the partial
//                    products are summed over the group, and the (replicated) bias added once.
#pragma once

#include <string>

#include "core/arena.h"
#include "model/parameters.h"
#include "model/tensor_parallel.h"

namespace primal {

template <typename T>
class Linear {
 public:
  // in, out: full sizes. sharding: kReplicated, kColumn (with blocks) or kRow; tp: the group
  // that shares a cut layer (may be null for one process).
  Linear(ParameterStore<T>& params, const std::string& name, int in, int out,
         Sharding sharding = {}, TensorParallelGroup* tp = nullptr);

  // y = x W^T + b          x [rows, in_local] -> y [rows, out_local]
  // row-parallel: y = allreduce_tp(x W^T) + b
  Tensor<T> forward(Arena& arena, const Tensor<T>& x);
  // dx += dy W;  dW += dy^T x;  db += sum_rows dy        (dx may be empty: not needed)
  // (column-parallel: dx is this rank's partial sum; the caller sums it over the group once
  // for all the layers reading the same input.)
  void backward(Arena& arena, const Tensor<T>& dy, const Tensor<T>& dx);

  // The same two steps for a caller that runs the layer on blocks of rows and does not keep
  // their input (model/blocks.h): forward_into writes y [rows, out_local] and saves nothing;
  // backward_from takes the input x back from the caller, and adds dW and db into the given
  // accumulators (a block's slot) instead of the parameters' gradients where they are set.
  void forward_into(const Tensor<T>& x, const Tensor<T>& y);
  void backward_from(Arena& arena, const Tensor<T>& x, const Tensor<T>& dy, const Tensor<T>& dx,
                     T* dweight = nullptr, T* dbias = nullptr);

  int in() const { return in_; }    // local
  int out() const { return out_; }  // local

  Parameter<T>* weight() const { return weight_; }
  Parameter<T>* bias() const { return bias_; }

 private:
  Parameter<T>* weight_;
  Parameter<T>* bias_;
  TensorParallelGroup* tp_;
  bool row_parallel_;
  int in_, out_;
  Tensor<T> x_;  // saved by forward
};

}  // namespace primal
