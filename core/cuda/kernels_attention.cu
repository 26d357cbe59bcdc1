// Kernels of the attention layers: phi, prefix means, masked softmax and the KSVD terms
// (declared in core/cuda/kernels.h).
#include "core/cuda/kernel_util.cuh"

namespace primal::cuda {
namespace {

using detail::attended_keys;
using detail::block_max;
using detail::block_sum;
using detail::blocks_for;
using detail::from_f;
using detail::is_real;
using detail::to_f;
using detail::warp_sum;

constexpr int kThreads = 256;

// ---- phi: one warp per (row, head) vector ---------------------------------------------------

template <typename T>
__global__ void phi_forward_kernel(const T* v, int64_t ld_v, T* u, int64_t ld_u, float* norm,
                                   int64_t vectors, int H, int d) {
  const int64_t w = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (w >= vectors) return;  // whole warps: w is the same for the 32 lanes
  const int64_t r = w / H;
  const int h = int(w % H);
  const T* vr = v + r * ld_v + int64_t(h) * d;
  T* ur = u + r * ld_u + int64_t(h) * d;
  float sq = 0;
  for (int j = lane; j < d; j += 32) {
    const float x = to_f(vr[j]);
    sq += x * x;
  }
  const float n = sqrtf(warp_sum(sq));
  const float inv = em::phi_scale(n);
  for (int j = lane; j < d; j += 32) ur[j] = from_f<T>(to_f(vr[j]) * inv);
  if (lane == 0) norm[w] = n;
}

template <typename T>
__global__ void phi_backward_kernel(const T* u, int64_t ld_u, const float* norm, const T* du,
                                    int64_t ld_du, T* dv, int64_t ld_dv, int64_t vectors, int H,
                                    int d) {
  const int64_t w = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (w >= vectors) return;
  const int64_t r = w / H;
  const int h = int(w % H);
  const T* ur = u + r * ld_u + int64_t(h) * d;
  const T* gr = du + r * ld_du + int64_t(h) * d;
  T* dr = dv + r * ld_dv + int64_t(h) * d;
  float dot = 0;
  for (int j = lane; j < d; j += 32) dot += to_f(ur[j]) * to_f(gr[j]);
  dot = warp_sum(dot);
  const float n = norm[w];
  for (int j = lane; j < d; j += 32)
    dr[j] = from_f<T>(em::phi_grad(to_f(gr[j]), to_f(ur[j]), dot, n));
}

// ---- prefix means: block (32 channels, 32 chunks of positions) per (channel tile, sample) -----
// Pass 1 sums each chunk, the chunk offsets come from shared memory, pass 2 runs the sums.
// Every thread reads back only its own chunk: in and out may be the same buffer.

constexpr int kChunks = 32;
// 32 x kChunks = 1024 threads a block: the compiler must keep each thread within the registers
// that a block this large can have (64 at most), or the launch fails on the device.
constexpr int kPrefixThreads = 32 * kChunks;

template <typename T>
__global__ void __launch_bounds__(kPrefixThreads)
    prefix_mean_forward_kernel(const T* in, int64_t ld_in, T* out, int64_t ld_out, int N, int C) {
  __shared__ float sums[kChunks][33];
  const int c = blockIdx.x * 32 + threadIdx.x, t = threadIdx.y;
  const int64_t b = blockIdx.y;
  const int n0 = int(int64_t(N) * t / kChunks), n1 = int(int64_t(N) * (t + 1) / kChunks);
  const T* ib = in + b * N * ld_in + c;
  T* ob = out + b * N * ld_out + c;
  float s = 0;
  if (c < C)
    for (int n = n0; n < n1; ++n) s += to_f(ib[n * ld_in]);
  sums[t][threadIdx.x] = s;
  __syncthreads();
  if (c >= C) return;
  float acc = 0;
  for (int k = 0; k < t; ++k) acc += sums[k][threadIdx.x];
  for (int n = n0; n < n1; ++n) {
    acc += to_f(ib[n * ld_in]);
    ob[n * ld_out] = from_f<T>(acc / float(n + 1));
  }
}

template <typename T>
__global__ void __launch_bounds__(kPrefixThreads)
    prefix_mean_backward_kernel(const T* dout, int64_t ld_dout, T* din, int64_t ld_din, int N,
                                int C) {
  __shared__ float sums[kChunks][33];
  const int c = blockIdx.x * 32 + threadIdx.x, t = threadIdx.y;
  const int64_t b = blockIdx.y;
  const int n0 = int(int64_t(N) * t / kChunks), n1 = int(int64_t(N) * (t + 1) / kChunks);
  const T* gb = dout + b * N * ld_dout + c;
  T* db = din + b * N * ld_din + c;
  float s = 0;
  if (c < C)
    for (int n = n0; n < n1; ++n) s += to_f(gb[n * ld_dout]) / float(n + 1);
  sums[t][threadIdx.x] = s;
  __syncthreads();
  if (c >= C) return;
  float acc = 0;
  for (int k = kChunks - 1; k > t; --k) acc += sums[k][threadIdx.x];
  for (int n = n1 - 1; n >= n0; --n) {
    acc += to_f(gb[n * ld_dout]) / float(n + 1);
    db[n * ld_din] = from_f<T>(acc);
  }
}

// ---- masked softmax: one block per row of scores
// ---------------------------------------------------

template <typename T>
__global__ void masked_softmax_kernel(const float* scores, T* P, const int32_t* lengths,
                                      bool causal, int H, int N) {
  __shared__ float shared[32];
  const int64_t row = blockIdx.x;
  const int n = int(row % N);
  const int b = int(row / (int64_t(H) * N));
  const int keys = attended_keys(lengths, causal, b, n, N);
  const float* s = scores + row * N;
  T* p = P + row * N;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < keys; j += blockDim.x) mx = fmaxf(mx, s[j]);
  mx = block_max(mx, shared);
  float sum = 0;
  for (int j = threadIdx.x; j < keys; j += blockDim.x) sum += expf(s[j] - mx);
  sum = block_sum(sum, shared);
  for (int j = threadIdx.x; j < N; j += blockDim.x)
    p[j] = from_f<T>(j < keys ? expf(s[j] - mx) / sum : 0.f);
}

template <typename T>
__global__ void softmax_backward_kernel(const T* P, const float* dP, T* dS, int N) {
  __shared__ float shared[32];
  const int64_t row = blockIdx.x;
  const T* p = P + row * N;
  const float* g = dP + row * N;
  T* out = dS + row * N;
  float dot = 0;
  for (int j = threadIdx.x; j < N; j += blockDim.x) dot += g[j] * to_f(p[j]);
  dot = block_sum(dot, shared);
  for (int j = threadIdx.x; j < N; j += blockDim.x) {
    const float pj = to_f(p[j]);
    out[j] = from_f<T>(pj * (g[j] - dot));
  }
}

int row_threads(int N) {
  return N >= 256 ? 256 : ((N + 31) / 32) * 32;
}

// ---- KSVD
// --------------------------------------------------------------------------------------------

// Element k of [B N, H, s]: (0.5 (lambda e)^2, 0.5 (lambda r)^2) on real tokens.
template <typename T>
struct KsvdSums {
  const T* er;
  const float* lambda;
  const int32_t* lengths;
  int N, H, s;
  __device__ double2 operator()(int64_t k) const {
    const int64_t hs = int64_t(H) * s, row = k / hs;
    const int hi = int(k % hs), h = hi / s, i = hi % s;
    if (!is_real(lengths, row, N)) return make_double2(0.0, 0.0);
    const T* e = er + row * 2 * hs + int64_t(h) * 2 * s;
    const double l2 = double(lambda[hi]) * lambda[hi];
    const double ev = to_f(e[i]), rv = to_f(e[s + i]);
    return make_double2(0.5 * l2 * ev * ev, 0.5 * l2 * rv * rv);
  }
};

struct Dot {
  const float* a;
  const float* b;
  __device__ double2 operator()(int64_t i) const { return make_double2(double(a[i]) * b[i], 0.0); }
};

template <typename T, typename TD>
__global__ void ksvd_der_kernel(const T* er, const float* lambda, const int32_t* lengths, int N,
                                int H, int s, float gk, TD* der, int64_t n) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n;
       k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t hs = int64_t(H) * s, row = k / hs;
    if (!is_real(lengths, row, N)) continue;
    const int hi = int(k % hs), h = hi / s, i = hi % s;
    const int64_t at = row * 2 * hs + int64_t(h) * 2 * s + i;
    const float l2 = lambda[hi] * lambda[hi];
    der[at] = from_f<TD>(to_f(der[at]) + gk * l2 * to_f(er[at]));
    der[at + s] = from_f<TD>(to_f(der[at + s]) + gk * l2 * to_f(er[at + s]));
  }
}

// (gk (e^2 + r^2) lambda, 0) at (token row, column h s + i).
template <typename T>
struct KsvdLambdaGrad {
  const T* er;
  const float* lambda;
  const int32_t* lengths;
  int N, H, s;
  float gk;
  __device__ float2 operator()(int64_t row, int hi) const {
    if (!is_real(lengths, row, N)) return make_float2(0.f, 0.f);
    const int h = hi / s, i = hi % s;
    const T* e = er + row * 2 * int64_t(H) * s + int64_t(h) * 2 * s;
    const float ev = to_f(e[i]), rv = to_f(e[s + i]);
    return make_float2(gk * (ev * ev + rv * rv) * lambda[hi], 0.f);
  }
};

__global__ void ksvd_trace_backward_kernel(const float* we, const float* wr, float gt, float* dwe,
                                           float* dwr, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    dwe[i] += gt * wr[i];
    dwr[i] += gt * we[i];
  }
}

}  // namespace

template <typename T>
void phi_forward(const Exec& ex, const T* v, int64_t ld_v, T* u, int64_t ld_u, float* norm,
                 int64_t rows, int H, int d) {
  const int64_t vectors = rows * H;
  if (vectors == 0) return;
  phi_forward_kernel<<<blocks_for(vectors * 32, kThreads, INT32_MAX), kThreads, 0, ex.stream>>>(
      v, ld_v, u, ld_u, norm, vectors, H, d);
  PRIMAL_CUDA_CHECK_LAUNCH("phi_forward_kernel");
}

template <typename T>
void phi_backward(const Exec& ex, const T* u, int64_t ld_u, const float* norm, const T* du,
                  int64_t ld_du, T* dv, int64_t ld_dv, int64_t rows, int H, int d) {
  const int64_t vectors = rows * H;
  if (vectors == 0) return;
  phi_backward_kernel<<<blocks_for(vectors * 32, kThreads, INT32_MAX), kThreads, 0, ex.stream>>>(
      u, ld_u, norm, du, ld_du, dv, ld_dv, vectors, H, d);
  PRIMAL_CUDA_CHECK_LAUNCH("phi_backward_kernel");
}

template <typename T>
void prefix_mean_forward(const Exec& ex, const T* in, int64_t ld_in, T* out, int64_t ld_out, int B,
                         int N, int C) {
  if (B == 0 || N == 0 || C == 0) return;
  prefix_mean_forward_kernel<<<dim3((C + 31) / 32, B), dim3(32, kChunks), 0, ex.stream>>>(
      in, ld_in, out, ld_out, N, C);
  PRIMAL_CUDA_CHECK_LAUNCH("prefix_mean_forward_kernel");
}

template <typename T>
void prefix_mean_backward(const Exec& ex, const T* dout, int64_t ld_dout, T* din, int64_t ld_din,
                          int B, int N, int C) {
  if (B == 0 || N == 0 || C == 0) return;
  prefix_mean_backward_kernel<<<dim3((C + 31) / 32, B), dim3(32, kChunks), 0, ex.stream>>>(
      dout, ld_dout, din, ld_din, N, C);
  PRIMAL_CUDA_CHECK_LAUNCH("prefix_mean_backward_kernel");
}

template <typename T>
void masked_softmax_forward(const Exec& ex, const float* scores, T* P, const int32_t* lengths,
                            bool causal, int B, int H, int N) {
  const int64_t rows = int64_t(B) * H * N;
  if (rows == 0) return;
  check(rows <= INT32_MAX, "masked_softmax_forward: more than 2^31 rows");
  masked_softmax_kernel<<<unsigned(rows), row_threads(N), 0, ex.stream>>>(scores, P, lengths,
                                                                          causal, H, N);
  PRIMAL_CUDA_CHECK_LAUNCH("masked_softmax_kernel");
}

template <typename T>
void softmax_backward(const Exec& ex, const T* P, const float* dP, T* dS, int64_t rows, int N) {
  if (rows == 0) return;
  check(rows <= INT32_MAX, "softmax_backward: more than 2^31 rows");
  softmax_backward_kernel<<<unsigned(rows), row_threads(N), 0, ex.stream>>>(P, dP, dS, N);
  PRIMAL_CUDA_CHECK_LAUNCH("softmax_backward_kernel");
}

template <typename T>
void ksvd_partial_sums(const Exec& ex, const T* er, const float* lambda, const int32_t* lengths,
                       int B, int N, int H, int s, double* sums) {
  detail::scalar_reduce(ex, KsvdSums<T>{er, lambda, lengths, N, H, s}, int64_t(B) * N * H * s, sums,
                        2);
}

void ksvd_trace(const Exec& ex, const float* we, const float* wr, int64_t n, double* t) {
  detail::scalar_reduce(ex, Dot{we, wr}, n, t, 1);
}

template <typename T, typename TD>
void ksvd_backward(const Exec& ex, const T* er, const float* lambda, const int32_t* lengths, int B,
                   int N, int H, int s, float gk, TD* der, float* dlambda) {
  const int64_t rows = int64_t(B) * N, n = rows * H * s;
  if (n == 0) return;
  detail::column_reduce(ex, KsvdLambdaGrad<T>{er, lambda, lengths, N, H, s, gk}, rows, H * s,
                        dlambda, nullptr);
  ksvd_der_kernel<<<blocks_for(n, kThreads), kThreads, 0, ex.stream>>>(er, lambda, lengths, N, H, s,
                                                                       gk, der, n);
  PRIMAL_CUDA_CHECK_LAUNCH("ksvd_der_kernel");
}

void ksvd_trace_backward(const Exec& ex, const float* we, const float* wr, float gt, float* dwe,
                         float* dwr, int64_t n) {
  if (n == 0) return;
  ksvd_trace_backward_kernel<<<blocks_for(n, kThreads), kThreads, 0, ex.stream>>>(we, wr, gt, dwe,
                                                                                  dwr, n);
  PRIMAL_CUDA_CHECK_LAUNCH("ksvd_trace_backward_kernel");
}

#define PRIMAL_INSTANTIATE(T)                                                                      \
  template void phi_forward<T>(const Exec&, const T*, int64_t, T*, int64_t, float*, int64_t, int,  \
                               int);                                                               \
  template void phi_backward<T>(const Exec&, const T*, int64_t, const float*, const T*, int64_t,   \
                                T*, int64_t, int64_t, int, int);                                   \
  template void prefix_mean_forward<T>(const Exec&, const T*, int64_t, T*, int64_t, int, int,      \
                                       int);                                                       \
  template void prefix_mean_backward<T>(const Exec&, const T*, int64_t, T*, int64_t, int, int,     \
                                        int);                                                      \
  template void masked_softmax_forward<T>(const Exec&, const float*, T*, const int32_t*, bool,     \
                                          int, int, int);                                          \
  template void softmax_backward<T>(const Exec&, const T*, const float*, T*, int64_t, int);        \
  template void ksvd_partial_sums<T>(const Exec&, const T*, const float*, const int32_t*, int,     \
                                     int, int, int, double*);                                      \
  template void ksvd_backward<T, T>(const Exec&, const T*, const float*, const int32_t*, int, int, \
                                    int, int, float, T*, float*);
PRIMAL_INSTANTIATE(float)
PRIMAL_INSTANTIATE(bf16)
#undef PRIMAL_INSTANTIATE
// bf16 activations, the score gradient accumulated in fp32 (the device model's backward).
template void ksvd_backward<bf16, float>(const Exec&, const bf16*, const float*, const int32_t*,
                                         int, int, int, int, float, float*, float*);

}  // namespace primal::cuda
