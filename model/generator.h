// Incremental generation with an LM Transformer (SPEC §3): one token in, the next token's
// logits out, without recomputing the prefix.
//   x = tok_emb[t] + pos_emb[n]
//   per layer:  x = x + Attn_step(LN1(x));  x = x + MLP(LN2(x))      (no dropout: inference)
//   logits = LN_f(x) tok_emb^T                                        [V]
// What each layer keeps between tokens is its attention kind's (Attention::decode_step): a KV
// cache for SOFTMAX (a token costs O(n)), the prefix means qbar, kbar [C] for PRIMAL (constant
// size, so a token costs the same at every position).
// The logits equal the full forward's at every position up to rounding.
//
// The steps run the model's own layers (LayerNorm, Linear, MLP) on one row; those overwrite
// what the layers saved for backward, so do not step between a model's forward and backward.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/arena.h"
#include "model/transformer.h"

namespace primal {

template <typename T>
class Generator {
 public:
  // model: an LM (HeadKind::kLm) on one process, weights loaded. Allocates every buffer (the
  // caches for max_len positions included) here: a step allocates nothing.
  explicit Generator(Transformer<T>& model);

  // Appends token at the next position and returns the logits of the token after it [V].
  // The span is valid until the next step. Position max_len is an error (reset() first).
  std::span<const T> step(int32_t token);
  // Forgets every token: the next step is at position 0.
  void reset() { position_ = 0; }
  // Tokens consumed since the last reset: the position of the next step.
  int position() const { return position_; }
  int max_len() const { return max_len_; }

  // reset(), feeds prompt, then draws n tokens, each fed back but the last (so
  // prompt.size() + n - 1 <= max_len). temperature 0: greedy (argmax, the first on ties);
  // otherwise softmax(logits / temperature) sampled with CounterRng keyed by (seed,
  // position of the drawn token): the same tokens for the same arguments.
  std::vector<int32_t> generate(std::span<const int32_t> prompt, int n, double temperature,
                                uint64_t seed);

  // Values of state that layer's next step reads (Attention::decode_state_read): 2 C for
  // PRIMAL whatever the position, 2 C position() for SOFTMAX.
  int64_t state_size(int layer) const;

 private:
  Tensor<T> layer_step(int layer, const Tensor<T>& x);
  int32_t pick(std::span<const T> logits, double temperature, uint64_t seed);

  Transformer<T>& model_;
  const ModelConfig& config_;
  int max_len_, width_;
  int position_ = 0;
  Arena arena_;                       // one step's temporaries, rewound every step
  std::vector<T> state_storage_;      // every layer's state
  std::vector<std::span<T>> states_;  // views into state_storage_, one per layer
  std::vector<T> logits_;             // [V]
  std::vector<double> weights_;       // sampling: exp((logit - max) / temperature) [V]
};

}  // namespace primal
