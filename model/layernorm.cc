#include "model/layernorm.h"

#include <cmath>

#include "core/parallel.h"

#include "core/element_math.h"
#include "core/reduce.h"

namespace primal {

template <typename T>
LayerNorm<T>::LayerNorm(ParameterStore<T>& params, const std::string& name, int width, double eps)
    : weight_(params.add(name + ".weight", {width}, Split::kReplicated, Init::kOnes)),
      bias_(params.add(name + ".bias", {width}, Split::kReplicated, Init::kZeros)),
      width_(width),
      eps_(eps) {}

template <typename T>
Tensor<T> LayerNorm<T>::forward(Arena& arena, const Tensor<T>& x) {
  const int64_t rows = x.numel() / width_, C = width_;
  x_ = x;
  mean_ = arena.alloc<T>({rows});
  rstd_ = arena.alloc<T>({rows});
  Tensor<T> y = arena.alloc<T>(x.shape());
  const T* w = weight_->value.data();
  const T* b = bias_->value.data();
#pragma omp parallel for schedule(static) if (rows * C > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x.data() + r * C;
    T* yr = y.data() + r * C;
    T mean = 0, var = 0;
    for (int64_t j = 0; j < C; ++j) mean += xr[j];
    mean /= T(C);
    for (int64_t j = 0; j < C; ++j) var += (xr[j] - mean) * (xr[j] - mean);
    var /= T(C);
    const T rstd = em::layernorm_rstd(var, T(eps_));
    for (int64_t j = 0; j < C; ++j) yr[j] = em::layernorm_normalise(xr[j], mean, rstd, w[j], b[j]);
    mean_[r] = mean;
    rstd_[r] = rstd;
  }
  return y;
}

template <typename T>
void LayerNorm<T>::backward(Arena& arena, const Tensor<T>& dy, const Tensor<T>& dx) {
  const int64_t rows = x_.numel() / width_, C = width_;
  const T* w = weight_->value.data();
#pragma omp parallel for schedule(static) if (rows * C > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x_.data() + r * C;
    const T* dyr = dy.data() + r * C;
    T* dxr = dx.data() + r * C;
    const T mean = mean_[r], rstd = rstd_[r];
    T sum_dxhat = 0, sum_dxhat_xhat = 0;
    for (int64_t j = 0; j < C; ++j) {
      T dxhat = dyr[j] * w[j];
      sum_dxhat += dxhat;
      sum_dxhat_xhat += dxhat * (xr[j] - mean) * rstd;
    }
    sum_dxhat /= T(C);
    sum_dxhat_xhat /= T(C);
    for (int64_t j = 0; j < C; ++j) {
      const T xhat = (xr[j] - mean) * rstd;
      dxr[j] += em::layernorm_dx(dyr[j] * w[j], xhat, sum_dxhat, sum_dxhat_xhat, rstd);
    }
  }
  // dw and db side by side in one [2C] reduction.
  Tensor<T> dwb = arena.zeros<T>({2 * C});
  reduce_rows<T>(arena, rows, 2 * C, dwb.data(), [&](int64_t r0, int64_t r1, T* acc) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x_.data() + r * C;
      const T* dyr = dy.data() + r * C;
      for (int64_t j = 0; j < C; ++j) {
        acc[j] += dyr[j] * (xr[j] - mean_[r]) * rstd_[r];
        acc[C + j] += dyr[j];
      }
    }
  });
  for (int64_t j = 0; j < C; ++j) {
    weight_->grad[j] += dwb[j];
    bias_->grad[j] += dwb[C + j];
  }
}

template class LayerNorm<float>;
template class LayerNorm<double>;

}  // namespace primal
