// Linear attention (Katharopoulos, Vyas, Pappas, Fleuret, "Transformers are RNNs", ICML 2020):
// softmax(q k^T) replaced by the kernel phi(q) phi(k)^T with the feature map
// phi(x) = elu(x) + 1 > 0, so that the keys and values reduce to a d x d state and the cost is
// linear in N; causal by prefix sums of that state. One of the efficient-attention baselines
// the Primal-Attention paper compares against on LRA. docs/design.md, "Attention kinds".
#pragma once

#include <string>

#include "model/attention.h"
#include "model/config.h"
#include "model/linear.h"

namespace primal {

// Rows of a causal block: within a block the kernel products run as a masked block x block
// GEMM, across blocks through the state.
inline constexpr int kLinearAttentionBlock = 64;

template <typename T>
class LinearAttention : public Attention<T> {
 public:
  // heads: of the whole layer; under TP this rank computes heads / tp->size() of them.
  // block: rows of a causal block (tests make it small).
  LinearAttention(ParameterStore<T>& params, const std::string& name, int width, int heads,
                  TensorParallelGroup* tp = nullptr, int block = kLinearAttentionBlock);
  LinearAttention(ParameterStore<T>& params, const std::string& name, const ModelConfig& config,
                  TensorParallelGroup* tp)
      : LinearAttention(params, name, config.width, config.heads, tp) {}

  // qkv = x Wqkv^T + bqkv;  per head, on real positions (a padded one has phi = 0):
  //   fq = phi(q), fk = phi(k), va = [v 1]                            [N, d], [N, d], [N, d+1]
  //   S_n = sum_{j<=n} fk_j va_j^T  (causal)  or  sum_j fk_j va_j^T  [d, d+1]: its last column
  //         is the normaliser sum_j fk_j, the rest sum_j fk_j v_j^T
  //   num_n = fq_n^T S_n;  y_n = num_n[:d] / D_n,  D_n = num_n[d] + eps
  //   out = concat_h(y_h) Wo^T + bo
  // Causal: blocks of `block` rows; S before each block is kept, and within the block
  //   num = fq S_prev + (fq fk^T masked to j <= n) va.
  Tensor<T> forward(Arena& arena, const Tensor<T>& x, const Sequence& seq, KsvdPartial& ksvd,
                    LayerNorm<T>* norm) override;
  // dnum_n = [dy_n, -dy_n . y_n] / D_n;  dfq = dnum S^T;  R = sum_n fq_n dnum_n^T (the state's
  // gradient); dfk = va R^T; dva = fk R. Causal: over the blocks in reverse, R of the later
  // blocks, plus within the block G = (dnum va^T masked): dfq += G fk, dfk += G^T fq,
  // dva += A^T dnum (A recomputed). phi'(x) = 1 for x > 0, else exp(x) = phi(x).
  void backward(Arena& arena, const Tensor<T>& dout, const Tensor<T>& dx,
                const KsvdGrad& ksvd) override;

  // Causal, for the token at position n; the state is S_n of every head [H, d, d+1]
  // (H d (d+1) values whatever n, so a token costs the same at every position):
  //   S_n = S_{n-1} + fk_n va_n^T;  y_h = num[:d] / (num[d] + eps), num = fq_n^T S_n
  int64_t decode_state_size(int max_len) const override;
  int64_t decode_state_read(int position) const override;
  Tensor<T> decode_step(Arena& arena, const Tensor<T>& x, std::span<T> state,
                        int position) override;

  // Analysed: the attention matrix the kernel induces, M[n, j] = fq_n . fk_j / D_n over the
  // keys position n sees (each row sums to 1 up to eps).
  int local_heads() const override { return heads_; }
  void analysed_matrix(int b, int h, int n, std::vector<double>& out) const override;

 private:
  Linear<T> qkv_, proj_;
  TensorParallelGroup* tp_;
  int heads_, head_dim_;  // heads_: this rank's
  int block_;
  // saved by forward
  Sequence seq_;
  LayerNorm<T>* norm_ = nullptr;
  int blocks_ = 0;     // state snapshots per (b, h): the causal blocks, or 1
  Tensor<T> fq_, fk_;  // [B, H, N, d]
  Tensor<T> va_;       // [B, H, N, d+1]
  Tensor<T> states_;   // S before each causal block, or the whole S [B H, blocks_, d, d+1]
  Tensor<T> denom_;    // D [B, H, N]
  Tensor<T> y_;        // [B, N, C]: proj's input
};

}  // namespace primal
