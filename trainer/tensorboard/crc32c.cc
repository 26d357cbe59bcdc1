#include "trainer/tensorboard/crc32c.h"

#include <array>

namespace primal::tensorboard {
namespace {

// table[b] is the CRC register after shifting byte b through it, least significant bit first
// (the reflected form of the Castagnoli polynomial 0x1EDC6F41 is 0x82F63B78).
constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t crc = b;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) ? 0x82F63B78u : 0u);
    table[b] = crc;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kTable = make_table();

}  // namespace

uint32_t crc32c_extend(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t reg = ~crc;
  for (size_t i = 0; i < n; ++i) reg = kTable[(reg ^ p[i]) & 0xFFu] ^ (reg >> 8);
  return ~reg;
}

uint32_t crc32c(const void* data, size_t n) {
  return crc32c_extend(0, data, n);
}

}  // namespace primal::tensorboard
