// Primal-Attention (SPEC §3.2-3.4): self-attention as an asymmetric kernel SVD in the
// primal. Each head projects normalised queries and keys onto s directions instead of
// forming the N x N attention matrix: cost linear in N.
#pragma once

#include <string>

#include "model/attention.h"
#include "model/config.h"
#include "model/linear.h"

namespace primal {

// Rows a block of samples aims at: its normed input, qk and [e r] Wc^T fit in a core's L2
// cache at the LRA widths.
inline constexpr int64_t kAttentionBlockRows = 1024;

template <typename T>
class PrimalAttention : public Attention<T> {
 public:
  // causal: the LM form (§3.3, We/Wr [H, d, s] parameters); otherwise the encoder form
  // (§3.2, We/Wr [H, L, s] applied to L tokens sampled from the input).
  // heads: of the whole layer; under TP this rank computes heads / tp->size() of them.
  // block_rows: rows a block of samples aims at (tests make it small to cross block edges).
  PrimalAttention(ParameterStore<T>& params, const std::string& name, int width, int heads,
                  int low_rank, int sampled_len, bool causal, TensorParallelGroup* tp = nullptr,
                  int64_t block_rows = kAttentionBlockRows);
  // The model's layer: the form its head asks for (causal for the LM).
  PrimalAttention(ParameterStore<T>& params, const std::string& name, const ModelConfig& config,
                  TensorParallelGroup* tp)
      : PrimalAttention(params, name, config.width, config.heads, config.low_rank,
                        config.sampled_len(), config.causal(), tp) {}

  // qk = x Wqk^T + bqk
  // causal:  qin = prefix mean of q (qin_n = mean_{j<=n} q_j), kin likewise; we = We[h]
  // encoder: qin = q, kin = k;  we[b,h] = Xs[b,h] We[h], Xs = x[b, idx, head h]^T [d, L],
  //          idx_l = floor(l (n_b - 1) / (L - 1))
  // u = phi(qin) = qin / max(|qin|, 1e-12) per head;  e = u_q we;  r = u_k wr   [B, N, H, s]
  // o_h = [e_h r_h] Wc^T + bc  (Wc [d, 2s] shared by heads);  out = concat_h(o_h) Wo^T + bo
  // KSVD partials: e-sum = sum_real 0.5 (e Lambda)^2, r-sum likewise, t-sum = sum_h <We_h, Wr_h>
  // It runs on blocks of whole samples (about kAttentionBlockRows rows; under tensor
  // parallelism the whole batch, so that proj's sum over the group stays one collective):
  // norm(x), qk, [e r] Wc^T live a block at a time; u, |qin|, [e r] and the norm's row
  // statistics are kept for backward, the others recomputed there.
  Tensor<T> forward(Arena& arena, const Tensor<T>& x, const Sequence& seq, KsvdPartial& ksvd,
                    LayerNorm<T>* norm) override;
  // The forward upside down:
  //   do = dout Wo;  dWc += do_h^T [e_h r_h];  de = do_h Wc_e (+ ksvd.de Lambda^2 e, real tokens)
  //   dLambda += ksvd.de sum_real (e^2 + r^2) Lambda
  //   dwe = u^T de;  du = de we^T;  dWe[h] += sum_b dwe (causal) or Xs dwe (encoder),
  //   dXs = We dwe^T (encoder: scattered back onto the sampled tokens);  dWe += ksvd.dt Wr
  //   phi: dqin = (du - u (u . du)) / |qin|;  prefix mean: dq_j = sum_{n>=j} dqin_n / (n+1)
  void backward(Arena& arena, const Tensor<T>& dout, const Tensor<T>& dx,
                const KsvdGrad& ksvd) override;

  // Causal form, for the token at position n; the state is the prefix means qbar, kbar [C]
  // (2 C values whatever n, so a token costs the same at every position):
  //   q, k = x Wqk^T + bqk
  //   qbar_n = (n qbar_{n-1} + q) / (n + 1)  (the forward's recurrence); kbar likewise
  //   e_h = phi(qbar_h) We[h];  r_h = phi(kbar_h) Wr[h];  o_h = [e_h r_h] Wc^T + bc
  //   out = concat_h(o_h) Wo^T + bo
  int64_t decode_state_size(int max_len) const override;
  int64_t decode_state_read(int position) const override;
  Tensor<T> decode_step(Arena& arena, const Tensor<T>& x, std::span<T> state,
                        int position) override;

  // Analysed: K = phi(qin) we wr^T phi(kin)^T, the kernel matrix the layer induces (rank <= s):
  // causal form: we = We[h], wr = Wr[h] on the prefix means; encoder form: the data-dependent
  // we = Xs We[h], wr = Xs Wr[h].
  int local_heads() const override { return heads_; }
  void analysed_matrix(int b, int h, int n, std::vector<double>& out) const override;

  Parameter<T>* we() const { return we_; }
  Parameter<T>* wr() const { return wr_; }
  Parameter<T>* lambda() const { return lambda_; }
  Linear<T>& qk_linear() { return qk_; }
  Linear<T>& concat_linear() { return concat_; }
  Linear<T>& proj_linear() { return proj_; }
  // What the last forward saved: phi(qin) and phi(kin) [B, N, C] of this rank's heads, and the
  // [d, s] matrix that projects head h (this rank's numbering) of sample b: We[h], Wr[h]
  // (causal) or Xs[b,h] We[h], Xs[b,h] Wr[h] (encoder).
  const Tensor<T>& saved_u_q() const { return q_.u; }
  const Tensor<T>& saved_u_k() const { return k_.u; }
  const T* saved_we(int b, int h) const { return projection(q_, b, h); }
  const T* saved_wr(int b, int h) const { return projection(k_, b, h); }
  int head_dim() const { return head_dim_; }
  int first_head() const { return first_head_; }  // this rank's first head of the layer
  int low_rank() const { return rank_; }

 private:
  // One side of the projection: queries with We (block 0) or keys with Wr (block 1).
  struct Side {
    Parameter<T>* w;  // We or Wr
    int block;        // which C-wide block of qk it reads; its s-wide slot in er
    Tensor<T> u;      // phi(qin) [B, N, C]
    Tensor<T> norm;   // |qin| per head [B, N, H]
    Tensor<T> w_eff;  // encoder: we[b,h] = Xs[b,h] We[h] [B, H, d, s]
  };
  // Samples [b0, b1): qk, der and dqk hold their rows only.
  void side_forward(const Tensor<T>& qk, Side& side, int b0, int b1);
  // dw: where dWe (or dWr) goes (a block's slot).
  void side_backward(Arena& arena, const Side& side, const Tensor<T>& der, const Tensor<T>& dqk,
                     const Tensor<T>& dxs, int b0, int b1, T* dw);
  // Samples per block for a batch of N-token samples.
  int block_samples(int N) const;
  // The [d, s] matrix that projects head h of sample b.
  const T* projection(const Side& side, int b, int h) const;

  Linear<T> qk_;
  Parameter<T>* we_;
  Parameter<T>* wr_;
  Parameter<T>* lambda_;
  Linear<T> concat_;
  Linear<T> proj_;
  int width_;                          // C of the model
  int heads_, head_dim_, first_head_;  // this rank's heads: [first_head_, first_head_ + heads_)
  int rank_, sampled_len_;
  bool causal_;
  TensorParallelGroup* tp_;
  int64_t block_rows_;
  // saved by forward
  Sequence seq_;
  Tensor<T> x_;           // the input, before the norm
  Tensor<T> norm_stats_;  // the norm's row means, then rstds [2, B N]
  LayerNorm<T>* norm_ = nullptr;
  Tensor<T> xs_;         // encoder: the sampled input rows x[b, idx] [B, L, C]
  Tensor<int32_t> idx_;  // encoder: sampled positions [B, L]
  Side q_, k_;
  // [e_h r_h] for every (b, n, h): [B*N*H, 2s]. Row-major over (b, n, h) it is the input of
  // concat, a Linear(2s -> d) whose output rows are exactly the head-major [B, N, C] layout.
  Tensor<T> er_;
};

// The kernel matrix of head h (this rank's numbering) of sample b after the layer's last
// forward, restricted to the first n x n positions, in double (row-major).
template <typename T>
void primal_kernel_matrix(const PrimalAttention<T>& attn, int b, int h, int n,
                          std::vector<double>& out);

}  // namespace primal
