// Canonical multi-head softmax attention (SPEC §3.1), causal or padding-masked.
#pragma once

#include <string>

#include "model/attention.h"
#include "model/config.h"
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
  SoftmaxAttention(ParameterStore<T>& params, const std::string& name, const ModelConfig& config,
                   TensorParallelGroup* tp)
      : SoftmaxAttention(params, name, config.width, config.heads, tp) {}

  // qkv = x Wqkv^T + bqkv;  A = softmax(q k^T / sqrt(d) + mask);  out = concat_h(A v) Wo^T + bo
  // mask: -inf on future keys (causal) and on padded keys; padded queries get A = 0.
  Tensor<T> forward(Arena& arena, const Tensor<T>& x, const Sequence& seq, KsvdPartial& ksvd,
                    LayerNorm<T>* norm) override;
  // dA = dy v^T;  dv = A^T dy;  dS = A * (dA - rowsum(dA * A));
  // dq = dS k / sqrt(d);  dk = dS^T q / sqrt(d)
  void backward(Arena& arena, const Tensor<T>& dout, const Tensor<T>& dx,
                const KsvdGrad& ksvd) override;

  // Causal, for the token at position n; the state is a KV cache [H, max_len, d] of k, then
  // one of v (2 C max_len values; a token reads 2 C (n + 1)):
  //   q, k_n, v_n = x Wqkv^T + bqkv;  k_n, v_n go into the cache
  //   a_j = softmax_j(q_h . k_j / sqrt(d)), j = 0..n;  y_h = sum_j a_j v_j
  //   out = concat_h(y_h) Wo^T + bo
  int64_t decode_state_size(int max_len) const override;
  int64_t decode_state_read(int position) const override;
  Tensor<T> decode_step(Arena& arena, const Tensor<T>& x, std::span<T> state,
                        int position) override;

  // Analysed: A, the N x N matrix of the forward.
  int local_heads() const override { return heads_; }
  void analysed_matrix(int b, int h, int n, std::vector<double>& out) const override;

  Linear<T>& qkv_linear() { return qkv_; }
  Linear<T>& proj_linear() { return proj_; }
  int head_dim() const { return head_dim_; }
  // The last forward's attention matrices A [B, H, N, N] of this rank's heads. Valid until the
  // arena that forward used is reset.
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

// The attention matrix of head h (this rank's numbering) of sample b after the layer's last
// forward, restricted to the first n x n positions, as doubles in out (row-major).
template <typename T>
void softmax_attention_matrix(const SoftmaxAttention<T>& attn, int b, int h, int n,
                              std::vector<double>& out);

}  // namespace primal
