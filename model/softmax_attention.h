// Canonical multi-head softmax attention (SPEC §3.1), causal or padding-masked.
#pragma once

#include <string>

#include "model/attention.h"
#include "model/linear.h"

namespace primal {

// Queries per block under the causal mask: a block's scores are computed against the keys
// its last query may see only, which halves the products.
inline constexpr int kQueryBlock = 64;

template <typename T>
class SoftmaxAttention : public Attention<T> {
 public:
  // heads: of the whole layer; under TP this rank computes heads / tp->size() of them.
  SoftmaxAttention(ParameterStore<T>& params, const std::string& name, int width, int heads,
                   TensorParallelGroup* tp = nullptr);

  // qkv = x Wqkv^T + bqkv;  A = softmax(q k^T / sqrt(d) + mask);  out = concat_h(A v) Wo^T + bo
  // mask: -inf on future keys (causal) and on padded keys; padded queries get A = 0.
  Tensor<T> forward(Arena& arena, const Tensor<T>& x, const Sequence& seq, KsvdPartial& ksvd,
                    LayerNorm<T>* norm) override;
  // dA = dy v^T;  dv = A^T dy;  dS = A * (dA - rowsum(dA * A));
  // dq = dS k / sqrt(d);  dk = dS^T q / sqrt(d)
  void backward(Arena& arena, const Tensor<T>& dout, const Tensor<T>& dx,
                const KsvdGrad& ksvd) override;

  // The layer's Linears, for inference code that runs them one row at a time (Generator).
  Linear<T>& qkv_linear() { return qkv_; }
  Linear<T>& proj_linear() { return proj_; }
  int head_dim() const { return head_dim_; }
  // The last forward's attention matrices A [B, H, N, N] of this rank's heads (analysis: the
  // attention spectrum). Valid until the arena that forward used is reset.
  const Tensor<T>& saved_attention() const { return attn_; }

 private:
  Linear<T> qkv_, proj_;
  TensorParallelGroup* tp_;
  int heads_, head_dim_;  // heads_: this rank's
  // saved by forward
  Sequence seq_;
  LayerNorm<T>* norm_ = nullptr;
  Tensor<T> qkv_out_;  // [B, N, 3C]
  Tensor<T> attn_;     // A [B, H, N, N]
};

}  // namespace primal
