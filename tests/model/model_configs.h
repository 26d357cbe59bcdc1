// Small models and batches shared by the whole-model tests.
#pragma once

#include <random>
#include <string>

#include "model/batch.h"
#include "model/config.h"

namespace primal::testing {

inline ModelConfig lm_config(std::vector<AttentionKind> layers, int max_len) {
  ModelConfig c;
  c.head = HeadKind::kLm;
  c.vocab = 11;
  c.width = 8;
  c.heads = 2;
  c.mlp_width = 12;
  c.max_len = max_len;
  c.low_rank = 3;
  c.rank_multi = 2;
  c.layers = std::move(layers);
  c.eta = 0.7;
  c.seed = 17;
  return c;
}

inline ModelConfig classifier_config(std::vector<AttentionKind> layers, InputKind input,
                                     Pooling pooling, int max_len, int low_rank, int rank_multi) {
  ModelConfig c = lm_config(std::move(layers), max_len);
  c.head = HeadKind::kClassifier;
  c.input = input;
  c.patch_dim = 4;
  c.pooling = pooling;
  c.num_classes = 5;
  c.head_width = 7;
  c.low_rank = low_rank;
  c.rank_multi = rank_multi;
  return c;
}

// A batch for config: random tokens/patches and targets; lengths given for padding.
inline Batch random_batch(const ModelConfig& c, int B, int N, uint32_t seed,
                          std::vector<int32_t> lengths = {}) {
  std::mt19937 gen(seed);
  Batch batch;
  batch.B = B;
  batch.N = N;
  batch.lengths = std::move(lengths);
  std::uniform_int_distribution<int32_t> token(0, c.vocab - 1), label(0, c.num_classes - 1);
  std::uniform_real_distribution<float> pixel(0.f, 1.f);
  if (c.input == InputKind::kTokens) {
    for (int i = 0; i < B * N; ++i) batch.tokens.push_back(token(gen));
  } else {
    for (int i = 0; i < B * N * c.patch_dim; ++i) batch.patches.push_back(pixel(gen));
  }
  const int targets = c.head == HeadKind::kLm ? B * N : B;
  for (int i = 0; i < targets; ++i) {
    batch.targets.push_back(c.head == HeadKind::kLm ? token(gen) : label(gen));
  }
  return batch;
}

}  // namespace primal::testing
