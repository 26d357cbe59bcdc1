// What every layer needs to know about the batch it runs on: its shape, which positions
// are real (padding, SPEC §3), whether attention is causal, and the keys of its randomness.
#pragma once

#include <cstdint>

namespace primal {

struct Sequence {
  int B = 0;
  int N = 0;                         // positions per sample, the CLS slot included
  const int32_t* lengths = nullptr;  // real positions per sample (CLS included); null: all N
  bool causal = false;
  uint64_t seed = 0;  // dropout keys: (seed, step, layer, site, element)
  int64_t step = 0;
  int64_t sample_offset = 0;  // global index of sample 0 of this batch
  bool training = true;       // false: no dropout (evaluation, generation)

  int length(int b) const { return lengths ? lengths[b] : N; }
  bool is_real(int b, int n) const { return n < length(b); }
  int64_t real_tokens() const {
    int64_t n = 0;
    for (int b = 0; b < B; ++b) n += length(b);
    return n;
  }
  int64_t rows() const { return int64_t(B) * N; }
};

}  // namespace primal
