// CRC-32C throughput on one core (trainer/tensorboard/crc32c.h: checkpoints and TensorBoard
// records): the median GB/s of 7 passes over a 256 MiB buffer.
//   build/bench/crc32c_bench
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "trainer/tensorboard/crc32c.h"

int main() {
  std::vector<unsigned char> buffer(size_t{256} << 20);
  for (size_t i = 0; i < buffer.size(); ++i) buffer[i] = (unsigned char)((i * 2654435761u) >> 13);
  std::vector<double> gb_per_s;
  uint32_t crc = 0;
  for (int pass = 0; pass < 7; ++pass) {
    const auto t0 = std::chrono::steady_clock::now();
    crc ^= primal::tensorboard::crc32c(buffer.data(), buffer.size());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    gb_per_s.push_back(double(buffer.size()) / s / 1e9);
  }
  std::sort(gb_per_s.begin(), gb_per_s.end());
  std::printf("crc32c, 256 MiB, 7 passes: median %.2f GB/s (min %.2f, max %.2f); crc %08x\n",
              gb_per_s[3], gb_per_s.front(), gb_per_s.back(), crc);
}
