// CRC-32C (Castagnoli): the checksum of TFRecord framing and of checkpoint records, computed by
// Intel ISA-L (Debian's libisal) with the processor's CRC instructions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace primal::tensorboard {

// CRC-32C of n bytes: reflected polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF
// (the iSCSI CRC; crc32c("123456789") == 0xE3069283).
uint32_t crc32c(const void* data, size_t n);
inline uint32_t crc32c(std::string_view bytes) {
  return crc32c(bytes.data(), bytes.size());
}

// Continues a finished CRC over more bytes: crc32c_extend(crc32c(a), b) == crc32c(a + b).
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t n);

// TFRecord stores CRCs masked, because the CRC of bytes that themselves contain CRCs is weak
// (the convention comes from LevelDB's log format).
inline uint32_t mask_crc(uint32_t crc) {
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}
inline uint32_t unmask_crc(uint32_t masked) {
  const uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}
inline uint32_t masked_crc32c(std::string_view bytes) {
  return mask_crc(crc32c(bytes));
}

}  // namespace primal::tensorboard
