// The interface every attention kind's layer implements, so that a Transformer layer is built
// from a per-layer list of kinds (SPEC §3; the kinds: model/attention_kinds.h).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/arena.h"
#include "model/layernorm.h"
#include "model/linear.h"
#include "model/sequence.h"

namespace primal {

// One PRIMAL layer's partial KSVD sums over this rank's tokens and heads (SPEC §3.4):
//   e = sum_{b,n real; h; i} 0.5 (e[b,h,n,i] Lambda[h,i])^2,  r likewise,
//   t = sum_h trace(We[h]^T Wr[h]).
struct KsvdPartial {
  double e = 0, r = 0, t = 0;
};

// What a PRIMAL layer's backward needs of the KSVD loss: d loss / d e-sum (the same for the
// r-sum) and d loss / d t-sum.
struct KsvdGrad {
  double de = 0, dt = 0;
};

template <typename T>
class Attention {
 public:
  virtual ~Attention() = default;
  // x [B, N, C] -> out [B, N, C], of norm(x) where a norm is given (the layer's LN1, applied
  // here so that a layer may recompute it for backward instead of keeping it). A PRIMAL layer
  // writes its partial sums.
  virtual Tensor<T> forward(Arena& arena, const Tensor<T>& x, const Sequence& seq,
                            KsvdPartial& ksvd, LayerNorm<T>* norm) = 0;
  // dx += d loss / dx; parameter gradients accumulate. With a norm, the gradient of its output
  // is summed over the tensor-parallel group before the norm's backward; without one, dx gets
  // this rank's partial sum (the caller sums it).
  virtual void backward(Arena& arena, const Tensor<T>& dout, const Tensor<T>& dx,
                        const KsvdGrad& ksvd) = 0;

  // Incremental generation (model/generator.h: causal, one process, one token at a time).
  // Values of state the layer keeps between tokens for contexts of up to max_len tokens.
  virtual int64_t decode_state_size(int max_len) const = 0;
  // Of those, the values the step at position reads: what a token costs.
  virtual int64_t decode_state_read(int position) const = 0;
  // x [1, C] (LN1's output for the token at position) -> out [1, C], in arena; state
  // (decode_state_size values) is updated; at position 0 it holds what an earlier sequence
  // left, and the step starts it afresh. Makes the same arena
  // requests at every position, so that a generator's arena never grows after its first step.
  virtual Tensor<T> decode_step(Arena& arena, const Tensor<T>& x, std::span<T> state,
                                int position) = 0;

  // Analysis (the attention spectrum, trainer/spectrum.h): this rank's heads, and the n x n
  // matrix that mixes the first n positions of head h (this rank's numbering) of sample b in
  // the last forward, as doubles, row-major.
  virtual int local_heads() const = 0;
  virtual void analysed_matrix(int b, int h, int n, std::vector<double>& out) const = 0;
};

// The input side of a layer whose heads read x through one column-parallel projection (its
// qkv): dx += d loss / dx from d loss / d projection output. With the layer's norm, this
// rank's heads give a partial sum of the norm's output gradient, summed over the group before
// the norm's backward; without one, dx gets the partial sum (the caller sums it).
template <typename T>
void input_projection_backward(Arena& arena, Linear<T>& projection, const Tensor<T>& dprojected,
                               LayerNorm<T>* norm, TensorParallelGroup* tp, const Tensor<T>& dx) {
  if (!norm) {
    projection.backward(arena, dprojected, dx);
    return;
  }
  Tensor<T> dnormed = arena.zeros<T>(dx.shape());
  projection.backward(arena, dprojected, dnormed);
  tp_all_reduce(tp, dnormed);
  norm->backward(arena, dnormed, dx);
}

}  // namespace primal
