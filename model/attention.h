// The interface both attention kinds share, so a Transformer layer is built from a
// per-layer list of SOFTMAX/PRIMAL (SPEC §3).
#pragma once

#include "core/arena.h"
#include "model/layernorm.h"
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
};

}  // namespace primal
