// The Pre-LN Transformer of SPEC §3, built from a per-layer list of SOFTMAX/PRIMAL:
//   x = embed(input)
//   per layer i:  a = Attn_i(LN1_i(x)) (0 on padded rows);  x = x + Dropout(a)
//                 x = x + Dropout(MLP_i(LN2_i(x)))
//   x = LN_f(x) (0 on padded rows);  logits = x tok_emb^T (LM) or head(pool(x)) (classifier)
//   loss = CE + eta KSVD
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "model/attention.h"
#include "model/batch.h"
#include "model/classifier_head.h"
#include "model/config.h"
#include "model/embedding.h"
#include "model/ksvd_loss.h"
#include "model/layernorm.h"
#include "model/mlp.h"
#include "model/tensor_parallel.h"

namespace primal {

struct LossTerms {
  double loss = 0, ce = 0, ksvd = 0;
  std::span<const double> ksvd_terms;  // J_l per PRIMAL layer (valid until the next forward)
  int64_t predictions = 0;             // CE averaged over this many targets
};

template <typename T>
class TransformerLayer {
 public:
  TransformerLayer(ParameterStore<T>& params, const ModelConfig& config, int index,
                   TensorParallelGroup* tp);

  Tensor<T> forward(Arena& arena, const Tensor<T>& x, const Sequence& seq, KsvdPartial& ksvd);
  // dout: d loss / d layer output -> dx: d loss / d layer input (overwritten)
  void backward(Arena& arena, const Tensor<T>& dout, const Tensor<T>& dx, const KsvdGrad& ksvd);

  AttentionKind kind() const { return kind_; }
  Attention<T>& attention() { return *attn_; }
  // The layer's pieces, for inference code that runs them one row at a time (Generator).
  LayerNorm<T>& ln1() { return ln1_; }
  LayerNorm<T>& ln2() { return ln2_; }
  Mlp<T>& mlp() { return mlp_; }

 private:
  int index_;
  AttentionKind kind_;
  double dropout_;
  LayerNorm<T> ln1_, ln2_;
  std::unique_ptr<Attention<T>> attn_;
  Mlp<T> mlp_;
  Sequence seq_;
};

template <typename T>
class Transformer {
 public:
  // tp: the tensor-parallel group this rank shares the layers with (null: one process).
  // initialise false: the values are zero and there are no gradients, for a model whose
  // weights are read right after and that never trains (import).
  explicit Transformer(const ModelConfig& config, TensorParallelGroup* tp = nullptr,
                       bool initialise = true);

  ParameterStore<T>& params() { return params_; }
  const ModelConfig& config() const { return config_; }
  std::vector<TransformerLayer<T>>& layers() { return layers_; }
  Embedding<T>& embedding() { return embed_; }
  LayerNorm<T>& final_norm() { return norm_; }
  ClassifierHead<T>* head() { return head_.get(); }  // null for the LM

  // Loss of the batch. step keys dropout; training = false turns dropout off (evaluation).
  // Keeps what backward() needs in the arena.
  LossTerms forward(Arena& arena, const Batch& batch, int64_t step, bool training = true);
  // Gradients of the last forward's loss, added into params().grads().
  void backward(Arena& arena);
  // zero grads, forward, backward, sum_grads_over_tp
  LossTerms forward_backward(Arena& arena, const Batch& batch, int64_t step);
  // Sums the gradients of the replicated parameters that every rank's heads use
  // (attn.concat) over the tensor-parallel group. Once per optimizer step, after the last
  // backward of gradient accumulation.
  void sum_grads_over_tp();

  // Class probabilities [B, K] (classifier) or next-token probabilities [B*N, V] (LM) of the
  // last forward.
  const Tensor<T>& probabilities() const { return probs_; }
  // LN_f(x) [B, N, C] of the last forward (LM logits = final_hidden() tok_emb^T).
  const Tensor<T>& final_hidden() const { return final_x_; }

  // Sums KSVD partials across the ranks that share the loss, in place: [e, r, t] per PRIMAL
  // layer, then the real-token count. Unset on one process.
  std::function<void(std::span<double>)> reduce_ksvd;
  // Multiplies d loss / d (e- and r-sums) in backward: a data-parallel rank contributes its
  // samples' share to a KSVD loss over the global batch, and the average over ranks that
  // follows would divide it by their number (ksvd_sync: GLOBAL sets it to the DP size).
  double ksvd_data_grad_scale = 1;
  // Called by backward when layer i's parameter gradients are final, and with -1 when all the
  // others are (embeddings, final norm, head): data parallelism starts reducing them there.
  std::function<void(int layer)> on_grads_final;

 private:
  ModelConfig config_;
  TensorParallelGroup* tp_;
  ParameterStore<T> params_;
  Embedding<T> embed_;
  std::vector<TransformerLayer<T>> layers_;
  LayerNorm<T> norm_;
  std::unique_ptr<ClassifierHead<T>> head_;
  // saved by forward
  Sequence seq_;
  Tensor<int32_t> lengths_;
  const Batch* batch_ = nullptr;
  Tensor<T> final_x_, probs_;
  std::vector<KsvdPartial> ksvd_partials_;  // reused every step: no allocation
  std::vector<double> ksvd_sums_;
  KsvdLoss ksvd_;
  int64_t predictions_ = 0;
};

// Sets rows of x [B, N, C] at padded positions to 0.
template <typename T>
void zero_padded_rows(const Tensor<T>& x, const Sequence& seq);
// y += x, element-wise (the residual sums).
template <typename T>
void add_inplace(const Tensor<T>& y, const Tensor<T>& x);

}  // namespace primal
