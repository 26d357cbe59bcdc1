// Sample order (SPEC §3.5, §7): every choice of which sample a training step sees is a pure
// function of (seed, step, global sample index), drawn from CounterRng, so any rank of any
// layout, and a resumed run, computes the same order without shared state.
#pragma once

#include <cstdint>
#include <string_view>

#include "core/random.h"
#include "data/dataset.h"

namespace primal {

// The CounterRng stream of one use (`domain`, e.g. "text.window") and one index within it
// (a step, an epoch, a sample number). x -> x * odd + c is a bijection of 64-bit integers, so
// distinct indices of one domain get distinct streams.
constexpr uint64_t data_stream(std::string_view domain, uint64_t index) {
  return fnv1a(domain) + index * 0x9E3779B97F4A7C15ull;
}

// Uniform integer in [0, n) from one Philox block: floor(u * n) with u a 53-bit uniform.
// The bias is below n / 2^53, far under anything a training run can detect.
inline uint64_t uniform_below(const CounterRng& rng, uint64_t counter, uint64_t n) {
  const uint64_t x = uint64_t(rng.uniform(counter) * double(n));
  return x < n ? x : n - 1;  // u * n can round up to n when n is near 2^53
}

// A keyed bijection of [0, n): a balanced Feistel network over 2^(2h) >= n values (h bits per
// half, 2^(2h) < 4n) with Philox round functions, restricted to [0, n) by cycle-walking
// (re-encrypt while the value is >= n; each walk stays inside the finite cycle of the start,
// so it ends, after fewer than 4 rounds on average). Used as an epoch's sample permutation.
class FeistelPermutation {
 public:
  FeistelPermutation(uint64_t n, uint64_t seed, uint64_t stream);
  uint64_t operator()(uint64_t i) const;
  uint64_t size() const { return n_; }

 private:
  static constexpr int kRounds = 6;  // 4 already make a strong pseudo-random permutation
  uint64_t encrypt(uint64_t x) const;

  uint64_t n_;
  int half_bits_;
  uint64_t half_mask_;
  CounterRng rng_;
};

// The training sample a global sample number k = step * global_batch + g refers to, in a
// split of n samples: SEQUENTIAL takes k mod n; RANDOM maps position k mod n of epoch k / n
// through that epoch's FeistelPermutation keyed by (seed, domain, epoch). Every sample is
// seen exactly once per epoch either way.
uint64_t epoch_sample(DataOrder order, uint64_t seed, std::string_view domain, uint64_t k,
                      uint64_t n);

// Checks the arguments of Dataset::train_batch (the caller's invariants): 0 <= step,
// 0 <= first, 0 <= count, first + count <= global_batch.
void check_train_slice(int64_t step, int64_t first, int count, int global_batch);
// Checks [first, first + count) lies within an evaluation split of `size` samples.
void check_eval_slice(int64_t first, int count, int64_t size);

}  // namespace primal
