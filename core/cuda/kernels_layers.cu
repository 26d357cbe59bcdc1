// Kernels of the layers around attention: conversions, LayerNorm, GELU, bias and residual,
// cross-entropy, AdamW (declared in core/cuda/kernels.h).
#include "core/cuda/kernel_util.cuh"

namespace primal::cuda {
namespace {

using detail::block_max;
using detail::block_sum;
using detail::blocks_for;
using detail::from_f;
using detail::to_f;

constexpr int kThreads = 256;

template <typename TO, typename TI>
__global__ void convert_kernel(const TI* in, TO* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_f<TO>(to_f(in[i]));
}

// ---- LayerNorm: one block per row; two passes (mean, then variance) as the CPU does ----------

template <typename TX, typename TY>
__global__ void layernorm_forward_kernel(const TX* x, const float* w, const float* b, TY* y,
                                         float* mean_out, float* rstd_out, int C, float eps) {
  __shared__ float shared[32];
  const int64_t r = blockIdx.x;
  const TX* xr = x + r * C;
  TY* yr = y + r * C;
  float sum = 0;
  for (int j = threadIdx.x; j < C; j += blockDim.x) sum += to_f(xr[j]);
  const float mean = block_sum(sum, shared) / float(C);
  float sq = 0;
  for (int j = threadIdx.x; j < C; j += blockDim.x) {
    const float c = to_f(xr[j]) - mean;
    sq += c * c;
  }
  const float var = block_sum(sq, shared) / float(C);
  const float rstd = em::layernorm_rstd(var, eps);
  for (int j = threadIdx.x; j < C; j += blockDim.x)
    yr[j] = from_f<TY>(em::layernorm_normalise(to_f(xr[j]), mean, rstd, w[j], b[j]));
  if (threadIdx.x == 0) {
    mean_out[r] = mean;
    rstd_out[r] = rstd;
  }
}

template <typename TX, typename TDY>
__global__ void layernorm_dx_kernel(const TX* x, const TDY* dy, const float* w, const float* mean,
                                    const float* rstd, TX* dx, int C) {
  __shared__ float shared[32];
  const int64_t r = blockIdx.x;
  const TX* xr = x + r * C;
  const TDY* dyr = dy + r * C;
  TX* dxr = dx + r * C;
  const float mu = mean[r], rs = rstd[r];
  float s1 = 0, s2 = 0;
  for (int j = threadIdx.x; j < C; j += blockDim.x) {
    const float dyw = to_f(dyr[j]) * w[j];
    s1 += dyw;
    s2 += dyw * (to_f(xr[j]) - mu) * rs;
  }
  const float mean_dyw = block_sum(s1, shared) / float(C);
  const float mean_dyw_xhat = block_sum(s2, shared) / float(C);
  for (int j = threadIdx.x; j < C; j += blockDim.x) {
    const float xhat = (to_f(xr[j]) - mu) * rs;
    const float g = em::layernorm_dx(to_f(dyr[j]) * w[j], xhat, mean_dyw, mean_dyw_xhat, rs);
    dxr[j] = from_f<TX>(to_f(dxr[j]) + g);
  }
}

// (dy xhat, dy) at (r, j): the column sums are dw and db.
template <typename TX, typename TDY>
struct LayerNormParamGrad {
  const TX* x;
  const TDY* dy;
  const float* mean;
  const float* rstd;
  int C;
  __device__ float2 operator()(int64_t r, int j) const {
    const float g = to_f(dy[r * C + j]);
    return make_float2(g * (to_f(x[r * C + j]) - mean[r]) * rstd[r], g);
  }
};

template <typename T>
struct ColumnValue {
  const T* x;
  int C;
  __device__ float2 operator()(int64_t r, int j) const {
    return make_float2(to_f(x[r * C + j]), 0.f);
  }
};

// ---- GELU ---------------------------------------------------------------------------------------

template <typename T>
__global__ void gelu_forward_kernel(const T* x, T* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_f<T>(em::gelu(to_f(x[i])));
}

template <typename T>
__global__ void gelu_backward_kernel(const T* x, const T* dy, T* dx, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = from_f<T>(to_f(dy[i]) * em::gelu_grad(to_f(x[i])));
}

// ---- bias + residual
// ------------------------------------------------------------------------------

template <typename T>
__global__ void bias_residual_kernel(const T* x, const float* bias, const T* residual, T* y,
                                     int64_t n, int C) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float v = to_f(x[i]);
    if (bias) v += bias[i % C];
    if (residual) v = to_f(residual[i]) + v;
    y[i] = from_f<T>(v);
  }
}

// ---- cross-entropy: one block per row
// ---------------------------------------------------------------

template <typename T>
__global__ void cross_entropy_forward_kernel(T* logits, const int32_t* targets, int V,
                                             float* row_loss) {
  __shared__ float shared[32];
  const int64_t r = blockIdx.x;
  T* z = logits + r * V;
  float mx = -INFINITY;
  for (int v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, to_f(z[v]));
  mx = block_max(mx, shared);
  float sum = 0;
  for (int v = threadIdx.x; v < V; v += blockDim.x) sum += expf(to_f(z[v]) - mx);
  sum = block_sum(sum, shared);
  const float target_shifted = to_f(z[targets[r]]) - mx;
  __syncthreads();  // every thread has read z[target] before it is overwritten
  const float inv = 1.f / sum;
  for (int v = threadIdx.x; v < V; v += blockDim.x) z[v] = from_f<T>(expf(to_f(z[v]) - mx) * inv);
  if (threadIdx.x == 0) row_loss[r] = logf(sum) - target_shifted;
}

struct RowLoss {
  const float* loss;
  __device__ double2 operator()(int64_t i) const { return make_double2(loss[i], 0.0); }
};

template <typename T>
__global__ void cross_entropy_backward_kernel(const T* probs, const int32_t* targets, float scale,
                                              T* dlogits, int64_t n, int V) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / V;
    const int v = int(i % V);
    float g = scale * to_f(probs[i]);
    if (v == targets[r]) g -= scale;
    dlogits[i] = from_f<T>(g);
  }
}

// ---- AdamW
// ---------------------------------------------------------------------------------------------

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n,
                             em::AdamWScalars<float> s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float pi = p[i], mi = m[i], vi = v[i];
    em::adamw_update(pi, mi, vi, g[i], s);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

}  // namespace

template <typename TO, typename TI>
void convert(const Exec& ex, const TI* in, TO* out, int64_t n) {
  if (n == 0) return;
  convert_kernel<<<blocks_for(n, kThreads), kThreads, 0, ex.stream>>>(in, out, n);
  PRIMAL_CUDA_CHECK_LAUNCH("convert_kernel");
}

template <typename TX, typename TY>
void layernorm_forward(const Exec& ex, const TX* x, const float* w, const float* b, TY* y,
                       float* mean, float* rstd, int64_t rows, int C, float eps) {
  if (rows == 0) return;
  check(rows <= INT32_MAX, "layernorm_forward: more than 2^31 rows");
  layernorm_forward_kernel<<<unsigned(rows), kThreads, 0, ex.stream>>>(x, w, b, y, mean, rstd, C,
                                                                       eps);
  PRIMAL_CUDA_CHECK_LAUNCH("layernorm_forward_kernel");
}

template <typename TX, typename TDY>
void layernorm_backward(const Exec& ex, const TX* x, const TDY* dy, const float* w,
                        const float* mean, const float* rstd, TX* dx, float* dw, float* db,
                        int64_t rows, int C) {
  if (rows == 0) return;
  check(rows <= INT32_MAX, "layernorm_backward: more than 2^31 rows");
  layernorm_dx_kernel<<<unsigned(rows), kThreads, 0, ex.stream>>>(x, dy, w, mean, rstd, dx, C);
  PRIMAL_CUDA_CHECK_LAUNCH("layernorm_dx_kernel");
  detail::column_reduce(ex, LayerNormParamGrad<TX, TDY>{x, dy, mean, rstd, C}, rows, C, dw, db);
}

template <typename T>
void gelu_forward(const Exec& ex, const T* x, T* y, int64_t n) {
  if (n == 0) return;
  gelu_forward_kernel<<<blocks_for(n, kThreads), kThreads, 0, ex.stream>>>(x, y, n);
  PRIMAL_CUDA_CHECK_LAUNCH("gelu_forward_kernel");
}

template <typename T>
void gelu_backward(const Exec& ex, const T* x, const T* dy, T* dx, int64_t n) {
  if (n == 0) return;
  gelu_backward_kernel<<<blocks_for(n, kThreads), kThreads, 0, ex.stream>>>(x, dy, dx, n);
  PRIMAL_CUDA_CHECK_LAUNCH("gelu_backward_kernel");
}

template <typename T>
void bias_residual_forward(const Exec& ex, const T* x, const float* bias, const T* residual, T* y,
                           int64_t rows, int C) {
  const int64_t n = rows * C;
  if (n == 0) return;
  bias_residual_kernel<<<blocks_for(n, kThreads), kThreads, 0, ex.stream>>>(x, bias, residual, y, n,
                                                                            C);
  PRIMAL_CUDA_CHECK_LAUNCH("bias_residual_kernel");
}

template <typename T>
void bias_backward(const Exec& ex, const T* dy, float* db, int64_t rows, int C) {
  detail::column_reduce(ex, ColumnValue<T>{dy, C}, rows, C, db, nullptr);
}

template <typename T>
void cross_entropy_forward(const Exec& ex, T* logits, const int32_t* targets, int64_t rows, int V,
                           double* loss_sum) {
  if (rows == 0) return;
  check(ex.allocator != nullptr, "cross_entropy_forward: needs Exec::allocator");
  check(rows <= INT32_MAX, "cross_entropy_forward: more than 2^31 rows");
  DeviceBuffer<float> row_loss(*ex.allocator, rows, ex.stream);
  cross_entropy_forward_kernel<<<unsigned(rows), kThreads, 0, ex.stream>>>(logits, targets, V,
                                                                           row_loss.data());
  PRIMAL_CUDA_CHECK_LAUNCH("cross_entropy_forward_kernel");
  detail::scalar_reduce(ex, RowLoss{row_loss.data()}, rows, loss_sum, 1);
}

template <typename T>
void cross_entropy_backward(const Exec& ex, const T* probs, const int32_t* targets, float scale,
                            T* dlogits, int64_t rows, int V) {
  const int64_t n = rows * V;
  if (n == 0) return;
  cross_entropy_backward_kernel<<<blocks_for(n, kThreads), kThreads, 0, ex.stream>>>(
      probs, targets, scale, dlogits, n, V);
  PRIMAL_CUDA_CHECK_LAUNCH("cross_entropy_backward_kernel");
}

void adamw_step(const Exec& ex, float* p, const float* g, float* m, float* v, int64_t n,
                const em::AdamWScalars<float>& s) {
  if (n == 0) return;
  adamw_kernel<<<blocks_for(n, kThreads), kThreads, 0, ex.stream>>>(p, g, m, v, n, s);
  PRIMAL_CUDA_CHECK_LAUNCH("adamw_kernel");
}

template void convert<bf16, float>(const Exec&, const float*, bf16*, int64_t);
template void convert<float, bf16>(const Exec&, const bf16*, float*, int64_t);

#define PRIMAL_INSTANTIATE_LAYERNORM(TX, TY)                                                       \
  template void layernorm_forward<TX, TY>(const Exec&, const TX*, const float*, const float*, TY*, \
                                          float*, float*, int64_t, int, float);                    \
  template void layernorm_backward<TX, TY>(const Exec&, const TX*, const TY*, const float*,        \
                                           const float*, const float*, TX*, float*, float*,        \
                                           int64_t, int);
PRIMAL_INSTANTIATE_LAYERNORM(float, float)
PRIMAL_INSTANTIATE_LAYERNORM(bf16, bf16)
PRIMAL_INSTANTIATE_LAYERNORM(float, bf16)  // the fp32 residual stream into bf16 activations
#undef PRIMAL_INSTANTIATE_LAYERNORM

#define PRIMAL_INSTANTIATE(T)                                                                     \
  template void gelu_forward<T>(const Exec&, const T*, T*, int64_t);                              \
  template void gelu_backward<T>(const Exec&, const T*, const T*, T*, int64_t);                   \
  template void bias_residual_forward<T>(const Exec&, const T*, const float*, const T*, T*,       \
                                         int64_t, int);                                           \
  template void bias_backward<T>(const Exec&, const T*, float*, int64_t, int);                    \
  template void cross_entropy_forward<T>(const Exec&, T*, const int32_t*, int64_t, int, double*); \
  template void cross_entropy_backward<T>(const Exec&, const T*, const int32_t*, float, T*,       \
                                          int64_t, int);
PRIMAL_INSTANTIATE(float)
PRIMAL_INSTANTIATE(bf16)
#undef PRIMAL_INSTANTIATE

}  // namespace primal::cuda
