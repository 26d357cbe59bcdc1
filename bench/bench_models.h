// What the benchmarks share: the models they run (model_bench's cases, gemm_bench's recorded
// step) and their clock.
#pragma once

#include <chrono>

#include "model/config.h"

namespace primal::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// The LRA-ListOps shape: C=64, H=2, 2 layers of `kind`, F=128, s=20, m=10, classifier head
// (mean pooling, 10 classes), eta 0.05.
inline ModelConfig listops_model(AttentionKind kind, int max_len) {
  ModelConfig c;
  c.head = HeadKind::kClassifier;
  c.input = InputKind::kTokens;
  c.vocab = 20;
  c.width = 64;
  c.heads = 2;
  c.mlp_width = 128;
  c.max_len = max_len;
  c.low_rank = 20;
  c.rank_multi = 10;
  c.layers = {kind, kind};
  c.eta = 0.05;
  c.pooling = Pooling::kMean;
  c.num_classes = 10;
  c.head_width = 128;
  return c;
}

// The byte LM: vocab 256 with the tied LM head, C=256, H=4, F=1024, N=512, five causal
// SOFTMAX layers and a last PRIMAL one (causal form, s=20, m=10), eta 0.05, dropout 0.
inline ModelConfig byte_lm_model(int max_len) {
  ModelConfig c;
  c.head = HeadKind::kLm;
  c.input = InputKind::kTokens;
  c.vocab = 256;
  c.width = 256;
  c.heads = 4;
  c.mlp_width = 1024;
  c.max_len = max_len;
  c.low_rank = 20;
  c.rank_multi = 10;
  c.layers = {AttentionKind::kSoftmax, AttentionKind::kSoftmax, AttentionKind::kSoftmax,
              AttentionKind::kSoftmax, AttentionKind::kSoftmax, AttentionKind::kPrimal};
  c.eta = 0.05;
  c.dropout = 0;
  return c;
}

}  // namespace primal::bench
