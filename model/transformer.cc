#include "model/transformer.h"

#include <string>

#include "core/blas.h"
#include "core/elementwise.h"
#include "core/parallel.h"
#include "model/attention_kinds.h"
#include "model/cross_entropy.h"
#include "model/dropout.h"

namespace primal {

template <typename T>
void zero_padded_rows(const Tensor<T>& x, const Sequence& seq) {
  if (!seq.lengths) return;
  const int64_t C = x.numel() / seq.rows();
  for (int b = 0; b < seq.B; ++b)
    for (int n = seq.length(b); n < seq.N; ++n)
      std::fill_n(x.data() + (int64_t(b) * seq.N + n) * C, C, T(0));
}

template <typename T>
void add_inplace(const Tensor<T>& y, const Tensor<T>& x) {
  T* out = y.data();
  const T* in = x.data();
  for_each_element(y.numel(), [=](int64_t i) { out[i] += in[i]; }, {out, in});
}

template <typename T>
TransformerLayer<T>::TransformerLayer(ParameterStore<T>& params, const ModelConfig& config,
                                      int index, TensorParallelGroup* tp)
    : index_(index),
      kind_(config.layers[index]),
      dropout_(config.dropout),
      ln1_(params, "layers." + std::to_string(index) + ".ln1", config.width, config.ln_eps),
      ln2_(params, "layers." + std::to_string(index) + ".ln2", config.width, config.ln_eps),
      attn_(attention_kind(kind_).make<T>(params, "layers." + std::to_string(index) + ".attn",
                                          config, tp)),
      mlp_(params, "layers." + std::to_string(index) + ".mlp", config.width, config.mlp_width, tp) {
}

template <typename T>
Tensor<T> TransformerLayer<T>::forward(Arena& arena, const Tensor<T>& x, const Sequence& seq,
                                       KsvdPartial& ksvd) {
  seq_ = seq;
  Tensor<T> a = attn_->forward(arena, x, seq, ksvd, &ln1_);
  zero_padded_rows(a, seq);
  dropout_inplace(a, dropout_, seq, index_, DropoutSite::kAttention);
  Tensor<T> x2 = a;  // the residual sum takes a's place: a is not needed by backward
  add_inplace(x2, x);
  Tensor<T> m = mlp_.forward(arena, x2, &ln2_);
  dropout_inplace(m, dropout_, seq, index_, DropoutSite::kMlp);
  add_inplace(m, x2);
  return m;
}

template <typename T>
void TransformerLayer<T>::backward(Arena& arena, const Tensor<T>& dout, const Tensor<T>& dx,
                                   const KsvdGrad& ksvd) {
  // dx holds dx2 = dout + LN2'(MLP'(Dropout'(dout))), then dx2 + LN1'(Attn'(mask Dropout'(dx2))).
  // A branch reads the residual gradient itself unless dropout or padding must change it; its
  // LayerNorm adds into dx only after the branch's backward is done reading those rows.
  const bool dropout = dropout_ > 0 && seq_.training;
  const bool padded = seq_.real_tokens() < seq_.rows();
  Tensor<T> masked = dropout || padded ? arena.alloc<T>(dout.shape()) : Tensor<T>();
  auto branch_grad = [&](const Tensor<T>& residual, DropoutSite site, bool pad) {
    if (!dropout && !(pad && padded)) return residual;
    masked.copy_from(residual);
    dropout_inplace(masked, dropout_, seq_, index_, site);
    if (pad) zero_padded_rows(masked, seq_);
    return masked;
  };
  dx.copy_from(dout);
  mlp_.backward(arena, branch_grad(dx, DropoutSite::kMlp, false), dx);               // LN2 inside
  attn_->backward(arena, branch_grad(dx, DropoutSite::kAttention, true), dx, ksvd);  // LN1
}

template <typename T>
Transformer<T>::Transformer(const ModelConfig& config, TensorParallelGroup* tp, bool initialise)
    : config_(config),
      tp_(tp),
      params_(TensorParallelRank{tp ? tp->rank() : 0, tp ? tp->size() : 1}),
      embed_(params_, config_),
      norm_(params_, "norm", config.width, config.ln_eps) {
  check(config.width % config.heads == 0, "model: heads must divide width");
  const int tp_size = tp ? tp->size() : 1;
  check(config.heads % tp_size == 0 && config.mlp_width % tp_size == 0,
        "model: tensor parallelism must divide the heads and the MLP width");
  check(config.head == HeadKind::kClassifier || config.input == InputKind::kTokens,
        "model: the LM head needs token inputs");
  layers_.reserve(config.layers.size());
  for (int i = 0; i < int(config.layers.size()); ++i) layers_.emplace_back(params_, config_, i, tp);
  if (config.head == HeadKind::kClassifier) {
    head_ = std::make_unique<ClassifierHead<T>>(params_, config_);
  }
  if (initialise) {
    params_.finalize(config.seed);
  } else {
    params_.finalize_values_only();
  }
}

template <typename T>
LossTerms Transformer<T>::forward(Arena& arena, const Batch& batch, int64_t step, bool training) {
  const int cls = config_.has_cls() ? 1 : 0, C = config_.width;
  batch_ = &batch;
  seq_ = Sequence{batch.B, batch.N + cls,       nullptr, config_.causal(), config_.seed,
                  step,    batch.sample_offset, training};
  if (!batch.lengths.empty()) {
    lengths_ = arena.alloc<int32_t>({batch.B});
    for (int b = 0; b < batch.B; ++b) lengths_[b] = batch.lengths[b] + cls;
    seq_.lengths = lengths_.data();
  }

  Tensor<T> x = embed_.forward(arena, batch, seq_);
  ksvd_partials_.clear();
  for (auto& layer : layers_) {
    KsvdPartial p;
    x = layer.forward(arena, x, seq_, p);
    if (attention_kind(layer.kind()).ksvd_loss) ksvd_partials_.push_back(p);
  }
  final_x_ = norm_.forward(arena, x);
  zero_padded_rows(final_x_, seq_);

  LossTerms out;
  double ce_sum;
  if (config_.head == HeadKind::kLm) {
    const int64_t rows = seq_.rows();
    probs_ = arena.alloc<T>({rows, config_.vocab});
    gemm(Trans::kNo, Trans::kYes, rows, config_.vocab, C, T(1), final_x_.data(), C,
         embed_.tokens()->value.data(), C, T(0), probs_.data(), config_.vocab);
    predictions_ = rows;
  } else {
    probs_ = head_->forward(arena, final_x_, seq_);
    predictions_ = batch.B;
  }
  check_targets(batch.targets, predictions_, int(probs_.dim(1)));
  ce_sum = cross_entropy_forward(arena, probs_, batch.targets.data());
  out.ce = ce_sum / double(predictions_);
  out.predictions = predictions_;

  // KSVD: the partial sums of every PRIMAL layer travel together (one all-reduce).
  std::vector<KsvdPartial>& partials = ksvd_partials_;
  std::vector<double>& sums = ksvd_sums_;
  sums.clear();
  for (const KsvdPartial& p : partials) sums.insert(sums.end(), {p.e, p.r, p.t});
  sums.push_back(double(seq_.real_tokens()));
  if (reduce_ksvd) reduce_ksvd(sums);
  for (size_t l = 0; l < partials.size(); ++l) {
    partials[l] = {sums[3 * l], sums[3 * l + 1], sums[3 * l + 2]};
  }
  ksvd_loss(partials, sums.back(), config_.heads, config_.eta, ksvd_);
  out.ksvd = ksvd_.value;
  out.ksvd_terms = ksvd_.terms;
  out.loss = out.ce + config_.eta * out.ksvd;
  return out;
}

template <typename T>
void Transformer<T>::backward(Arena& arena) {
  const int C = config_.width;
  const T scale = T(1.0 / double(predictions_));
  // The probabilities become d loss / d logits in place.
  cross_entropy_backward(probs_, batch_->targets.data(), scale, probs_);
  Tensor<T> dx = arena.zeros<T>(final_x_.shape());
  if (config_.head == HeadKind::kLm) {
    const int64_t rows = seq_.rows();
    gemm(Trans::kNo, Trans::kNo, rows, C, config_.vocab, T(1), probs_.data(), config_.vocab,
         embed_.tokens()->value.data(), C, T(0), dx.data(), C);
    gemm(Trans::kYes, Trans::kNo, config_.vocab, C, rows, T(1), probs_.data(), config_.vocab,
         final_x_.data(), C, T(1), embed_.tokens()->grad.data(), C);
  } else {
    head_->backward(arena, probs_, dx);
  }
  zero_padded_rows(dx, seq_);
  // The residual gradient alternates between two buffers; each layer's backward temporaries
  // are released when it is done, so the next layer reuses their memory.
  Tensor<T> dout = arena.zeros<T>(dx.shape());
  Tensor<T> din = arena.alloc<T>(dx.shape());
  norm_.backward(arena, dx, dout);
  size_t primal = ksvd_.grads.size();
  for (auto it = layers_.rbegin(); it != layers_.rend(); ++it) {
    KsvdGrad g;
    if (attention_kind(it->kind()).ksvd_loss) {
      g = ksvd_.grads[--primal];
      g.de *= ksvd_data_grad_scale;
    }
    const Arena::Mark temporaries = arena.mark();
    it->backward(arena, dout, din, g);
    arena.release(temporaries);
    std::swap(dout, din);
    if (on_grads_final) on_grads_final(int(layers_.rend() - it) - 1);
  }
  embed_.backward(arena, dout);
  if (on_grads_final) on_grads_final(-1);
}

template <typename T>
LossTerms Transformer<T>::forward_backward(Arena& arena, const Batch& batch, int64_t step) {
  params_.zero_grads();
  LossTerms out = forward(arena, batch, step);
  backward(arena);
  sum_grads_over_tp();
  return out;
}

template <typename T>
void Transformer<T>::sum_grads_over_tp() {
  for (auto& p : params_.all()) {
    if (p.sharding.sum_grad_over_tp) tp_all_reduce(tp_, p.grad);
  }
}

template void zero_padded_rows(const Tensor<float>&, const Sequence&);
template void zero_padded_rows(const Tensor<double>&, const Sequence&);
template void add_inplace(const Tensor<float>&, const Tensor<float>&);
template void add_inplace(const Tensor<double>&, const Tensor<double>&);
template class TransformerLayer<float>;
template class TransformerLayer<double>;
template class Transformer<float>;
template class Transformer<double>;

}  // namespace primal
