#include "model/generator.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "core/blas.h"
#include "core/element_math.h"
#include "core/random.h"
#include "core/reduce.h"
#include "core/softmax.h"

namespace primal {

template <typename T>
Generator<T>::Generator(Transformer<T>& model)
    : model_(model),
      config_(model.config()),
      max_len_(config_.max_len),
      heads_(config_.heads),
      head_dim_(config_.head_dim()),
      width_(config_.width),
      rank_(config_.low_rank) {
  check(config_.head == HeadKind::kLm && config_.input == InputKind::kTokens,
        "Generator: needs a language model (LM head, token inputs)");
  check(model.params().tp().size == 1, "Generator: runs on one process (tensor parallelism 1)");
  const int C = width_;
  // State: a KV cache per SOFTMAX layer, two C-vectors per PRIMAL layer; one buffer.
  int64_t total = 0;
  for (auto& layer : model.layers()) {
    total += layer.kind() == AttentionKind::kSoftmax ? 2 * int64_t(max_len_) * C : 2 * C;
  }
  state_storage_.assign(total, T(0));
  T* at = state_storage_.data();
  for (auto& layer : model.layers()) {
    LayerState s;
    if (layer.kind() == AttentionKind::kSoftmax) {
      s.k = Tensor<T>(at, {heads_, max_len_, head_dim_});
      s.v = Tensor<T>(at + int64_t(max_len_) * C, {heads_, max_len_, head_dim_});
      at += 2 * int64_t(max_len_) * C;
    } else {
      s.qbar = Tensor<T>(at, {C});
      s.kbar = Tensor<T>(at + C, {C});
      at += 2 * C;
    }
    states_.push_back(s);
  }
  scores_.assign(max_len_, T(0));
  logits_.assign(config_.vocab, T(0));
  weights_.assign(config_.vocab, 0.0);
  // One step sizes the arena: every later step makes the same requests (none depends on
  // the position), so it never grows again.
  step(0);
  reset();
}

// Softmax attention, causal (SPEC §3.1), for the token at position n:
//   q, k_n, v_n = x Wqkv^T + bqkv;  k_n, v_n go into the cache
//   a_j = softmax_j(q_h . k_j / sqrt(d)), j = 0..n;  y_h = sum_j a_j v_j
//   out = concat_h(y_h) Wo^T + bo
template <typename T>
Tensor<T> Generator<T>::softmax_step(SoftmaxAttention<T>& attn, LayerState& state,
                                     const Tensor<T>& x) {
  const int n = position_, H = heads_, d = head_dim_, C = width_, keys = n + 1;
  const T scale = T(1 / std::sqrt(double(d)));
  Tensor<T> qkv = attn.qkv_linear().forward(arena_, x);  // [1, 3C]: q | k | v, head-major
  Tensor<T> y = arena_.alloc<T>({1, C});
  for (int h = 0; h < H; ++h) {
    const T* q = qkv.data() + h * d;
    T* kc = state.k.data() + int64_t(h) * max_len_ * d;
    T* vc = state.v.data() + int64_t(h) * max_len_ * d;
    std::copy_n(q + C, d, kc + int64_t(n) * d);
    std::copy_n(q + 2 * C, d, vc + int64_t(n) * d);
    T* a = scores_.data();
    gemm(Trans::kNo, Trans::kYes, 1, keys, d, scale, q, 3 * C, kc, d, T(0), a, keys);
    softmax_row(a, keys);
    gemm(Trans::kNo, Trans::kNo, 1, d, keys, T(1), a, keys, vc, d, T(0), y.data() + h * d, C);
  }
  return attn.proj_linear().forward(arena_, y);
}

// Primal-Attention, causal form (SPEC §3.3), for the token at position n:
//   q, k = x Wqk^T + bqk
//   qbar_n = (n qbar_{n-1} + q) / (n + 1)  (the forward's recurrence for the prefix mean; the
//                                           state, C values, whatever n); kbar likewise
//   e_h = phi(qbar_h) We[h];  r_h = phi(kbar_h) Wr[h];  phi(v) = v / max(|v|, 1e-12)
//   o_h = [e_h r_h] Wc^T + bc;  out = concat_h(o_h) Wo^T + bo
template <typename T>
Tensor<T> Generator<T>::primal_step(PrimalAttention<T>& attn, LayerState& state,
                                    const Tensor<T>& x) {
  const int n = position_, H = heads_, d = head_dim_, C = width_, s = rank_;
  Tensor<T> qk = attn.qk_linear().forward(arena_, x);  // [1, 2C]: q | k
  Tensor<T> er = arena_.alloc<T>({H, 2 * s});          // [e_h r_h] per head
  Tensor<T> u = arena_.alloc<T>({C});
  for (int side = 0; side < 2; ++side) {
    const T* q = qk.data() + side * C;
    T* mean = side == 0 ? state.qbar.data() : state.kbar.data();
    const T* w = (side == 0 ? attn.we() : attn.wr())->value.data();  // [H, d, s]
    for (int c = 0; c < C; ++c) mean[c] = em::prefix_mean_step(mean[c], q[c], n);
    for (int h = 0; h < H; ++h) {
      const T inv = em::phi_scale(std::sqrt(dot(mean + h * d, mean + h * d, d)));
      for (int j = 0; j < d; ++j) u[h * d + j] = mean[h * d + j] * inv;
      gemm(Trans::kNo, Trans::kNo, 1, s, d, T(1), u.data() + h * d, d, w + int64_t(h) * d * s, s,
           T(0), er.data() + h * 2 * s + side * s, 2 * s);
    }
  }
  Tensor<T> o = attn.concat_linear().forward(arena_, er);  // [H, d] == [1, C]
  return attn.proj_linear().forward(arena_, o.reshape({1, C}));
}

// x = x + Attn(LN1(x));  x = x + MLP(LN2(x))   (x: one row [1, C])
template <typename T>
Tensor<T> Generator<T>::layer_step(int index, const Tensor<T>& x) {
  TransformerLayer<T>& layer = model_.layers()[index];
  const Tensor<T> in = layer.ln1().forward(arena_, x);
  Tensor<T> x2 =
      layer.kind() == AttentionKind::kSoftmax
          ? softmax_step(static_cast<SoftmaxAttention<T>&>(layer.attention()), states_[index], in)
          : primal_step(static_cast<PrimalAttention<T>&>(layer.attention()), states_[index], in);
  add_inplace(x2, x);
  Tensor<T> m = layer.mlp().forward(arena_, x2, &layer.ln2());
  add_inplace(m, x2);
  return m;
}

template <typename T>
std::span<const T> Generator<T>::step(int32_t token) {
  const int C = width_, V = config_.vocab;
  if (token < 0 || token >= V) {
    throw Error("Generator: token " + std::to_string(token) + " is outside the vocabulary [0, " +
                std::to_string(V) + ")");
  }
  if (position_ >= max_len_) {
    throw Error("Generator: position " + std::to_string(position_) +
                " is past the model's max_len " + std::to_string(max_len_) +
                " (reset() to start again)");
  }
  arena_.reset();
  // x = tok_emb[token] + pos_emb[n]
  Tensor<T> x = arena_.alloc<T>({1, C});
  const T* tok = model_.embedding().tokens()->value.data() + int64_t(token) * C;
  const T* pos = model_.embedding().positions()->value.data() + int64_t(position_) * C;
  for (int c = 0; c < C; ++c) x[c] = tok[c] + pos[c];
  for (int i = 0; i < int(states_.size()); ++i) x = layer_step(i, x);
  // logits = LN_f(x) tok_emb^T
  const Tensor<T> h = model_.final_norm().forward(arena_, x);
  gemm(Trans::kNo, Trans::kYes, 1, V, C, T(1), h.data(), C,
       model_.embedding().tokens()->value.data(), C, T(0), logits_.data(), V);
  ++position_;
  return logits_;
}

template <typename T>
int32_t Generator<T>::pick(std::span<const T> logits, double temperature, uint64_t seed) {
  const int V = int(logits.size());
  const int32_t best = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  if (temperature == 0) return best;
  // p_i = exp((l_i - max) / temperature) / sum; the token whose CDF interval holds u.
  const double max = double(logits[best]);
  double total = 0;
  for (int i = 0; i < V; ++i)
    total += weights_[i] = std::exp((double(logits[i]) - max) / temperature);
  const double u = CounterRng(seed, fnv1a("generate")).uniform(uint64_t(position_)) * total;
  double cumulative = 0;
  for (int i = 0; i < V; ++i) {
    cumulative += weights_[i];
    if (u < cumulative) return i;
  }
  return best;  // u within rounding of total
}

template <typename T>
std::vector<int32_t> Generator<T>::generate(std::span<const int32_t> prompt, int n,
                                            double temperature, uint64_t seed) {
  const int64_t P = int64_t(prompt.size());
  if (P == 0) throw Error("Generator: the prompt is empty");
  if (n < 0) throw Error("Generator: " + std::to_string(n) + " tokens requested");
  if (!(temperature >= 0) || !std::isfinite(temperature)) {
    throw Error("Generator: temperature " + std::to_string(temperature) +
                " (0 for greedy, or a positive finite number)");
  }
  // The prompt and every drawn token but the last each take a position.
  const int64_t positions = P + std::max(n - 1, 0);
  if (positions > max_len_) {
    throw Error("Generator: a prompt of " + std::to_string(P) + " tokens and " + std::to_string(n) +
                " new ones need " + std::to_string(positions) +
                " positions, but the model's max_len is " + std::to_string(max_len_));
  }
  reset();
  std::span<const T> logits;
  for (int32_t t : prompt) logits = step(t);
  std::vector<int32_t> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) {
    out.push_back(pick(logits, temperature, seed));
    if (i + 1 < n) logits = step(out.back());
  }
  return out;
}

template <typename T>
int64_t Generator<T>::state_size(int layer) const {
  const LayerState& s = states_.at(layer);
  if (!s.qbar.empty()) return s.qbar.numel() + s.kbar.numel();
  return 2 * int64_t(position_) * width_;
}

template class Generator<float>;
template class Generator<double>;

}  // namespace primal
