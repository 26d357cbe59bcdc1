// The model's shape and options (SPEC §2-3). Filled from the protobuf config by the trainer;
// the model itself knows nothing of files.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace primal {

// Each kind is an entry of model/attention_kinds.h.
enum class AttentionKind { kSoftmax, kPrimal, kLinear };
enum class HeadKind { kLm, kClassifier };  // LM: causal, tied logits. Classifier: pooled MLP.
enum class InputKind { kTokens, kPatches };
enum class Pooling { kMean, kCls };

struct ModelConfig {
  HeadKind head = HeadKind::kLm;
  InputKind input = InputKind::kTokens;
  int vocab = 256;      // V (tokens input)
  int patch_dim = 0;    // P*P*channels (patches input)
  int width = 64;       // C
  int heads = 2;        // H
  int mlp_width = 128;  // F
  int max_len = 256;    // N_max: rows of the position table (including the CLS slot)
  int low_rank = 20;    // s
  int rank_multi = 10;  // m
  std::vector<AttentionKind> layers = {AttentionKind::kPrimal};
  double ln_eps = 1e-5;
  double eta = 0.1;  // weight of the KSVD loss
  double dropout = 0.0;
  Pooling pooling = Pooling::kMean;
  int num_classes = 10;  // K
  int head_width = 128;  // Fh
  uint64_t seed = 0;

  bool causal() const { return head == HeadKind::kLm; }
  bool has_cls() const { return head == HeadKind::kClassifier && pooling == Pooling::kCls; }
  int head_dim() const { return width / heads; }
  // L = min(N_max, s*m): tokens sampled by the encoder form of Primal-Attention.
  int sampled_len() const { return std::min(max_len, low_rank * rank_multi); }
  // Layers whose kind adds KSVD terms to the loss (the PRIMAL ones; model/attention_kinds.cc).
  int num_primal_layers() const;
};

}  // namespace primal
