// Device helpers of the kernels (included by the .cu files only): element conversions, warp
// and block reductions, and the two deterministic reductions that several kernels share.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "core/cuda/check.h"
#include "core/cuda/kernels.h"

namespace primal::cuda::detail {

__device__ __forceinline__ float to_f(float x) {
  return x;
}
__device__ __forceinline__ float to_f(bf16 x) {
  return __bfloat162float(x);
}
template <typename T>
__device__ __forceinline__ T from_f(float x) {
  if constexpr (std::is_same_v<T, float>)
    return x;
  else
    return __float2bfloat16_rn(x);
}

template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024), returned to every thread.
// `shared` holds 32 values. A fixed tree: the same bits on every run.
template <typename T>
__device__ T block_sum(T x, T* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  x = warp_sum(x);
  __syncthreads();  // shared may still be read by a previous call
  if (lane == 0) shared[warp] = x;
  __syncthreads();
  x = lane < warps ? shared[lane] : T(0);
  return warp_sum(x);
}
__device__ inline float block_max(float x, float* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  x = warp_max(x);
  __syncthreads();
  if (lane == 0) shared[warp] = x;
  __syncthreads();
  x = lane < warps ? shared[lane] : -INFINITY;
  return warp_max(x);
}

inline unsigned blocks_for(int64_t n, int threads, int64_t max_blocks = 65535LL * 8) {
  return unsigned(std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, max_blocks)));
}

// ---- column reduction: out[j] += sum_r f(r, j).{x, y} into out_x, out_y -------------------------
// Block (32, 8) covers 32 columns; grid.y cuts the rows into G groups, a function of the
// row count only; partials [G, 2, C] are then added in group order.
constexpr int kColRows = 8;

inline int column_groups(int64_t rows) {
  return int(std::clamp<int64_t>((rows + 255) / 256, 1, 128));
}

template <typename F>
__global__ void column_partials_kernel(F f, int64_t rows, int C, int G, float* partials) {
  __shared__ float sx[kColRows][33], sy[kColRows][33];
  const int j = blockIdx.x * 32 + threadIdx.x;
  const int g = blockIdx.y;
  const int64_t r0 = rows * g / G, r1 = rows * (g + 1) / G;
  float ax = 0, ay = 0;
  if (j < C) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kColRows) {
      const float2 v = f(r, j);
      ax += v.x;
      ay += v.y;
    }
  }
  sx[threadIdx.y][threadIdx.x] = ax;
  sy[threadIdx.y][threadIdx.x] = ay;
  __syncthreads();
  if (threadIdx.y == 0 && j < C) {
    for (int k = 1; k < kColRows; ++k) {
      ax += sx[k][threadIdx.x];
      ay += sy[k][threadIdx.x];
    }
    partials[(int64_t(g) * 2) * C + j] = ax;
    partials[(int64_t(g) * 2 + 1) * C + j] = ay;
  }
}

__global__ inline void column_finish_kernel(const float* partials, int C, int G, float* out_x,
                                            float* out_y) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= C) return;
  float ax = 0, ay = 0;
  for (int g = 0; g < G; ++g) {
    ax += partials[(int64_t(g) * 2) * C + j];
    ay += partials[(int64_t(g) * 2 + 1) * C + j];
  }
  if (out_x) out_x[j] += ax;
  if (out_y) out_y[j] += ay;
}

template <typename F>
void column_reduce(const Exec& ex, F f, int64_t rows, int C, float* out_x, float* out_y) {
  if (rows == 0 || C == 0) return;
  check(ex.allocator != nullptr, "cuda kernels: this reduction needs Exec::allocator");
  const int G = column_groups(rows);
  DeviceBuffer<float> partials(*ex.allocator, int64_t(G) * 2 * C, ex.stream);
  column_partials_kernel<<<dim3((C + 31) / 32, G), dim3(32, kColRows), 0, ex.stream>>>(
      f, rows, C, G, partials.data());
  PRIMAL_CUDA_CHECK_LAUNCH("column_partials_kernel");
  column_finish_kernel<<<(C + 255) / 256, 256, 0, ex.stream>>>(partials.data(), C, G, out_x, out_y);
  PRIMAL_CUDA_CHECK_LAUNCH("column_finish_kernel");
}

// ---- scalar reduction in double: out[0] += sum_i f(i).x, out[1] += sum_i f(i).y ---------------
// A fixed number of blocks (a function of n only), each over a contiguous range; the block
// partials are added in order by one block.
constexpr int kScalarThreads = 256;

inline int scalar_blocks(int64_t n) {
  return int(std::clamp<int64_t>((n + 4095) / 4096, 1, 1024));
}

template <typename F>
__global__ void scalar_partials_kernel(F f, int64_t n, int blocks, double2* partials) {
  __shared__ double shared[32];
  const int64_t i0 = n * blockIdx.x / blocks, i1 = n * (blockIdx.x + 1) / blocks;
  double ax = 0, ay = 0;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
    const double2 v = f(i);
    ax += v.x;
    ay += v.y;
  }
  ax = block_sum(ax, shared);
  ay = block_sum(ay, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = make_double2(ax, ay);
}

__global__ inline void scalar_finish_kernel(const double2* partials, int blocks, double* out,
                                            int outputs) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double ax = 0, ay = 0;
  for (int b = 0; b < blocks; ++b) {
    ax += partials[b].x;
    ay += partials[b].y;
  }
  out[0] += ax;
  if (outputs > 1) out[1] += ay;
}

template <typename F>
void scalar_reduce(const Exec& ex, F f, int64_t n, double* out, int outputs) {
  if (n == 0) return;
  check(ex.allocator != nullptr, "cuda kernels: this reduction needs Exec::allocator");
  const int blocks = scalar_blocks(n);
  DeviceBuffer<double2> partials(*ex.allocator, blocks, ex.stream);
  scalar_partials_kernel<<<blocks, kScalarThreads, 0, ex.stream>>>(f, n, blocks, partials.data());
  PRIMAL_CUDA_CHECK_LAUNCH("scalar_partials_kernel");
  scalar_finish_kernel<<<1, 32, 0, ex.stream>>>(partials.data(), blocks, out, outputs);
  PRIMAL_CUDA_CHECK_LAUNCH("scalar_finish_kernel");
}

// Keys row n of sample b attends to (see masked_softmax_forward).
__device__ __forceinline__ int attended_keys(const int32_t* lengths, bool causal, int b, int n,
                                             int N) {
  const int len = lengths ? lengths[b] : N;
  if (n >= len) return 0;
  return causal ? min(n + 1, len) : len;
}

__device__ __forceinline__ bool is_real(const int32_t* lengths, int64_t row, int N) {
  return !lengths || int(row % N) < lengths[row / N];
}

}  // namespace primal::cuda::detail
