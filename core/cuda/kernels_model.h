// The kernels of the whole model around the layers of kernels.h: the token embedding and its
// deterministic backward, dropout keyed as SPEC §3.5, and the global-norm gradient clip.
// Same conventions as core/cuda/kernels.h: device pointers, enqueued on ex.stream, T = float
// or bf16 with fp32 arithmetic inside, fp32 parameters and gradients, fixed-shape reductions
// (bitwise repeatable), no atomics.
#pragma once

#include <cstdint>
#include <vector>

#include "core/cuda/kernels.h"
#include "core/random.h"

namespace primal::cuda {

// ---- embedding ---------------------------------------------------------------------------------
// x [B, S, C], S = first + N (first = 1 with a CLS slot, else 0):
//   x[b, s] = cls + pos[0]                                  (s < first)
//   x[b, s] = tok[tokens[b N + s - first]] + pos[s]         (token inputs: tokens not null)
//   x[b, s] = in[b N + s - first] + pos[s]                  (patch inputs: the patch Linear's
//   output)
// fp32 parameters; the sum rounded to TX (the residual stream's type: fp32 in the model).
template <typename T, typename TX = T>
void embedding_forward(const Exec& ex, const int32_t* tokens, const float* tok, const T* in,
                       const float* cls, const float* pos, TX* x, int B, int N, int first, int C);
// dpos[s, :] += sum_b dx[b, s, :], b in order (one thread per (s, c)); dx [B, S, C].
template <typename T>
void position_backward(const Exec& ex, const T* dx, float* dpos, int B, int S, int C);
// dcls += sum_b dx[b, 0, :], b in order.
template <typename T>
void cls_backward(const Exec& ex, const T* dx, float* dcls, int B, int S, int C);
// dtok[v, :] += dx[b, first + n, :] for the token rows r = b N + n holding token v, in
// increasing r: the rows of v are rows[offsets[v] .. offsets[v+1]) (token_rows below). One
// thread owns each (v, c), so the sum needs no atomics and runs in the CPU layer's order
// (model/embedding.cc).
template <typename T>
void token_backward(const Exec& ex, const T* dx, const int32_t* offsets, const int32_t* rows,
                    float* dtok, int V, int N, int first, int C);
// Host: the rows of each token, a counting sort of tokens[0..n) (values in [0, V)):
// offsets [V + 1], rows [n] increasing within each token. Throws on a token outside [0, V).
void token_rows(const int32_t* tokens, int64_t n, int V, std::vector<int32_t>& offsets,
                std::vector<int32_t>& rows);

// ---- dropout (SPEC §3.5, model/dropout.cc) -----------------------------------------------------

// Element i keeps its value, times scale, where philox_uniform_f32(stream, first + i) >= p, and
// is 0 elsewhere: the CPU's mask bit for bit (the caller keys `stream` as model/dropout.cc does,
// and passes p = float(p), scale = float(1 / (1 - p))). p <= 0 keeps everything as it is.
// out = dropout(in), rounded to TO; out may be in (TO = TI).
template <typename TI, typename TO = TI>
void dropout(const Exec& ex, const TI* in, TO* out, int64_t n, PhiloxStream stream, uint64_t first,
             float p, float scale);
// y = residual + dropout(a): the residual connection of a dropped branch (the dropped value
// rounded to T first, as the CPU does, the sum to TR: the fp32 residual stream). y may be
// residual.
template <typename T, typename TR = T>
void dropout_residual(const Exec& ex, const T* a, const TR* residual, TR* y, int64_t n,
                      PhiloxStream stream, uint64_t first, float p, float scale);

// ---- padding, pooling, ReLU (the classifier) ----------------------------------------------------
// x[b, n, :] = 0 for n >= lengths[b] (x [B, N, C]); nothing when lengths is null.
template <typename T>
void zero_padded_rows(const Exec& ex, T* x, const int32_t* lengths, int B, int N, int C);
// pooled[b] = x[b, 0] (cls) or the mean of x[b, n] over n < len_b, summed in n order then
// divided (model/classifier_head.cc).
template <typename T>
void pool_forward(const Exec& ex, const T* x, const int32_t* lengths, T* pooled, int B, int N,
                  int C, bool cls);
// dx[b, n] = dpooled[b] (cls: n = 0) or dpooled[b] * (1 / len_b) (mean: n < len_b), 0 on
// every other row (overwrites dx).
template <typename T>
void pool_backward(const Exec& ex, const T* dpooled, const int32_t* lengths, T* dx, int B, int N,
                   int C, bool cls);
// y = max(x, 0);  dx = dy where x > 0, else 0 (dx may be dy).
template <typename T>
void relu_forward(const Exec& ex, const T* x, T* y, int64_t n);
template <typename T>
void relu_backward(const Exec& ex, const T* x, const T* dy, T* dx, int64_t n);

// ---- sampled rows (the encoder form of PRIMAL) -------------------------------------------------

// xs[b, l, c] = x[b, idx[b, l], c0 + c]   (x [B, N, Cx], idx [B, L], xs [B, L, C], c0 + C <= Cx):
// the channels [c0, c0 + C) of this rank's heads, out of the full-width layer input.
template <typename T>
void gather_rows(const Exec& ex, const T* x, const int32_t* idx, T* xs, int B, int N, int L, int C,
                 int Cx, int c0);
// dx[b, idx[b, l], c0 + c] += dxs[b, l, c], l in order (one thread per (b, c): repeated indices
// add up in the CPU's order, without atomics).
template <typename T>
void scatter_add_rows(const Exec& ex, const T* dxs, const int32_t* idx, T* dx, int B, int N, int L,
                      int C, int Cx, int c0);
// Host: idx[b, l] = floor(l (len_b - 1) / (L - 1)) (0 when L = 1): L positions spread over the
// real ones (model/primal_attention.cc). lengths null: every sample has N.
void sampled_positions(const int32_t* lengths, int B, int N, int L, std::vector<int32_t>& idx);

// ---- global-norm clipping (trainer/grad_clip.h) -----------------------------------------------

// out[0] += sum_i x[i]^2, in double, a fixed shape (a function of n only).
void sum_of_squares(const Exec& ex, const float* x, int64_t n, double* out);
// x *= s.
void scale_inplace(const Exec& ex, float* x, int64_t n, float s);

}  // namespace primal::cuda
