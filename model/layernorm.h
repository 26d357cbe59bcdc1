// LayerNorm over the last axis (width C).
#pragma once

#include <string>

#include "core/arena.h"
#include "model/parameters.h"

namespace primal {

template <typename T>
class LayerNorm {
 public:
  LayerNorm(ParameterStore<T>& params, const std::string& name, int width, double eps);

  // y = (x - mean) * rstd * w + b,  rstd = 1 / sqrt(var + eps)   (per row)
  Tensor<T> forward(Arena& arena, const Tensor<T>& x);
  // dxhat = dy * w;  dx += rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
  // dw += sum_rows dy * xhat;  db += sum_rows dy
  void backward(Arena& arena, const Tensor<T>& dy, const Tensor<T>& dx);

 private:
  Parameter<T>* weight_;
  Parameter<T>* bias_;
  int width_;
  double eps_;
  Tensor<T> x_, mean_, rstd_;  // saved by forward
};

}  // namespace primal
