// Softmax attention (SPEC §3.1) without the N x N matrix: FlashAttention-2 (Dao, 2023) tiles.
// Per (sample b, head h):  S = q k^T / sqrt(d) + mask,  P = softmax(S),  y = P v,  with the
// masks of model/softmax_attention.cc (causal, padding; a padded query row has P = 0).
//
// Forward: one block per (query tile, b, h) runs over the key tiles with the online softmax
// and writes y and the rows' logsumexp L (fp32 [B, H, N]); nothing N x N is stored anywhere.
// Backward, with D = rowsum(dy * y) (a first kernel), P = exp(S - L) recomputed tile by tile:
//   dv = P^T dy,  dP = dy v^T,  dS = P (dP - D),  dk = dS^T q / sqrt(d),  dq = dS k / sqrt(d)
// one block per (key tile, b, h) accumulates dk, dv over its query tiles, another kernel one
// block per (query tile, b, h) dq over its key tiles: every output element has one writer and
// a fixed summation order, so the backward is bitwise repeatable without atomics.
// Which tiles are visited and masked, and the online softmax, are core/cuda/flash_plan.h's.
//
// T is float (plain fp32 FMA, compared with the N x N path to 1e-5) or bf16 (tensor cores,
// fp32 accumulation). Head dimension d <= 128: kernels for 16, 32, 64 and 128, d rounded up to
// one of them and zero-padded in shared memory; a larger d is an Error naming it. The N x N path
// (core/cuda/attention.h, softmax_attention_*_reference) is the test oracle.
#pragma once

#include <cstdint>

#include "core/cuda/kernels.h"

namespace primal::cuda {

// qkv [B, N, 3C] (q | k | v, head h at channels [h d, (h + 1) d) of each block), C = H d;
// lengths (device int32 [B]) may be null. Writes y [B, N, C] and logsumexp [B, H, N].
template <typename T>
void flash_attention_forward(const Exec& ex, const T* qkv, const int32_t* lengths, bool causal,
                             int B, int N, int H, int d, T* y, float* logsumexp);

// dqkv [B, N, 3C] (overwritten, the layout of qkv) from dy [B, N, C] and the forward's y and
// logsumexp. Scratch: D, B H N floats.
template <typename T>
void flash_attention_backward(const Exec& ex, const T* qkv, const int32_t* lengths, bool causal,
                              const T* y, const float* logsumexp, const T* dy, int B, int N, int H,
                              int d, T* dqkv);

// The products of the attention model over the tiles the kernels visit (no padding): forward
// S = q k^T and P v, backward dP, dv, dq, dk, each 2 tile^2 d per visited tile pair and head;
// the recomputed S and dP of the backward are not counted. For MFU, as cuBLAS products are.
double flash_attention_flops(bool is_bf16, int B, int N, int H, int d, bool causal);

}  // namespace primal::cuda
