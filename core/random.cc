#include "core/random.h"

#include <cmath>
#include <numbers>

namespace primal {

double CounterRng::normal(uint64_t index) const {
  PhiloxBlock b = block(index);
  uint64_t a = ((uint64_t(b[0]) << 32) | b[1]) >> 11;
  uint64_t c = ((uint64_t(b[2]) << 32) | b[3]) >> 11;
  double u1 = (double(a) + 1.0) * 0x1.0p-53;  // (0, 1]: log is finite
  double u2 = double(c) * 0x1.0p-53;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

}  // namespace primal
