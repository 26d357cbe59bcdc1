#include "model/linear.h"

#include "core/blas.h"
#include "core/elementwise.h"

#include "core/parallel.h"
#include "core/reduce.h"

namespace primal {

template <typename T>
Linear<T>::Linear(ParameterStore<T>& params, const std::string& name, int in, int out,
                  Sharding sharding, TensorParallelGroup* tp)
    : weight_(params.add(name + ".weight", {out, in}, sharding, Init::kNormal)),
      // A row-parallel layer's bias is added once, after the all-reduce: replicated.
      bias_(params.add(name + ".bias", {out}, sharding.split == Split::kRow ? Sharding{} : sharding,
                       Init::kZeros)),
      tp_(tp),
      row_parallel_(sharding.split == Split::kRow && tp && tp->size() > 1),
      in_(int(weight_->local_shape[1])),
      out_(int(weight_->local_shape[0])) {}

template <typename T>
Tensor<T> Linear<T>::forward(Arena& arena, const Tensor<T>& x) {
  x_ = x;
  Tensor<T> y = arena.alloc<T>({x.numel() / in_, out_});
  forward_into(x, y);
  return y;
}

template <typename T>
void Linear<T>::forward_into(const Tensor<T>& x, const Tensor<T>& y) {
  const int64_t rows = x.numel() / in_;
  const int out = out_;
  const T* b = bias_->value.data();
  T* yp = y.data();
  // The bias is added after the sum over the group (row-parallel) or written first and
  // accumulated onto (beta 1: OpenBLAS would otherwise make a pass to zero y).
  auto fill_bias = [&](bool add) {
#pragma omp parallel for schedule(static) if (rows * out > kParallelGrain)
    for (int64_t r = 0; r < rows; ++r) {
      T* yr = yp + r * out;
      if (r + kPrefetchRows < rows) prefetch_for_write(yr + kPrefetchRows * out, sizeof(T) * out);
      if (add) {
        for (int j = 0; j < out; ++j) yr[j] += b[j];
      } else {
        for (int j = 0; j < out; ++j) yr[j] = b[j];
      }
    }
  };
  if (row_parallel_) {
    gemm(Trans::kNo, Trans::kYes, rows, out, in_, T(1), x.data(), in_, weight_->value.data(), in_,
         T(0), yp, out);
    tp_all_reduce(tp_, y);
    fill_bias(true);
    return;
  }
  fill_bias(false);
  gemm(Trans::kNo, Trans::kYes, rows, out, in_, T(1), x.data(), in_, weight_->value.data(), in_,
       T(1), yp, out);
}

template <typename T>
void Linear<T>::backward(Arena& arena, const Tensor<T>& dy, const Tensor<T>& dx) {
  backward_from(arena, x_, dy, dx);
}

template <typename T>
void Linear<T>::backward_from(Arena& arena, const Tensor<T>& x, const Tensor<T>& dy,
                              const Tensor<T>& dx, T* dweight, T* dbias) {
  const int64_t rows = x.numel() / in_;
  if (!dx.empty()) {
    gemm(Trans::kNo, Trans::kNo, rows, in_, out_, T(1), dy.data(), out_, weight_->value.data(), in_,
         T(1), dx.data(), in_);
  }
  gemm(Trans::kYes, Trans::kNo, out_, in_, rows, T(1), dy.data(), out_, x.data(), in_, T(1),
       dweight ? dweight : weight_->grad.data(), in_);
  add_column_sums(arena, dy.data(), rows, out_, out_, dbias ? dbias : bias_->grad.data());
}

template class Linear<float>;
template class Linear<double>;

}  // namespace primal
