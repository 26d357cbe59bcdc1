// The interface both attention kinds share, so a Transformer layer is built from a
// per-layer list of SOFTMAX/PRIMAL (SPEC §3).
#pragma once

#include "core/arena.h"
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
  // x [B, N, C] (the LN1 output) -> out [B, N, C]. A PRIMAL layer writes its partial sums.
  virtual Tensor<T> forward(Arena& arena, const Tensor<T>& x, const Sequence& seq,
                            KsvdPartial& ksvd) = 0;
  // dx += d loss / dx; parameter gradients accumulate.
  virtual void backward(Arena& arena, const Tensor<T>& dout, const Tensor<T>& dx,
                        const KsvdGrad& ksvd) = 0;
};

}  // namespace primal
