// One batch of model inputs and targets, on the host.
#pragma once

#include <cstdint>
#include <vector>

namespace primal {

struct Batch {
  int B = 0;
  int N = 0;                     // input positions per sample (a CLS slot is added on top)
  std::vector<int32_t> tokens;   // [B, N]              (tokens input)
  std::vector<float> patches;    // [B, N, patch_dim]   (patches input)
  std::vector<int32_t> targets;  // [B, N] (LM: next token) or [B] (classifier: class)
  std::vector<int32_t> lengths;  // [B] real input positions (classifier); empty: all N
  int64_t sample_offset = 0;     // global index of sample 0 (keys dropout masks)

  // A classifier batch of `count` token sequences of `positions` each, every position real
  // (a dataset with shorter samples then writes their lengths): tokens [count, positions],
  // targets and lengths [count], no patches. The vectors keep their capacity: no allocation
  // once warm.
  void start_classifier_tokens(int count, int positions) {
    B = count;
    N = positions;
    tokens.resize(size_t(count) * size_t(positions));
    targets.resize(size_t(count));
    lengths.assign(size_t(count), positions);
    patches.clear();
  }
};

}  // namespace primal
