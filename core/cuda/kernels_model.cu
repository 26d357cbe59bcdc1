// Kernels of the whole model: embedding, dropout, gradient clipping (declared in
// core/cuda/kernels_model.h).
#include <string>

#include "core/cuda/kernel_util.cuh"
#include "core/cuda/kernels_model.h"

namespace primal::cuda {
namespace {

using detail::blocks_for;
using detail::from_f;
using detail::to_f;

constexpr int kThreads = 256;

// ---- embedding ----------------------------------------------------------------------------------

template <typename T, typename TX>
__global__ void embedding_forward_kernel(const int32_t* tokens, const float* tok, const T* in,
                                         const float* cls, const float* pos, TX* x, int64_t n,
                                         int N, int first, int C) {
  const int S = N + first;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / C;  // (b, s)
    const int c = int(i % C), s = int(row % S);
    const int64_t input_row = (row / S) * N + s - first;  // (b, s - first) among the inputs
    float v;
    if (s < first)
      v = cls[c];
    else if (tokens)
      v = tok[int64_t(tokens[input_row]) * C + c];
    else
      v = to_f(in[input_row * C + c]);
    x[i] = from_f<TX>(v + pos[int64_t(s) * C + c]);
  }
}

template <typename T>
__global__ void position_backward_kernel(const T* dx, float* dpos, int B, int S, int C) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;  // (s, c)
  if (i >= int64_t(S) * C) return;
  float g = dpos[i];
  for (int b = 0; b < B; ++b) g += to_f(dx[int64_t(b) * S * C + i]);
  dpos[i] = g;
}

template <typename T>
__global__ void cls_backward_kernel(const T* dx, float* dcls, int B, int S, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float g = dcls[c];
  for (int b = 0; b < B; ++b) g += to_f(dx[int64_t(b) * S * C + c]);
  dcls[c] = g;
}

// grid (V, ceil(C / threads)): thread (v, c) walks the rows of token v in order.
template <typename T>
__global__ void token_backward_kernel(const T* dx, const int32_t* offsets, const int32_t* rows,
                                      float* dtok, int N, int first, int C) {
  const int v = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int32_t begin = offsets[v], end = offsets[v + 1];
  if (begin == end) return;
  const int S = N + first;
  float g = dtok[int64_t(v) * C + c];
  for (int32_t k = begin; k < end; ++k) {
    const int32_t r = rows[k];
    g += to_f(dx[(int64_t(r / N) * S + r % N + first) * C + c]);
  }
  dtok[int64_t(v) * C + c] = g;
}

// ---- padding, pooling, ReLU ---------------------------------------------------------------------

template <typename T>
__global__ void zero_padded_rows_kernel(T* x, const int32_t* lengths, int64_t n, int N, int C) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / C;
    if (int(row % N) >= lengths[row / N]) x[i] = from_f<T>(0.f);
  }
}

// One thread per (b, c).
template <typename T>
__global__ void pool_forward_kernel(const T* x, const int32_t* lengths, T* pooled, int B, int N,
                                    int C, bool cls) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= int64_t(B) * C) return;
  const int b = int(i / C), c = int(i % C);
  const T* xb = x + int64_t(b) * N * C + c;
  if (cls) {
    pooled[i] = xb[0];
    return;
  }
  const int len = lengths ? lengths[b] : N;
  float acc = 0;
  for (int n = 0; n < len; ++n) acc = em::add_rn(acc, to_f(xb[int64_t(n) * C]));
  pooled[i] = from_f<T>(em::div_rn(acc, float(len)));
}

template <typename T>
__global__ void pool_backward_kernel(const T* dpooled, const int32_t* lengths, T* dx, int64_t n,
                                     int N, int C, bool cls) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / C;
    const int b = int(row / N), pos = int(row % N), c = int(i % C);
    const int rows = cls ? 1 : (lengths ? lengths[b] : N);
    const float scale = cls ? 1.f : em::div_rn(1.f, float(rows));
    const float g = to_f(dpooled[int64_t(b) * C + c]);
    dx[i] = from_f<T>(pos < rows ? em::mul_rn(g, scale) : 0.f);
  }
}

template <typename T>
__global__ void relu_forward_kernel(const T* x, T* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_f<T>(fmaxf(to_f(x[i]), 0.f));
}

template <typename T>
__global__ void relu_backward_kernel(const T* x, const T* dy, T* dx, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = to_f(x[i]) > 0.f ? dy[i] : from_f<T>(0.f);
}

// ---- sampled rows -------------------------------------------------------------------------------

template <typename T>
__global__ void gather_rows_kernel(const T* x, const int32_t* idx, T* xs, int64_t n, int N, int L,
                                   int C, int Cx, int c0) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t bl = i / C;  // (b, l)
    const int64_t b = bl / L;
    xs[i] = x[(b * N + idx[bl]) * Cx + c0 + i % C];
  }
}

// One thread per (b, c), l in order.
template <typename T>
__global__ void scatter_add_rows_kernel(const T* dxs, const int32_t* idx, T* dx, int B, int N,
                                        int L, int C, int Cx, int c0) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= int64_t(B) * C) return;
  const int64_t b = i / C;
  const int c = int(i % C);
  for (int l = 0; l < L; ++l) {
    const int64_t bl = b * L + l;
    T* out = dx + (b * N + idx[bl]) * Cx + c0 + c;
    *out = from_f<T>(to_f(*out) + to_f(dxs[bl * C + c]));
  }
}

// ---- dropout ------------------------------------------------------------------------------------

__device__ __forceinline__ float dropped(float x, PhiloxStream stream, uint64_t index, float p,
                                         float scale) {
  if (p <= 0.f) return x;
  // mul_rn: never contracted with the residual add that follows (the CPU rounds both).
  return philox_uniform_f32(stream, index) >= p ? em::mul_rn(x, scale) : 0.f;
}

template <typename TI, typename TO>
__global__ void dropout_kernel(const TI* in, TO* out, int64_t n, PhiloxStream stream,
                               uint64_t first, float p, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_f<TO>(dropped(to_f(in[i]), stream, first + uint64_t(i), p, scale));
}

template <typename T, typename TR>
__global__ void dropout_residual_kernel(const T* a, const TR* residual, TR* y, int64_t n,
                                        PhiloxStream stream, uint64_t first, float p, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    // The CPU rounds the dropped value first (x * scale in T), then adds the residual.
    const float d = to_f(from_f<T>(dropped(to_f(a[i]), stream, first + uint64_t(i), p, scale)));
    y[i] = from_f<TR>(d + to_f(residual[i]));
  }
}

// ---- clipping -----------------------------------------------------------------------------------

struct Square {
  const float* x;
  __device__ double2 operator()(int64_t i) const {
    const double v = x[i];
    return make_double2(v * v, 0.0);
  }
};

__global__ void scale_kernel(float* x, int64_t n, float s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    x[i] *= s;
}

}  // namespace

template <typename T, typename TX>
void embedding_forward(const Exec& ex, const int32_t* tokens, const float* tok, const T* in,
                       const float* cls, const float* pos, TX* x, int B, int N, int first, int C) {
  const int64_t n = int64_t(B) * (N + first) * C;
  if (n == 0) return;
  check(first == 0 || cls, "embedding_forward: a CLS slot needs the cls vector");
  check(tokens ? tok != nullptr : in != nullptr, "embedding_forward: no input rows");
  embedding_forward_kernel<<<blocks_for(n, kThreads), kThreads, 0, ex.stream>>>(
      tokens, tok, in, cls, pos, x, n, N, first, C);
  PRIMAL_CUDA_CHECK_LAUNCH("embedding_forward_kernel");
}

template <typename T>
void position_backward(const Exec& ex, const T* dx, float* dpos, int B, int S, int C) {
  const int64_t n = int64_t(S) * C;
  if (n == 0) return;
  position_backward_kernel<<<unsigned((n + kThreads - 1) / kThreads), kThreads, 0, ex.stream>>>(
      dx, dpos, B, S, C);
  PRIMAL_CUDA_CHECK_LAUNCH("position_backward_kernel");
}

template <typename T>
void cls_backward(const Exec& ex, const T* dx, float* dcls, int B, int S, int C) {
  if (C == 0) return;
  cls_backward_kernel<<<unsigned((C + kThreads - 1) / kThreads), kThreads, 0, ex.stream>>>(dx, dcls,
                                                                                           B, S, C);
  PRIMAL_CUDA_CHECK_LAUNCH("cls_backward_kernel");
}

template <typename T>
void token_backward(const Exec& ex, const T* dx, const int32_t* offsets, const int32_t* rows,
                    float* dtok, int V, int N, int first, int C) {
  if (V == 0 || C == 0) return;
  const int threads = std::min(C, 256);
  token_backward_kernel<<<dim3(V, (C + threads - 1) / threads), threads, 0, ex.stream>>>(
      dx, offsets, rows, dtok, N, first, C);
  PRIMAL_CUDA_CHECK_LAUNCH("token_backward_kernel");
}

void token_rows(const int32_t* tokens, int64_t n, int V, std::vector<int32_t>& offsets,
                std::vector<int32_t>& rows) {
  check(n <= INT32_MAX, "token_rows: more than 2^31 rows");
  offsets.assign(size_t(V) + 1, 0);
  for (int64_t r = 0; r < n; ++r) {
    const int32_t t = tokens[r];
    if (t < 0 || t >= V) {
      throw Error("token " + std::to_string(t) + " at row " + std::to_string(r) +
                  " is outside the vocabulary [0, " + std::to_string(V) + ")");
    }
    ++offsets[size_t(t) + 1];
  }
  for (int v = 0; v < V; ++v) offsets[size_t(v) + 1] += offsets[size_t(v)];
  rows.resize(size_t(n));
  std::vector<int32_t> next(offsets.begin(), offsets.end() - 1);
  for (int64_t r = 0; r < n; ++r) rows[size_t(next[size_t(tokens[r])]++)] = int32_t(r);
}

template <typename T>
void zero_padded_rows(const Exec& ex, T* x, const int32_t* lengths, int B, int N, int C) {
  const int64_t n = int64_t(B) * N * C;
  if (!lengths || n == 0) return;
  zero_padded_rows_kernel<<<blocks_for(n, kThreads), kThreads, 0, ex.stream>>>(x, lengths, n, N, C);
  PRIMAL_CUDA_CHECK_LAUNCH("zero_padded_rows_kernel");
}

template <typename T>
void pool_forward(const Exec& ex, const T* x, const int32_t* lengths, T* pooled, int B, int N,
                  int C, bool cls) {
  const int64_t n = int64_t(B) * C;
  if (n == 0) return;
  pool_forward_kernel<<<unsigned((n + kThreads - 1) / kThreads), kThreads, 0, ex.stream>>>(
      x, lengths, pooled, B, N, C, cls);
  PRIMAL_CUDA_CHECK_LAUNCH("pool_forward_kernel");
}

template <typename T>
void pool_backward(const Exec& ex, const T* dpooled, const int32_t* lengths, T* dx, int B, int N,
                   int C, bool cls) {
  const int64_t n = int64_t(B) * N * C;
  if (n == 0) return;
  pool_backward_kernel<<<blocks_for(n, kThreads), kThreads, 0, ex.stream>>>(dpooled, lengths, dx, n,
                                                                            N, C, cls);
  PRIMAL_CUDA_CHECK_LAUNCH("pool_backward_kernel");
}

template <typename T>
void relu_forward(const Exec& ex, const T* x, T* y, int64_t n) {
  if (n == 0) return;
  relu_forward_kernel<<<blocks_for(n, kThreads), kThreads, 0, ex.stream>>>(x, y, n);
  PRIMAL_CUDA_CHECK_LAUNCH("relu_forward_kernel");
}

template <typename T>
void relu_backward(const Exec& ex, const T* x, const T* dy, T* dx, int64_t n) {
  if (n == 0) return;
  relu_backward_kernel<<<blocks_for(n, kThreads), kThreads, 0, ex.stream>>>(x, dy, dx, n);
  PRIMAL_CUDA_CHECK_LAUNCH("relu_backward_kernel");
}

template <typename T>
void gather_rows(const Exec& ex, const T* x, const int32_t* idx, T* xs, int B, int N, int L, int C,
                 int Cx, int c0) {
  const int64_t n = int64_t(B) * L * C;
  if (n == 0) return;
  gather_rows_kernel<<<blocks_for(n, kThreads), kThreads, 0, ex.stream>>>(x, idx, xs, n, N, L, C,
                                                                          Cx, c0);
  PRIMAL_CUDA_CHECK_LAUNCH("gather_rows_kernel");
}

template <typename T>
void scatter_add_rows(const Exec& ex, const T* dxs, const int32_t* idx, T* dx, int B, int N, int L,
                      int C, int Cx, int c0) {
  const int64_t n = int64_t(B) * C;
  if (n == 0) return;
  scatter_add_rows_kernel<<<unsigned((n + kThreads - 1) / kThreads), kThreads, 0, ex.stream>>>(
      dxs, idx, dx, B, N, L, C, Cx, c0);
  PRIMAL_CUDA_CHECK_LAUNCH("scatter_add_rows_kernel");
}

void sampled_positions(const int32_t* lengths, int B, int N, int L, std::vector<int32_t>& idx) {
  idx.resize(size_t(B) * L);
  for (int b = 0; b < B; ++b) {
    const int64_t len = lengths ? lengths[b] : N;
    check(len >= 1 && len <= N, "sampled_positions: a length outside [1, N]");
    for (int l = 0; l < L; ++l) {
      idx[size_t(b) * L + l] = L == 1 ? 0 : int32_t(l * (len - 1) / (L - 1));
    }
  }
}

template <typename TI, typename TO>
void dropout(const Exec& ex, const TI* in, TO* out, int64_t n, PhiloxStream stream, uint64_t first,
             float p, float scale) {
  if (n == 0) return;
  dropout_kernel<<<blocks_for(n, kThreads), kThreads, 0, ex.stream>>>(in, out, n, stream, first, p,
                                                                      scale);
  PRIMAL_CUDA_CHECK_LAUNCH("dropout_kernel");
}

template <typename T, typename TR>
void dropout_residual(const Exec& ex, const T* a, const TR* residual, TR* y, int64_t n,
                      PhiloxStream stream, uint64_t first, float p, float scale) {
  if (n == 0) return;
  dropout_residual_kernel<<<blocks_for(n, kThreads), kThreads, 0, ex.stream>>>(
      a, residual, y, n, stream, first, p, scale);
  PRIMAL_CUDA_CHECK_LAUNCH("dropout_residual_kernel");
}

void sum_of_squares(const Exec& ex, const float* x, int64_t n, double* out) {
  detail::scalar_reduce(ex, Square{x}, n, out, 1);
}

void scale_inplace(const Exec& ex, float* x, int64_t n, float s) {
  if (n == 0) return;
  scale_kernel<<<blocks_for(n, kThreads), kThreads, 0, ex.stream>>>(x, n, s);
  PRIMAL_CUDA_CHECK_LAUNCH("scale_kernel");
}

#define PRIMAL_INSTANTIATE(T)                                                                      \
  template void embedding_forward<T, T>(const Exec&, const int32_t*, const float*, const T*,       \
                                        const float*, const float*, T*, int, int, int, int);       \
  template void position_backward<T>(const Exec&, const T*, float*, int, int, int);                \
  template void cls_backward<T>(const Exec&, const T*, float*, int, int, int);                     \
  template void token_backward<T>(const Exec&, const T*, const int32_t*, const int32_t*, float*,   \
                                  int, int, int, int);                                             \
  template void zero_padded_rows<T>(const Exec&, T*, const int32_t*, int, int, int);               \
  template void pool_forward<T>(const Exec&, const T*, const int32_t*, T*, int, int, int, bool);   \
  template void pool_backward<T>(const Exec&, const T*, const int32_t*, T*, int, int, int, bool);  \
  template void relu_forward<T>(const Exec&, const T*, T*, int64_t);                               \
  template void relu_backward<T>(const Exec&, const T*, const T*, T*, int64_t);                    \
  template void gather_rows<T>(const Exec&, const T*, const int32_t*, T*, int, int, int, int, int, \
                               int);                                                               \
  template void scatter_add_rows<T>(const Exec&, const T*, const int32_t*, T*, int, int, int, int, \
                                    int, int);                                                     \
  template void dropout<T, T>(const Exec&, const T*, T*, int64_t, PhiloxStream, uint64_t, float,   \
                              float);                                                              \
  template void dropout_residual<T, T>(const Exec&, const T*, const T*, T*, int64_t, PhiloxStream, \
                                       uint64_t, float, float);
PRIMAL_INSTANTIATE(float)
PRIMAL_INSTANTIATE(bf16)
#undef PRIMAL_INSTANTIATE
// The fp32 residual stream of the bf16 model: the embedding written to it, a bf16 branch added
// into it, its gradient dropped into a bf16 branch gradient.
template void embedding_forward<bf16, float>(const Exec&, const int32_t*, const float*, const bf16*,
                                             const float*, const float*, float*, int, int, int,
                                             int);
template void dropout<float, bf16>(const Exec&, const float*, bf16*, int64_t, PhiloxStream,
                                   uint64_t, float, float);
template void dropout_residual<bf16, float>(const Exec&, const bf16*, const float*, float*, int64_t,
                                            PhiloxStream, uint64_t, float, float);

}  // namespace primal::cuda
