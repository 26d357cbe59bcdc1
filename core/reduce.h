// Deterministic parallel reductions over rows. Rows are cut into a fixed number of chunks
// (a function of the row count only, not of the thread count); each chunk accumulates into
// its own partial, and the partials are added in chunk order. The result is bitwise the same
// for any number of threads.
#pragma once

#include <algorithm>
#include <cstdint>

#include "core/arena.h"
#include "core/parallel.h"

namespace primal {

inline constexpr int64_t kReduceChunks = 64;

// sum_j a[j] b[j], in SIMD lanes: a fixed order for a build (not left to right), without an
// add's latency per element.
template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) sum += a[j] * b[j];
  return sum;
}

// out[0..width) += sum over rows r of the row values that fn(r0, r1, partial) adds into
// partial (a zeroed [width] buffer) for its chunk [r0, r1).
template <typename T, typename Fn>
void reduce_rows(Arena& arena, int64_t rows, int64_t width, T* out, Fn fn) {
  const int64_t chunks = std::min(rows, kReduceChunks);
  if (chunks == 0) return;
  Tensor<T> partial = arena.zeros<T>({chunks, width});
#pragma omp parallel for schedule(static) if (rows * width > kParallelGrain)
  for (int64_t c = 0; c < chunks; ++c) {
    fn(rows * c / chunks, rows * (c + 1) / chunks, partial.data() + c * width);
  }
  for (int64_t c = 0; c < chunks; ++c) {
    const T* p = partial.data() + c * width;
    for (int64_t j = 0; j < width; ++j) out[j] += p[j];
  }
}

// out[j] += sum_r x[r * ld + j], j < width.
template <typename T>
void add_column_sums(Arena& arena, const T* x, int64_t rows, int64_t width, int64_t ld, T* out) {
  reduce_rows<T>(arena, rows, width, out, [&](int64_t r0, int64_t r1, T* acc) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * ld;
      for (int64_t j = 0; j < width; ++j) acc[j] += xr[j];
    }
  });
}

}  // namespace primal
