// The model's element-wise, row-wise and reduction kernels on the device; the GEMMs are in
// core/cuda/blas.h and softmax attention, which composes both, in core/cuda/attention.h.
// Each function's comment gives the math; the per-element formulas are those of
// core/element_math.h, shared with the CPU layers.
//
// Precision. T is float (fp32 mode, compared with the CPU to 1e-5) or bf16 (mixed precision:
// bf16 activations, fp32 arithmetic inside every kernel). Parameters and their gradients are
// always fp32 (master weights), and so are the saved statistics (mean, rstd, norms). Scalar
// results (KSVD sums, the cross-entropy sum) are accumulated in double.
//
// Determinism. Every reduction has a fixed shape that depends only on the problem size, not
// on the device or on timing: the results are bitwise repeatable run to run.
//
// All pointers are device pointers; everything is enqueued on ex.stream and returns at once.
// `lengths` (int32 [B], real positions per sample) may be null: every position is real.
#pragma once

#include <cstdint>

#include "core/cuda/allocator.h"
#include "core/cuda/device.h"
#include "core/element_math.h"

namespace primal::cuda {

// Where kernels run and where the few that need scratch memory get it.
struct Exec {
  cudaStream_t stream = nullptr;
  CachingAllocator* allocator = nullptr;
};

// out = in converted (float <-> bf16, round to nearest even).
template <typename TO, typename TI>
void convert(const Exec& ex, const TI* in, TO* out, int64_t n);

// ---- LayerNorm (rows of C) ------------------------------------------------------------------
// y = (x - mean) rstd w + b;  mean, rstd [rows] saved for the backward. TX: the input's type
// (the model's fp32 residual stream), TY: the output's (T or float).
template <typename TX, typename TY = TX>
void layernorm_forward(const Exec& ex, const TX* x, const float* w, const float* b, TY* y,
                       float* mean, float* rstd, int64_t rows, int C, float eps);
// dx += rstd (dy w - mean(dy w) - xhat mean(dy w xhat));  dw += sum_r dy xhat;  db += sum_r dy.
// dx has x's type.
template <typename TX, typename TDY = TX>
void layernorm_backward(const Exec& ex, const TX* x, const TDY* dy, const float* w,
                        const float* mean, const float* rstd, TX* dx, float* dw, float* db,
                        int64_t rows, int C);

// ---- GELU (exact erf form) -------------------------------------------------------------------
template <typename T>
void gelu_forward(const Exec& ex, const T* x, T* y, int64_t n);
// dx = dy gelu'(x); dx may be dy.
template <typename T>
void gelu_backward(const Exec& ex, const T* x, const T* dy, T* dx, int64_t n);

// ---- bias and residual -----------------------------------------------------------------------
// y[r, j] = x[r, j] + bias[j] (+ residual[r, j] where residual is not null). y may be x or
// residual. bias may be null.
template <typename T>
void bias_residual_forward(const Exec& ex, const T* x, const float* bias, const T* residual, T* y,
                           int64_t rows, int C);
// db[j] += sum_r dy[r, j]  (the residual's gradient is dy itself).
template <typename T>
void bias_backward(const Exec& ex, const T* dy, float* db, int64_t rows, int C);

// ---- phi(v) = v / max(|v|, 1e-12), per head --------------------------------------------------
// rows x H vectors of d: vector (r, h) at v + r ld_v + h d. norm [rows, H] = |v| is saved.
// u may be v.
template <typename T>
void phi_forward(const Exec& ex, const T* v, int64_t ld_v, T* u, int64_t ld_u, float* norm,
                 int64_t rows, int H, int d);
// dv = (du - u (u . du)) / |v|   (du / eps where |v| < eps). dv may be du.
template <typename T>
void phi_backward(const Exec& ex, const T* u, int64_t ld_u, const float* norm, const T* du,
                  int64_t ld_du, T* dv, int64_t ld_dv, int64_t rows, int H, int d);

// ---- prefix means (causal PRIMAL) -------------------------------------------------------------
// out[b, n, c] = (1 / (n + 1)) sum_{j <= n} in[b, j, c], c < C; row (b, n) of in at
// in + (b N + n) ld_in, of out likewise. Prefix sums in fp32, divided once.
template <typename T>
void prefix_mean_forward(const Exec& ex, const T* in, int64_t ld_in, T* out, int64_t ld_out, int B,
                         int N, int C);
// din[b, j, c] = sum_{n >= j} dout[b, n, c] / (n + 1)   (overwrites din).
template <typename T>
void prefix_mean_backward(const Exec& ex, const T* dout, int64_t ld_dout, T* din, int64_t ld_din,
                          int B, int N, int C);

// ---- masked softmax (softmax attention) --------------------------------------------------------
// Rows of scores [B, H, N, N] (fp32): row n of sample b attends to keys j < keys(b, n), with
// keys = 0 for a padded row (n >= len_b), min(n + 1, len_b) when causal, len_b otherwise;
// P = softmax over those keys, 0 elsewhere. P may be scores (T = float).
template <typename T>
void masked_softmax_forward(const Exec& ex, const float* scores, T* P, const int32_t* lengths,
                            bool causal, int B, int H, int N);
// dS = P (dP - sum_j dP_j P_j), row by row. dS may be dP (T = float).
template <typename T>
void softmax_backward(const Exec& ex, const T* P, const float* dP, T* dS, int64_t rows, int N);

// ---- KSVD terms (SPEC §3.4) ---------------------------------------------------------------------
// er [B N, H, 2s]: per token and head, e (s values) then r (s values); lambda [H, s].
// sums[0] += sum over real tokens, h, i of 0.5 (lambda[h,i] e)^2;  sums[1] likewise with r.
template <typename T>
void ksvd_partial_sums(const Exec& ex, const T* er, const float* lambda, const int32_t* lengths,
                       int B, int N, int H, int s, double* sums);
// t[0] += sum_i we[i] wr[i]  (the trace term of every head at once).
void ksvd_trace(const Exec& ex, const float* we, const float* wr, int64_t n, double* t);
// With gk = dLoss/d(e-sum) (= dLoss/d(r-sum)), over real tokens:
//   der += gk lambda^2 e (and r);   dlambda += gk sum_tokens (e^2 + r^2) lambda.
// der may be fp32 (TD = float) while er is T: the KSVD term is then added without a rounding to T.
template <typename T, typename TD = T>
void ksvd_backward(const Exec& ex, const T* er, const float* lambda, const int32_t* lengths, int B,
                   int N, int H, int s, float gk, TD* der, float* dlambda);
// dwe += gt wr;  dwr += gt we.
void ksvd_trace_backward(const Exec& ex, const float* we, const float* wr, float gt, float* dwe,
                         float* dwr, int64_t n);

// ---- cross-entropy ------------------------------------------------------------------------------
// Rows of V logits: loss_r = logsumexp(z_r) - z_r[target_r]. Overwrites logits with the
// probabilities and adds sum_r loss_r to loss_sum[0] (double, a fixed order).
template <typename T>
void cross_entropy_forward(const Exec& ex, T* logits, const int32_t* targets, int64_t rows, int V,
                           double* loss_sum);
// dlogits = scale (p - onehot(target)). dlogits may be probs.
template <typename T>
void cross_entropy_backward(const Exec& ex, const T* probs, const int32_t* targets, float scale,
                            T* dlogits, int64_t rows, int V);

// ---- AdamW (fp32 master weights) ---------------------------------------------------------------

// em::adamw_update on every element: bit for bit trainer/adamw.cc's float arithmetic. One call
// per run of parameters sharing a decay flag (s.decay = 1 where they do not decay).
void adamw_step(const Exec& ex, float* p, const float* g, float* m, float* v, int64_t n,
                const em::AdamWScalars<float>& s);

}  // namespace primal::cuda
