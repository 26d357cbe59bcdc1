#include "trainer/tensorboard/crc32c.h"

#include <isa-l/crc.h>

#include <algorithm>
#include <climits>

namespace primal::tensorboard {

// Intel ISA-L's crc32_iscsi (SSE4.2 / AVX-512 CRC instructions, picked at run time) keeps the CRC
// register unfinished: it starts from the register and returns it, with neither the initial nor
// the final inversion, and takes at most INT_MAX bytes a call.
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t n) {
  auto* p = static_cast<unsigned char*>(const_cast<void*>(data));  // ISA-L reads only
  uint32_t reg = ~crc;
  while (n > 0) {
    const size_t chunk = std::min<size_t>(n, INT_MAX);
    reg = crc32_iscsi(p, int(chunk), reg);
    p += chunk;
    n -= chunk;
  }
  return ~reg;
}

uint32_t crc32c(const void* data, size_t n) {
  return crc32c_extend(0, data, n);
}

}  // namespace primal::tensorboard
