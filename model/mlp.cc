#include "model/mlp.h"

#include "core/element_math.h"
#include "core/parallel.h"

namespace primal {

template <typename T>
Tensor<T> gelu_forward(Arena& arena, const Tensor<T>& x) {
  Tensor<T> y = arena.alloc<T>(x.shape());
  const int64_t n = x.numel();
  const T* in = x.data();
  T* out = y.data();
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) out[i] = em::gelu(in[i]);
  return y;
}

template <typename T>
void gelu_backward(const Tensor<T>& x, const Tensor<T>& dy, const Tensor<T>& dx) {
  const int64_t n = x.numel();
  const T* in = x.data();
  const T* g = dy.data();
  T* out = dx.data();
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] * em::gelu_grad(in[i]);
}

template <typename T>
Mlp<T>::Mlp(ParameterStore<T>& params, const std::string& name, int width, int hidden,
            TensorParallelGroup* tp)
    : fc1_(params, name + ".fc1", width, hidden, {Split::kColumn}, tp),
      fc2_(params, name + ".fc2", hidden, width, {Split::kRow}, tp) {}

template <typename T>
Tensor<T> Mlp<T>::forward(Arena& arena, const Tensor<T>& x) {
  h_ = fc1_.forward(arena, x);
  return fc2_.forward(arena, gelu_forward(arena, h_));
}

template <typename T>
void Mlp<T>::backward(Arena& arena, const Tensor<T>& dy, const Tensor<T>& dx) {
  Tensor<T> dh = arena.zeros<T>(h_.shape());
  fc2_.backward(arena, dy, dh);  // d loss / d gelu output, then in place:
  gelu_backward(h_, dh, dh);     // d loss / d h
  fc1_.backward(arena, dh, dx);
}

template Tensor<float> gelu_forward(Arena&, const Tensor<float>&);
template Tensor<double> gelu_forward(Arena&, const Tensor<double>&);
template void gelu_backward(const Tensor<float>&, const Tensor<float>&, const Tensor<float>&);
template void gelu_backward(const Tensor<double>&, const Tensor<double>&, const Tensor<double>&);
template class Mlp<float>;
template class Mlp<double>;

}  // namespace primal
