// Counter-based randomness (Philox4x32-10, Salmon et al. 2011). A value is a pure function
// of (key, counter), so every rank can produce any element of any tensor, mask or sample
// order without sharing generator state: the same numbers whatever the parallel layout.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

// __host__ __device__ under nvcc (as in core/element_math.h): philox4x32_words below runs in
// the CUDA kernels too.
#if !defined(PRIMAL_HD)
#if defined(__CUDACC__)
#define PRIMAL_HD __host__ __device__
#else
#define PRIMAL_HD
#endif
#endif

namespace primal {

using PhiloxKey = std::array<uint32_t, 2>;
using PhiloxBlock = std::array<uint32_t, 4>;

// Philox4x32-10: ctr is replaced by its block under key (k0, k1). On plain words so that
// device code can call it too (std::array is not usable there).
PRIMAL_HD constexpr void philox4x32_words(uint32_t k0, uint32_t k1, uint32_t ctr[4]) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t{kM0} * ctr[0];
    const uint64_t p1 = uint64_t{kM1} * ctr[2];
    const uint32_t c0 = uint32_t(p1 >> 32) ^ ctr[1] ^ k0, c2 = uint32_t(p0 >> 32) ^ ctr[3] ^ k1;
    ctr[0] = c0;
    ctr[1] = uint32_t(p1);
    ctr[2] = c2;
    ctr[3] = uint32_t(p0);
    k0 += kW0;
    k1 += kW1;
  }
}

constexpr PhiloxBlock philox4x32(PhiloxKey key, PhiloxBlock ctr) {
  uint32_t words[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
  philox4x32_words(key[0], key[1], words);
  return {words[0], words[1], words[2], words[3]};
}

// What addresses one CounterRng's values (its key and the stream word of its counters), as
// plain words that a kernel can take by value.
struct PhiloxStream {
  uint32_t k0 = 0, k1 = 0, hi = 0;
};

// CounterRng::uniform_f32 from a PhiloxStream: the same bits on the host and the device.
PRIMAL_HD inline float philox_uniform_f32(const PhiloxStream& s, uint64_t index) {
  uint32_t ctr[4] = {uint32_t(index), uint32_t(index >> 32), s.hi, 0x5052494Du};
  philox4x32_words(s.k0, s.k1, ctr);
  return float(ctr[0] >> 8) * 0x1.0p-24f;
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
  // The words that address this generator (philox_uniform_f32 reproduces uniform_f32).
  PhiloxStream philox_stream() const { return {key_[0], key_[1], stream_hi_}; }

 private:
  PhiloxKey key_;
  uint32_t stream_hi_;
};

}  // namespace primal
