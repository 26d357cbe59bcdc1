#include "model/linear.h"

#include "core/blas.h"

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
  const int64_t rows = x.numel() / in_;
  x_ = x;
  Tensor<T> y = arena.alloc<T>({rows, out_});
  const T* b = bias_->value.data();
  if (row_parallel_) {
    gemm(Trans::kNo, Trans::kYes, rows, out_, in_, T(1), x.data(), in_, weight_->value.data(), in_,
         T(0), y.data(), out_);
    tp_all_reduce(tp_, y);
#pragma omp parallel for schedule(static) if (rows * out_ > kParallelGrain)
    for (int64_t r = 0; r < rows; ++r)
      for (int j = 0; j < out_; ++j) y[r * out_ + j] += b[j];
    return y;
  }
#pragma omp parallel for schedule(static) if (rows * out_ > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) std::copy(b, b + out_, y.data() + r * out_);
  gemm(Trans::kNo, Trans::kYes, rows, out_, in_, T(1), x.data(), in_, weight_->value.data(), in_,
       T(1), y.data(), out_);
  return y;
}

template <typename T>
void Linear<T>::backward(Arena& arena, const Tensor<T>& dy, const Tensor<T>& dx) {
  const int64_t rows = x_.numel() / in_;
  if (!dx.empty()) {
    gemm(Trans::kNo, Trans::kNo, rows, in_, out_, T(1), dy.data(), out_, weight_->value.data(), in_,
         T(1), dx.data(), in_);
  }
  gemm(Trans::kYes, Trans::kNo, out_, in_, rows, T(1), dy.data(), out_, x_.data(), in_, T(1),
       weight_->grad.data(), in_);
  add_column_sums(arena, dy.data(), rows, out_, out_, bias_->grad.data());
}

template class Linear<float>;
template class Linear<double>;

}  // namespace primal
