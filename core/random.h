// Counter-based randomness (Philox4x32-10, Salmon et al. 2011). A value is a pure function
// of (key, counter), so every rank can produce any element of any tensor, mask or sample
// order without sharing generator state: the same numbers whatever the parallel layout.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace primal {

using PhiloxKey = std::array<uint32_t, 2>;
using PhiloxBlock = std::array<uint32_t, 4>;

constexpr PhiloxBlock philox4x32(PhiloxKey key, PhiloxBlock ctr) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = uint64_t{kM0} * ctr[0];
    uint64_t p1 = uint64_t{kM1} * ctr[2];
    ctr = {uint32_t(p1 >> 32) ^ ctr[1] ^ key[0], uint32_t(p1), uint32_t(p0 >> 32) ^ ctr[3] ^ key[1],
           uint32_t(p0)};
    key = {key[0] + kW0, key[1] + kW1};
  }
  return ctr;
}

// 64-bit FNV-1a, for turning names into keys.
constexpr uint64_t fnv1a(std::string_view s, uint64_t h = 0xcbf29ce484222325ull) {
  for (char c : s) h = (h ^ uint8_t(c)) * 0x100000001b3ull;
  return h;
}

// A stream of random values addressed by a 64-bit index.
class CounterRng {
 public:
  // key: e.g. (seed, hash of a parameter name); domain separates uses with the same key.
  CounterRng(uint64_t seed, uint64_t stream)
      : key_{uint32_t(seed ^ (stream >> 32) * 0x9E3779B9u), uint32_t((seed >> 32) ^ stream)},
        stream_hi_(uint32_t(stream >> 32) ^ uint32_t(stream)) {}

  PhiloxBlock block(uint64_t index) const {
    return philox4x32(key_, {uint32_t(index), uint32_t(index >> 32), stream_hi_, 0x5052494Du});
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform(uint64_t index) const {
    PhiloxBlock b = block(index);
    uint64_t bits = (uint64_t(b[0]) << 21) ^ (b[1] >> 11);
    return double(bits & ((uint64_t{1} << 53) - 1)) * 0x1.0p-53;
  }
  // Standard normal by Box-Muller on the block's two 53-bit halves.
  double normal(uint64_t index) const;
  // Uniform in [0, 1) with 24 random bits, cheap: for dropout masks.
  float uniform_f32(uint64_t index) const { return float(block(index)[0] >> 8) * 0x1.0p-24f; }

 private:
  PhiloxKey key_;
  uint32_t stream_hi_;
};

}  // namespace primal
