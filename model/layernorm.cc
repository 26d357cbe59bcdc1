#include "model/layernorm.h"

#include <cmath>

#include "core/parallel.h"

#include "core/element_math.h"
#include "core/elementwise.h"
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
  const int64_t rows = x.numel() / width_;
  x_ = x;
  mean_ = arena.alloc<T>({rows});
  rstd_ = arena.alloc<T>({rows});
  Tensor<T> y = arena.alloc<T>(x.shape());
  forward_rows(x.data(), rows, y.data(), mean_.data(), rstd_.data());
  return y;
}

template <typename T>
void LayerNorm<T>::backward(Arena& arena, const Tensor<T>& dy, const Tensor<T>& dx) {
  backward_rows(arena, x_.data(), dy.data(), mean_.data(), rstd_.data(), x_.numel() / width_,
                dx.data());
}

template <typename T>
void LayerNorm<T>::forward_rows(const T* x, int64_t rows, T* y, T* mean, T* rstd) const {
  const int64_t C = width_;
  const T* w = weight_->value.data();
  const T* b = bias_->value.data();
#pragma omp parallel for schedule(static) if (rows * C > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    if (r + kPrefetchRows < rows) prefetch(xr + kPrefetchRows * C, sizeof(T) * C);
    // The row sums in SIMD lanes (a fixed order, not left to right): in order, one add's
    // latency per element made these sums most of the normalisation's time.
    T m = 0, var = 0;
#pragma omp simd reduction(+ : m)
    for (int64_t j = 0; j < C; ++j) m += xr[j];
    m /= T(C);
#pragma omp simd reduction(+ : var)
    for (int64_t j = 0; j < C; ++j) var += (xr[j] - m) * (xr[j] - m);
    var /= T(C);
    const T rs = em::layernorm_rstd(var, T(eps_));
    for (int64_t j = 0; j < C; ++j) yr[j] = em::layernorm_normalise(xr[j], m, rs, w[j], b[j]);
    mean[r] = m;
    rstd[r] = rs;
  }
}

template <typename T>
void LayerNorm<T>::apply_rows(const T* x, int64_t rows, const T* mean, const T* rstd, T* y) const {
  const int64_t C = width_;
  const T* w = weight_->value.data();
  const T* b = bias_->value.data();
#pragma omp parallel for schedule(static) if (rows * C > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    if (r + kPrefetchRows < rows) prefetch(xr + kPrefetchRows * C, sizeof(T) * C);
    for (int64_t j = 0; j < C; ++j)
      yr[j] = em::layernorm_normalise(xr[j], mean[r], rstd[r], w[j], b[j]);
  }
}

template <typename T>
void LayerNorm<T>::backward_rows(Arena& arena, const T* x, const T* dy, const T* mean,
                                 const T* rstd, int64_t rows, T* dx, T* dweight, T* dbias) const {
  const int64_t C = width_;
  const T* w = weight_->value.data();
#pragma omp parallel for schedule(static) if (rows * C > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * C;
    const T* dyr = dy + r * C;
    T* dxr = dx + r * C;
    if (r + kPrefetchRows < rows) {
      prefetch(xr + kPrefetchRows * C, sizeof(T) * C);
      prefetch_for_write(dxr + kPrefetchRows * C, sizeof(T) * C);
    }
    const T m = mean[r], rs = rstd[r];
    T sum_dxhat = 0, sum_dxhat_xhat = 0;
#pragma omp simd reduction(+ : sum_dxhat, sum_dxhat_xhat)
    for (int64_t j = 0; j < C; ++j) {
      T dxhat = dyr[j] * w[j];
      sum_dxhat += dxhat;
      sum_dxhat_xhat += dxhat * (xr[j] - m) * rs;
    }
    sum_dxhat /= T(C);
    sum_dxhat_xhat /= T(C);
    for (int64_t j = 0; j < C; ++j) {
      const T xhat = (xr[j] - m) * rs;
      dxr[j] += em::layernorm_dx(dyr[j] * w[j], xhat, sum_dxhat, sum_dxhat_xhat, rs);
    }
  }
  // dw and db side by side in one [2C] reduction.
  const Arena::Mark temporaries = arena.mark();
  Tensor<T> dwb = arena.zeros<T>({2 * C});
  reduce_rows<T>(arena, rows, 2 * C, dwb.data(), [&](int64_t r0, int64_t r1, T* acc) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * C;
      const T* dyr = dy + r * C;
      for (int64_t j = 0; j < C; ++j) {
        acc[j] += dyr[j] * (xr[j] - mean[r]) * rstd[r];
        acc[C + j] += dyr[j];
      }
    }
  });
  T* dw = dweight ? dweight : weight_->grad.data();
  T* db = dbias ? dbias : bias_->grad.data();
  for (int64_t j = 0; j < C; ++j) {
    dw[j] += dwb[j];
    db[j] += dwb[C + j];
  }
  arena.release(temporaries);
}

template class LayerNorm<float>;
template class LayerNorm<double>;

}  // namespace primal
