#include "model/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"
#include "core/parallel.h"
#include "core/reduce.h"

namespace primal {

void check_targets(const std::vector<int32_t>& targets, int64_t count, int classes) {
  if (int64_t(targets.size()) != count) {
    throw Error("cross-entropy: the batch has " + std::to_string(targets.size()) + " targets for " +
                std::to_string(count) + " predictions");
  }
  for (int64_t i = 0; i < count; ++i) {
    if (targets[i] < 0 || targets[i] >= classes) {
      throw Error("cross-entropy: target " + std::to_string(i) + " is " +
                  std::to_string(targets[i]) + ", outside the model's " + std::to_string(classes) +
                  " classes [0, " + std::to_string(classes) + ")");
    }
  }
}

template <typename T>
double cross_entropy_forward(Arena& arena, const Tensor<T>& logits, const int32_t* targets) {
  const int64_t rows = logits.dim(0), V = logits.dim(1);
  double total = 0;
  reduce_rows<double>(arena, rows, 1, &total, [&](int64_t r0, int64_t r1, double* acc) {
    for (int64_t r = r0; r < r1; ++r) {
      T* z = logits.data() + r * V;
      const T max = *std::max_element(z, z + V);
      const T target_shifted = z[targets[r]] - max;
      T sum = 0;
      for (int64_t v = 0; v < V; ++v) sum += z[v] = std::exp(z[v] - max);
      for (int64_t v = 0; v < V; ++v) z[v] /= sum;
      acc[0] += double(std::log(sum)) - double(target_shifted);
    }
  });
  return total;
}

template <typename T>
void cross_entropy_backward(const Tensor<T>& probs, const int32_t* targets, T scale,
                            const Tensor<T>& dlogits) {
  const int64_t rows = probs.dim(0), V = probs.dim(1);
#pragma omp parallel for schedule(static) if (rows * V > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    const T* p = probs.data() + r * V;
    T* g = dlogits.data() + r * V;
    for (int64_t v = 0; v < V; ++v) g[v] = scale * p[v];
    g[targets[r]] -= scale;
  }
}

template double cross_entropy_forward(Arena&, const Tensor<float>&, const int32_t*);
template double cross_entropy_forward(Arena&, const Tensor<double>&, const int32_t*);
template void cross_entropy_backward(const Tensor<float>&, const int32_t*, float,
                                     const Tensor<float>&);
template void cross_entropy_backward(const Tensor<double>&, const int32_t*, double,
                                     const Tensor<double>&);

}  // namespace primal
