// The attention cores on the device, GEMMs (core/cuda/blas.h) and kernels (kernels.h) composed
// as the CPU layers compose them (model/softmax_attention.cc, model/primal_attention.cc).
// The projections around them (qkv / qk, concat, proj) are plain Linear layers: Blas::gemm_lt.
//
// Layouts (C = H d, this rank's heads): rows are tokens (b, n), row-major; head h occupies
// channels [h d, (h+1) d) of each C-wide block. T is float or bf16; GEMMs accumulate in fp32.
// blas must be bound to ex.stream.
#pragma once

#include <cstdint>

#include "core/cuda/blas.h"
#include "core/cuda/flash_attention.h"
#include "core/cuda/kernels.h"

namespace primal::cuda {

// Softmax attention (SPEC §3.1) with the N x N matrices, per sample b and head h:
//   S = q k^T / sqrt(d) + mask,  P = softmax(S),  y = P v
// The oracle of the flash kernels (core/cuda/flash_attention.h, which the device model runs):
// cuBLAS products and masked_softmax_forward, O(N^2) memory, for tests and benchmarks only.
// qkv [B, N, 3C] (q | k | v), y [B, N, C]; probs [B, H, N, N] is saved for the backward.
// Scratch (bf16 only): the fp32 scores of one sample, H N^2 floats.
template <typename T>
void softmax_attention_forward_reference(Blas& blas, const Exec& ex, const T* qkv,
                                         const int32_t* lengths, bool causal, int B, int N, int H,
                                         int d, T* probs, T* y);
// dqkv [B, N, 3C] (overwritten) from dy [B, N, C]:
//   dP = dy v^T;  dv = P^T dy;  dS = P (dP - rowsum(dP P));  dq = dS k / sqrt(d);  dk = dS^T q /
//   sqrt(d)
// Scratch: dP of one sample (H N^2 floats; and its bf16 dS in bf16 mode).
template <typename T>
void softmax_attention_backward_reference(Blas& blas, const Exec& ex, const T* qkv, const T* probs,
                                          const T* dy, int B, int N, int H, int d, T* dqkv);

// Primal-Attention core, causal form (SPEC §3.3):
//   qin = prefix mean of q,  u_q = phi(qin),  e = u_q We[h];  likewise k, u_k, r with Wr
// qk [B, N, 2C] (q | k); we, wr [H, d, s]; er [B N, H, 2s] (e then r for each head), the input
// of the concat layer. Saved for the backward: u [2, B N, C] (u_q then u_k), norm [2, B N H].
template <typename T>
void primal_causal_forward(Blas& blas, const Exec& ex, const T* qk, const T* we, const T* wr, int B,
                           int N, int H, int d, int s, T* u, float* norm, T* er);
// From der [B N, H, 2s] (the concat layer's gradient, plus the KSVD term of ksvd_backward):
//   du = de We^T;  dWe[h] += sum_{b,n} u_q^T de;  dqin = phi backward;  dq = prefix-mean backward
// and likewise for k. Overwrites dqk [B, N, 2C]; adds into dwe, dwr (fp32 [H, d, s]).
// Scratch: du, B N C values of T.
template <typename T>
void primal_causal_backward(Blas& blas, const Exec& ex, const T* u, const float* norm, const T* we,
                            const T* wr, const T* der, int B, int N, int H, int d, int s, T* dqk,
                            float* dwe, float* dwr);

}  // namespace primal::cuda
