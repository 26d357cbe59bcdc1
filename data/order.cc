#include "data/order.h"

#include <string>

#include "core/error.h"

namespace primal {

FeistelPermutation::FeistelPermutation(uint64_t n, uint64_t seed, uint64_t stream)
    : n_(n), rng_(seed, stream) {
  check(n > 0, "FeistelPermutation: empty domain");
  int bits = 0;
  while (bits < 64 && (uint64_t{1} << bits) < n) ++bits;
  half_bits_ = bits < 2 ? 1 : (bits + 1) / 2;
  check(half_bits_ < 32, "FeistelPermutation: domain too large");
  half_mask_ = (uint64_t{1} << half_bits_) - 1;
}

// Round r: (L, R) -> (R, L xor F_r(R)), F_r(R) = Philox(key, counter (r, R)). Each round is
// invertible whatever F is, so the whole network is a bijection of [0, 2^(2h)).
uint64_t FeistelPermutation::encrypt(uint64_t x) const {
  uint64_t left = x >> half_bits_, right = x & half_mask_;
  for (int r = 0; r < kRounds; ++r) {
    const uint64_t f = rng_.block((uint64_t(r) << 32) | right)[0] & half_mask_;
    const uint64_t next = left ^ f;
    left = right;
    right = next;
  }
  return (left << half_bits_) | right;
}

uint64_t FeistelPermutation::operator()(uint64_t i) const {
  check(i < n_, "FeistelPermutation: index out of range");
  uint64_t x = encrypt(i);
  while (x >= n_) x = encrypt(x);
  return x;
}

uint64_t epoch_sample(DataOrder order, uint64_t seed, std::string_view domain, uint64_t k,
                      uint64_t n) {
  check(n > 0, "epoch_sample: empty split");
  if (order == DataOrder::kSequential) return k % n;
  return FeistelPermutation(n, seed, data_stream(domain, k / n))(k % n);
}

void check_train_slice(int64_t step, int64_t first, int count, int global_batch) {
  if (step < 0 || first < 0 || count < 0 || global_batch <= 0 || first + count > global_batch) {
    throw Error("train_batch: bad slice (step " + std::to_string(step) + ", first " +
                std::to_string(first) + ", count " + std::to_string(count) + ", global batch " +
                std::to_string(global_batch) + ")");
  }
}

void check_eval_slice(int64_t first, int count, int64_t size) {
  if (first < 0 || count < 0 || first + count > size) {
    throw Error("eval_batch: samples [" + std::to_string(first) + ", " +
                std::to_string(first + count) + ") outside the split's " + std::to_string(size));
  }
}

}  // namespace primal
