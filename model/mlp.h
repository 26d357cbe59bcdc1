// The Transformer's MLP: fc2(GELU(fc1(x))), GELU in its exact erf form, optionally on a
// LayerNorm of x (the Pre-LN layer's LN2) that it applies and recomputes itself.
// Tensor parallel: fc1 column-parallel, fc2 row-parallel (SPEC §5).
//
// Memory: it runs on blocks of rows (below). Of a block only h = fc1(x) is kept for
// backward; LN(x) and GELU(h) are recomputed there block by block, so that both live in cache
// once and never as whole [rows, F] tensors (the norm's row statistics are kept: two
// numbers a row).
#pragma once

#include <string>

#include "model/layernorm.h"
#include "model/linear.h"

namespace primal {

// gelu(x) = 0.5 x (1 + erf(x / sqrt 2));  gelu'(x) = 0.5 (1 + erf(x / sqrt 2)) + x pdf(x)
template <typename T>
Tensor<T> gelu_forward(Arena& arena, const Tensor<T>& x);
// y = gelu(x) and grad = gelu'(x) in one pass (one erf per element): the MLP's backward
// recomputes its GELU output with it and multiplies the incoming gradient by grad.
template <typename T>
void gelu_with_grad(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& grad);

// Rows of one block: as many as make a [rows, F] block of kMlpBlockBytes (its h, GELU(h) and
// their gradients stay in a core's L2 cache; 512 rows at F = 128 measured fastest of 128-4096
// on the ListOps step), at least kMlpMinBlockRows (narrower GEMMs lose more than the cache
// gains). Under tensor parallelism the whole batch is one block, so that fc2's sum over the
// group stays one collective per layer (and fc1's input gradient's likewise).
inline constexpr int64_t kMlpBlockBytes = int64_t{256} << 10;
inline constexpr int64_t kMlpMinBlockRows = 128;

template <typename T>
class Mlp {
 public:
  // tile_rows: rows per block, 0 for the rule above (tests make it small to cross block
  // edges).
  Mlp(ParameterStore<T>& params, const std::string& name, int width, int hidden,
      TensorParallelGroup* tp = nullptr, int64_t tile_rows = 0);

  // h = fc1(norm ? norm(x) : x);  y = fc2(gelu(h))
  Tensor<T> forward(Arena& arena, const Tensor<T>& x, LayerNorm<T>* norm = nullptr);
  // the same steps in reverse; dx += ... With a norm, fc1's input gradient is summed over the
  // tensor-parallel group before the norm's backward; without one, dx is this rank's partial
  // sum (the caller sums it).
  void backward(Arena& arena, const Tensor<T>& dy, const Tensor<T>& dx);

  Linear<T>& fc1() { return fc1_; }
  Linear<T>& fc2() { return fc2_; }

 private:
  Linear<T> fc1_, fc2_;
  TensorParallelGroup* tp_;
  int64_t tile_rows_;
  LayerNorm<T>* norm_ = nullptr;
  Tensor<T> x_;           // saved by forward: the input (before the norm)
  Tensor<T> h_;           // fc1 output, saved for GELU's backward
  Tensor<T> norm_stats_;  // the norm's row means, then rstds [2, rows]: its output is recomputed
};

}  // namespace primal
