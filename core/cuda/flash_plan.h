// The host-and-device half of flash softmax attention (core/cuda/flash_attention.h): which
// tiles of the N x N score matrix are computed, which of their elements are masked, and the
// online-softmax bookkeeping of one query row. The kernels call these functions, and so does
// the CPU emulation of the whole tiled algorithm in tests/gpu/flash_plan_test.cc, which
// compares it with the CPU layer (model/softmax_attention.cc) in double: the algorithm is
// proved there, the kernels add only indexing. No CUDA header: g++ compiles this too.
//
// Masking (SPEC §3.1, as model/softmax_attention.cc and masked_softmax_forward do it): in
// sample b with len real positions, query n attends to key j iff n < len, j < len and, when
// causal, j <= n. A query row that attends to no key (a padded row, n >= len) has P = 0: y = 0
// and no gradient flows through it.
#pragma once

#include <cmath>
#include <type_traits>

#include "core/element_math.h"

namespace primal::flash {

PRIMAL_HD inline bool attends(int n, int j, int len, bool causal) {
  return n < len && j < len && (!causal || j <= n);
}

// Square tiles of `tile` positions: query tile qt holds rows [qt tile, (qt + 1) tile), key tile
// kt the keys [kt tile, (kt + 1) tile). Query and key tiles share their boundaries, so the causal
// diagonal crosses only the tiles qt == kt: a key tile kt > qt lies entirely above it and is
// skipped, a key tile kt < qt entirely below it and needs no causal mask.
struct TilePlan {
  int N = 0, tile = 0;
  bool causal = false;

  PRIMAL_HD int tiles() const { return (N + tile - 1) / tile; }
  // The tiles that hold a real position of a sample of length len: the others are skipped.
  PRIMAL_HD int real_tiles(int len) const { return (len + tile - 1) / tile; }

  // Key tiles [0, key_end) that query tile qt visits (forward, dQ). None for a query tile of
  // padding only: its rows stay y = 0, dq = 0.
  PRIMAL_HD int key_end(int qt, int len) const {
    if (qt >= real_tiles(len)) return 0;
    return causal ? qt + 1 : real_tiles(len);
  }
  // Query tiles [query_begin, query_end) that key tile kt visits (dK, dV): exactly the qt whose
  // [0, key_end(qt)) contains kt. None for a key tile of padding only: dk = dv = 0.
  PRIMAL_HD int query_begin(int kt) const { return causal ? kt : 0; }
  PRIMAL_HD int query_end(int kt, int len) const {
    return kt < real_tiles(len) ? real_tiles(len) : 0;
  }

  // Whether some element of a visited tile pair is masked: the diagonal tile when causal, a
  // tile reaching past the real positions (padding, or the end of the sequence when N is not a
  // multiple of the tile). Every other visited tile is computed without a mask test.
  PRIMAL_HD bool needs_mask(int qt, int kt, int len) const {
    return (causal && qt == kt) || (qt + 1) * tile > len || (kt + 1) * tile > len;
  }
};

// ---- online softmax of one query row (FlashAttention-2, Algorithm 1) ------------------------
// Over the key tiles seen so far: m = the largest valid score, l = sum_j exp(s_j - m), and the
// accumulator o = sum_j exp(s_j - m) v_j. A new tile with largest score m_t moves the max to
// m' = max(m, m_t); l and o are rescaled by alpha = exp(m - m'), the tile's weights are
// exp(s_j - m'). At the end y = o / l and logsumexp = m + log l, from which the backward
// recomputes P_j = exp(s_j - logsumexp). Masked scores are -inf (weight 0).
template <typename R>
struct SoftmaxRow {
  R m = -R(INFINITY);
  R l = 0;
};

// Moves the max to include a tile whose largest score is tile_max (-inf: no valid key in it)
// and returns alpha, the factor for l (applied here) and for the accumulator (the caller's).
// While the row has seen no valid key m stays -inf, and alpha = 1 (there is nothing to scale).
template <typename R>
PRIMAL_HD inline R softmax_rescale(SoftmaxRow<R>& row, R tile_max) {
  const R m = row.m > tile_max ? row.m : tile_max;
  const R alpha = m == -R(INFINITY) ? R(1) : em::exp_t(row.m - m);
  row.m = m;
  row.l *= alpha;
  return alpha;
}
// exp(s - m), after softmax_rescale: 0 for a masked score, also while m is still -inf.
template <typename R>
PRIMAL_HD inline R softmax_weight(const SoftmaxRow<R>& row, R s) {
  return row.m == -R(INFINITY) ? R(0) : em::exp_t(s - row.m);
}
// l += the sum of the tile's weights.
template <typename R>
PRIMAL_HD inline void softmax_add(SoftmaxRow<R>& row, R tile_sum) {
  row.l += tile_sum;
}
// y = o * softmax_normaliser: 1 / l, and 0 for a row that attends to no key.
template <typename R>
PRIMAL_HD inline R softmax_normaliser(const SoftmaxRow<R>& row) {
  return row.l > 0 ? R(1) / row.l : R(0);
}
// log sum_j exp(s_j) = m + log l; +inf for a row that attends to no key, so that the
// backward's exp(s - logsumexp) is 0 on it.
template <typename R>
PRIMAL_HD inline R softmax_logsumexp(const SoftmaxRow<R>& row) {
  return row.l > 0 ? row.m + em::log_t(row.l) : R(INFINITY);
}
// The backward's P_j = exp(s_j - logsumexp) (0 for a masked score, s = -inf).
template <typename R>
PRIMAL_HD inline R softmax_prob(R s, R logsumexp) {
  return em::exp_t(s - logsumexp);
}

}  // namespace primal::flash
