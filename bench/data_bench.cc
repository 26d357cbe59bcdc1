// The generated datasets' cost per sample on one core: ListOps and Pathfinder-32 make every
// sample on demand inside the training loop. Median microseconds per sample over 7 passes of
// 2,000 training samples each.
//   build/bench/data_bench
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "data/listops.h"
#include "data/pathfinder.h"

namespace {

void report(const char* name, const std::function<void(int64_t)>& make_sample) {
  constexpr int kPasses = 7, kSamples = 2000;
  std::vector<double> us;
  for (int pass = 0; pass < kPasses; ++pass) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kSamples; ++i) make_sample(int64_t(pass) * kSamples + i);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    us.push_back(s * 1e6 / kSamples);
  }
  std::sort(us.begin(), us.end());
  std::printf("%-24s median %7.1f us per sample (min %.1f, max %.1f), %d x %d samples\n", name,
              us[kPasses / 2], us.front(), us.back(), kPasses, kSamples);
}

}  // namespace

int main() {
  using namespace primal;
  const Pathfinder pathfinder(1, DataOrder::kRandom);
  std::vector<uint8_t> image(Pathfinder::kPixels);
  report("pathfinder-32",
         [&](int64_t i) { pathfinder.sample(DataSplit::kTrain, i, image.data()); });
  const ListOps listops(2000, 1, DataOrder::kRandom);
  std::vector<int32_t> tokens;
  report("listops (500..2000)", [&](int64_t i) { listops.sample(DataSplit::kTrain, i, tokens); });
}
