// The Transformer's MLP: fc2(GELU(fc1(x))), GELU in its exact erf form.
// Tensor parallel: fc1 column-parallel, fc2 row-parallel (SPEC §5).
#pragma once

#include <string>

#include "model/linear.h"

namespace primal {

// gelu(x) = 0.5 x (1 + erf(x / sqrt 2));  gelu'(x) = 0.5 (1 + erf(x / sqrt 2)) + x pdf(x)
template <typename T>
Tensor<T> gelu_forward(Arena& arena, const Tensor<T>& x);
// dx = dy * gelu'(x)   (dx may be dy: in place)
template <typename T>
void gelu_backward(const Tensor<T>& x, const Tensor<T>& dy, const Tensor<T>& dx);

template <typename T>
class Mlp {
 public:
  Mlp(ParameterStore<T>& params, const std::string& name, int width, int hidden,
      TensorParallelGroup* tp = nullptr);

  // h = fc1(x);  y = fc2(gelu(h))
  Tensor<T> forward(Arena& arena, const Tensor<T>& x);
  // the same steps in reverse; dx += ... (under TP, this rank's partial sum)
  void backward(Arena& arena, const Tensor<T>& dy, const Tensor<T>& dx);

 private:
  Linear<T> fc1_, fc2_;
  Tensor<T> h_;  // fc1 output, saved for GELU's backward
};

}  // namespace primal
