// The encoder (non-causal) form of the Primal-Attention core on the device (SPEC §3.2),
// composed from GEMMs and kernels as model/primal_attention.cc composes it. Same layouts and
// precision as core/cuda/attention.h (C = H d; rows are tokens (b, n); head h owns channels
// [h d, (h+1) d)); blas must be bound to ex.stream.
#pragma once

#include <cstdint>

#include "core/cuda/blas.h"
#include "core/cuda/kernels.h"

namespace primal::cuda {

// Per sample b and head h, with Xs[b,h] = xs[b, :, h d .. (h+1) d) ([L, d]: the sampled rows of
// the layer input, core/cuda/kernels_model.h's gather_rows):
//   u_q = phi(q),  we[b,h] = Xs[b,h]^T We[h]  ([d, s]),  e = u_q we[b,h];  likewise k, Wr, r.
// qk [B N, 2C] (q | k); xs [B, L, C]; we, wr [H, L, s]; er [B N, H, 2s] (e then r per head).
// Saved for the backward: u [2, B N, C], norm [2, B N H], w_eff [2, B, H, d, s].
template <typename T>
void primal_encoder_forward(Blas& blas, const Exec& ex, const T* qk, const T* xs, const T* we,
                            const T* wr, int B, int N, int L, int H, int d, int s, T* u,
                            float* norm, T* w_eff, T* er);
// From der [B N, H, 2s], per side (q with We, then k with Wr):
//   du = de we[b,h]^T;  dwe[b,h] = u^T de;  dXs[b,h] += We[h] dwe[b,h]^T;
//   dWe[h] += sum_b Xs[b,h] dwe[b,h] (b in order);  dq = phi backward of du.
// Overwrites dqk [B N, 2C]; adds into dxs [B, L, C] (the caller scatters it onto the sampled
// rows) and into dwe, dwr (fp32 [H, L, s]). Scratch: du (B N C) and dwe[b,h] (B H d s) of T.
template <typename T>
void primal_encoder_backward(Blas& blas, const Exec& ex, const T* u, const float* norm,
                             const T* w_eff, const T* xs, const T* we, const T* wr, const T* der,
                             int B, int N, int L, int H, int d, int s, T* dqk, T* dxs, float* dwe,
                             float* dwr);

}  // namespace primal::cuda
