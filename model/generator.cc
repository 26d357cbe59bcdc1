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
    : model_(model), config_(model.config()), max_len_(config_.max_len), width_(config_.width) {
  check(config_.head == HeadKind::kLm && config_.input == InputKind::kTokens,
        "Generator: needs a language model (LM head, token inputs)");
  check(model.params().tp().size == 1, "Generator: runs on one process (tensor parallelism 1)");
  // Every layer's state in one buffer.
  int64_t total = 0;
  for (auto& layer : model.layers()) total += layer.attention().decode_state_size(max_len_);
  state_storage_.assign(total, T(0));
  T* at = state_storage_.data();
  for (auto& layer : model.layers()) {
    const int64_t size = layer.attention().decode_state_size(max_len_);
    states_.emplace_back(at, size_t(size));
    at += size;
  }
  logits_.assign(config_.vocab, T(0));
  weights_.assign(config_.vocab, 0.0);
  // One step sizes the arena: every later step makes the same requests (none depends on
  // the position), so it never grows again.
  step(0);
  reset();
}

// x = x + Attn(LN1(x));  x = x + MLP(LN2(x))   (x: one row [1, C])
template <typename T>
Tensor<T> Generator<T>::layer_step(int index, const Tensor<T>& x) {
  TransformerLayer<T>& layer = model_.layers()[index];
  const Tensor<T> in = layer.ln1().forward(arena_, x);
  Tensor<T> x2 = layer.attention().decode_step(arena_, in, states_[index], position_);
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
  return model_.layers().at(layer).attention().decode_state_read(position_);
}

template class Generator<float>;
template class Generator<double>;

}  // namespace primal
