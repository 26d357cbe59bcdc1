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

  // The same on `rows` rows of raw storage, keeping nothing: for a caller that normalises its
  // input a block of rows at a time and recomputes it for backward (Mlp). forward_rows writes
  // y and each row's mean and rstd; backward_rows reads them back.
  void forward_rows(const T* x, int64_t rows, T* y, T* mean, T* rstd) const;
  // y from x and the row statistics forward_rows wrote: the recomputation for backward.
  void apply_rows(const T* x, int64_t rows, const T* mean, const T* rstd, T* y) const;
  // dw and db go into the given accumulators where they are set (a block's slot).
  void backward_rows(Arena& arena, const T* x, const T* dy, const T* mean, const T* rstd,
                     int64_t rows, T* dx, T* dweight = nullptr, T* dbias = nullptr) const;
  Parameter<T>* weight() const { return weight_; }
  Parameter<T>* bias() const { return bias_; }
  int width() const { return width_; }
  double eps() const { return eps_; }

 private:
  Parameter<T>* weight_;
  Parameter<T>* bias_;
  int width_;
  double eps_;
  Tensor<T> x_, mean_, rstd_;  // saved by forward
};

}  // namespace primal
