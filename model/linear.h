// Linear layer, PyTorch convention: W stored [out, in] row-major.
#pragma once

#include <string>

#include "core/arena.h"
#include "model/parameters.h"

namespace primal {

template <typename T>
class Linear {
 public:
  // split: how tensor parallelism cuts it (kColumn: output rows, kRow: input columns).
  Linear(ParameterStore<T>& params, const std::string& name, int in, int out,
         Split split = Split::kReplicated);

  // y = x W^T + b          x [rows, in] -> y [rows, out]
  Tensor<T> forward(Arena& arena, const Tensor<T>& x);
  // dx += dy W;  dW += dy^T x;  db += sum_rows dy        (dx may be empty: not needed)
  void backward(Arena& arena, const Tensor<T>& dy, const Tensor<T>& dx);

  Parameter<T>* weight() const { return weight_; }
  Parameter<T>* bias() const { return bias_; }

 private:
  Parameter<T>* weight_;
  Parameter<T>* bias_;
  int in_, out_;
  Tensor<T> x_;  // saved by forward
};

}  // namespace primal
