// core/cuda/flash_plan.h, the host-and-device half of the flash softmax attention kernels
// (label unit: no GPU involved). The tile plan visits exactly the tile pairs that hold an
// attended (query, key) pair and masks every tile that needs it; the online softmax equals
// the two-pass one; and the whole tiled forward and backward, written here in plain C++ with
// those functions and the kernels' loop structure (zero-filled tile edges included), equals
// the CPU layer model/softmax_attention.cc in double.
#include "core/cuda/flash_plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/arena.h"
#include "model/parameters.h"
#include "model/softmax_attention.h"

namespace primal {
namespace {

using flash::attends;
using flash::SoftmaxRow;
using flash::TilePlan;

std::vector<double> random_values(int64_t n, uint64_t seed, double lo = -1, double hi = 1) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

template <typename A, typename B>
double rel_error(const A* got, const B* want, int64_t n) {
  double err = 0, scale = 1e-300;
  for (int64_t i = 0; i < n; ++i) {
    err = std::max(err, std::abs(double(got[i]) - double(want[i])));
    scale = std::max(scale, std::abs(double(want[i])));
  }
  return err / scale;
}

// ---- the tile plan ----------------------------------------------------------------------------

struct PlanCase {
  int N, tile;
};

class FlashPlanTiles : public ::testing::TestWithParam<PlanCase> {};

// For every length and both masks: the forward's key tiles and the backward's query tiles are
// the same pairs, exactly those holding an attended (n, j); a pair computed without the mask
// test attends everywhere (rows and keys past N included: the kernels zero-fill them).
TEST_P(FlashPlanTiles, VisitExactlyTheAttendedPairsAndMaskWhereNeeded) {
  const auto [N, tile] = GetParam();
  for (const bool causal : {false, true}) {
    const TilePlan plan{N, tile, causal};
    EXPECT_EQ(plan.tiles(), (N + tile - 1) / tile);
    EXPECT_GE(plan.tiles() * tile, N);
    EXPECT_LT((plan.tiles() - 1) * tile, N);
    for (const int len : {1, N / 2 + 1, N - 1, N}) {
      if (len < 1) continue;
      int visited = 0, unmasked = 0;
      for (int qt = 0; qt < plan.tiles(); ++qt) {
        for (int kt = 0; kt < plan.tiles(); ++kt) {
          const bool forward = kt < plan.key_end(qt, len);
          const bool backward = plan.query_begin(kt) <= qt && qt < plan.query_end(kt, len);
          bool any = false, all = true;
          for (int n = qt * tile; n < (qt + 1) * tile; ++n)
            for (int j = kt * tile; j < (kt + 1) * tile; ++j) {
              any = any || attends(n, j, len, causal);
              all = all && attends(n, j, len, causal);
            }
          SCOPED_TRACE("N " + std::to_string(N) + " tile " + std::to_string(tile) + " len " +
                       std::to_string(len) + " causal " + std::to_string(causal) + " qt " +
                       std::to_string(qt) + " kt " + std::to_string(kt));
          EXPECT_EQ(forward, backward);
          EXPECT_EQ(forward, any);
          if (forward && !plan.needs_mask(qt, kt, len)) {
            EXPECT_TRUE(all);
          }
          visited += forward;
          unmasked += forward && !plan.needs_mask(qt, kt, len);
        }
      }
      const int real = plan.real_tiles(len);
      EXPECT_EQ(visited, causal ? real * (real + 1) / 2 : real * real);
      // The interior is unmasked: every real tile below the diagonal (or every real tile),
      // except the last one when it is partial.
      const int full = len / tile;
      EXPECT_EQ(unmasked, causal ? full * (full - 1) / 2 : full * full);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, FlashPlanTiles,
                         ::testing::Values(PlanCase{1, 64}, PlanCase{7, 64}, PlanCase{63, 64},
                                           PlanCase{64, 64}, PlanCase{65, 64}, PlanCase{130, 64},
                                           PlanCase{256, 64}, PlanCase{100, 32}, PlanCase{37, 32},
                                           PlanCase{128, 32}),
                         [](const auto& info) {
                           return std::string("N") + std::to_string(info.param.N) + "Tile" +
                                  std::to_string(info.param.tile);
                         });

TEST(FlashPlanMask, AttendsIsSpecMask) {
  EXPECT_TRUE(attends(3, 3, 5, true));
  EXPECT_FALSE(attends(3, 4, 5, true));
  EXPECT_TRUE(attends(3, 4, 5, false));
  EXPECT_FALSE(attends(3, 5, 5, false));  // padded key
  EXPECT_FALSE(attends(5, 0, 5, false));  // padded query: attends to nothing
  EXPECT_FALSE(attends(5, 0, 5, true));
}

// ---- the online softmax -----------------------------------------------------------------------

// Chunks of a row with masked scores, one chunk entirely masked, against the two-pass softmax.
TEST(FlashPlanSoftmax, OnlineEqualsTwoPass) {
  const double inf = INFINITY;
  std::vector<double> s = random_values(40, 3, -6, 6);
  std::vector<double> v = random_values(40, 4);
  for (int j = 8; j < 16; ++j) s[j] = -inf;  // one whole chunk masked
  s[3] = s[21] = -inf;
  // Two passes.
  double mx = -inf, sum = 0, y = 0;
  for (double x : s) mx = std::max(mx, x);
  for (double x : s) sum += std::exp(x - mx);
  for (size_t j = 0; j < s.size(); ++j) y += std::exp(s[j] - mx) / sum * v[j];
  // Chunks of 8, the masked one first.
  SoftmaxRow<double> row;
  double o = 0;
  for (const int c0 : {8, 0, 16, 24, 32}) {
    double tile_max = -inf, tile_sum = 0;
    for (int j = c0; j < c0 + 8; ++j) tile_max = std::max(tile_max, s[j]);
    o *= flash::softmax_rescale(row, tile_max);
    for (int j = c0; j < c0 + 8; ++j) {
      const double p = flash::softmax_weight(row, s[j]);
      tile_sum += p;
      o += p * v[j];
    }
    flash::softmax_add(row, tile_sum);
  }
  EXPECT_NEAR(o * flash::softmax_normaliser(row), y, 1e-14);
  EXPECT_NEAR(flash::softmax_logsumexp(row), mx + std::log(sum), 1e-14);
  for (size_t j = 0; j < s.size(); ++j)
    EXPECT_NEAR(flash::softmax_prob(s[j], flash::softmax_logsumexp(row)), std::exp(s[j] - mx) / sum,
                1e-15);
}

// A row that attends to no key (a padded query): y = 0, P = 0, no NaN anywhere.
TEST(FlashPlanSoftmax, RowWithoutKeysGivesZero) {
  const float inf = INFINITY;
  SoftmaxRow<float> row;
  EXPECT_EQ(flash::softmax_rescale(row, -inf), 1.f);
  EXPECT_EQ(flash::softmax_weight(row, -inf), 0.f);
  flash::softmax_add(row, 0.f);
  EXPECT_EQ(flash::softmax_normaliser(row), 0.f);
  EXPECT_EQ(flash::softmax_logsumexp(row), inf);
  EXPECT_EQ(flash::softmax_prob(-inf, flash::softmax_logsumexp(row)), 0.f);
  EXPECT_EQ(flash::softmax_prob(0.5f, flash::softmax_logsumexp(row)), 0.f);
}

// ---- the tiled algorithm, emulated ------------------------------------------------------------
// Layouts as the kernels': qkv [B, N, 3C] (q | k | v), y and dy [B, N, C], head h at channels
// [h d, (h + 1) d); logsumexp and D [B, H, N]. Positions past N in the last tile read as 0.

template <typename R>
struct Problem {
  const R* qkv;
  const int32_t* lengths;  // null: every position real
  bool causal;
  int B, N, H, d;
  int C() const { return H * d; }
  int len(int b) const { return lengths ? lengths[b] : N; }
  // Element c of q (block 0), k (1) or v (2) of position n, head h of sample b.
  R at(int block, int b, int h, int n, int c) const {
    return n < N ? qkv[(int64_t(b) * N + n) * 3 * C() + block * C() + h * d + c] : R(0);
  }
  // The scaled score of (n, j); -inf where the tile is masked and n does not attend to j.
  R score(bool mask, int b, int h, int n, int j) const {
    if (mask && !attends(n, j, len(b), causal)) return -R(INFINITY);
    R dot = 0;
    for (int c = 0; c < d; ++c) dot += at(0, b, h, n, c) * at(1, b, h, j, c);
    return dot * R(1 / std::sqrt(double(d)));
  }
};

// flash_attention_forward: per (b, h, query tile), the plan's key tiles with the online softmax.
template <typename R>
void emulate_forward(const Problem<R>& p, int tile, R* y, R* lse) {
  const TilePlan plan{p.N, tile, p.causal};
  for (int b = 0; b < p.B; ++b)
    for (int h = 0; h < p.H; ++h)
      for (int qt = 0; qt < plan.tiles(); ++qt) {
        std::vector<SoftmaxRow<R>> rows(tile);
        std::vector<R> o(int64_t(tile) * p.d, R(0)), s(tile);
        for (int kt = 0; kt < plan.key_end(qt, p.len(b)); ++kt) {
          const bool mask = plan.needs_mask(qt, kt, p.len(b));
          for (int i = 0; i < tile; ++i) {
            const int n = qt * tile + i;
            R tile_max = -R(INFINITY), tile_sum = 0;
            for (int jj = 0; jj < tile; ++jj) {
              s[jj] = p.score(mask, b, h, n, kt * tile + jj);
              tile_max = std::max(tile_max, s[jj]);
            }
            const R alpha = flash::softmax_rescale(rows[i], tile_max);
            for (int c = 0; c < p.d; ++c) o[i * p.d + c] *= alpha;
            for (int jj = 0; jj < tile; ++jj) {
              const R w = flash::softmax_weight(rows[i], s[jj]);
              tile_sum += w;
              for (int c = 0; c < p.d; ++c) o[i * p.d + c] += w * p.at(2, b, h, kt * tile + jj, c);
            }
            flash::softmax_add(rows[i], tile_sum);
          }
        }
        for (int i = 0; i < tile && qt * tile + i < p.N; ++i) {
          const int n = qt * tile + i;
          for (int c = 0; c < p.d; ++c)
            y[(int64_t(b) * p.N + n) * p.C() + h * p.d + c] =
                o[i * p.d + c] * flash::softmax_normaliser(rows[i]);
          lse[(int64_t(b) * p.H + h) * p.N + n] = flash::softmax_logsumexp(rows[i]);
        }
      }
}

// flash_attention_backward: D = rowsum(dy y); per key tile dK, dV over the plan's query tiles;
// per query tile dQ over its key tiles; P recomputed from logsumexp both times.
template <typename R>
void emulate_backward(const Problem<R>& p, int tile, const R* y, const R* lse, const R* dy,
                      R* dqkv) {
  const TilePlan plan{p.N, tile, p.causal};
  const int C = p.C(), d = p.d;
  const R scale = R(1 / std::sqrt(double(d)));
  auto row_at = [&](const R* t, int b, int h, int n, int c) {
    return n < p.N ? t[(int64_t(b) * p.N + n) * C + h * d + c] : R(0);
  };
  std::vector<R> D(int64_t(p.B) * p.H * p.N);
  for (int b = 0; b < p.B; ++b)
    for (int h = 0; h < p.H; ++h)
      for (int n = 0; n < p.N; ++n) {
        R sum = 0;
        for (int c = 0; c < d; ++c) sum += row_at(dy, b, h, n, c) * row_at(y, b, h, n, c);
        D[(int64_t(b) * p.H + h) * p.N + n] = sum;
      }
  // Rows past N: logsumexp +inf (P = 0), D = 0, as the kernels load them.
  auto row_lse = [&](int b, int h, int n) {
    return n < p.N ? lse[(int64_t(b) * p.H + h) * p.N + n] : R(INFINITY);
  };
  auto row_D = [&](int b, int h, int n) {
    return n < p.N ? D[(int64_t(b) * p.H + h) * p.N + n] : R(0);
  };
  auto out = [&](int block, int b, int h, int n, int c) -> R& {
    return dqkv[(int64_t(b) * p.N + n) * 3 * C + block * C + h * d + c];
  };
  // P and dS = P (dP - D) of one tile element, as both backward kernels recompute them.
  auto prob_and_score_grad = [&](bool mask, int b, int h, int n, int j) {
    const R P = flash::softmax_prob(p.score(mask, b, h, n, j), row_lse(b, h, n));
    R dP = 0;
    for (int c = 0; c < d; ++c) dP += row_at(dy, b, h, n, c) * p.at(2, b, h, j, c);
    return std::pair<R, R>{P, P * (dP - row_D(b, h, n))};
  };
  for (int b = 0; b < p.B; ++b)
    for (int h = 0; h < p.H; ++h) {
      const int len = p.len(b);
      for (int kt = 0; kt < plan.tiles(); ++kt) {
        std::vector<R> dk(int64_t(tile) * d, R(0)), dv(int64_t(tile) * d, R(0));
        for (int qt = plan.query_begin(kt); qt < plan.query_end(kt, len); ++qt) {
          const bool mask = plan.needs_mask(qt, kt, len);
          for (int i = 0; i < tile; ++i)
            for (int jj = 0; jj < tile; ++jj) {
              const int n = qt * tile + i, j = kt * tile + jj;
              const auto [P, dS] = prob_and_score_grad(mask, b, h, n, j);
              for (int c = 0; c < d; ++c) {
                dv[jj * d + c] += P * row_at(dy, b, h, n, c);
                dk[jj * d + c] += dS * p.at(0, b, h, n, c);
              }
            }
        }
        for (int jj = 0; jj < tile && kt * tile + jj < p.N; ++jj)
          for (int c = 0; c < d; ++c) {
            out(1, b, h, kt * tile + jj, c) = dk[jj * d + c] * scale;
            out(2, b, h, kt * tile + jj, c) = dv[jj * d + c];
          }
      }
      for (int qt = 0; qt < plan.tiles(); ++qt) {
        std::vector<R> dq(int64_t(tile) * d, R(0));
        for (int kt = 0; kt < plan.key_end(qt, len); ++kt) {
          const bool mask = plan.needs_mask(qt, kt, len);
          for (int i = 0; i < tile; ++i)
            for (int jj = 0; jj < tile; ++jj) {
              const int n = qt * tile + i, j = kt * tile + jj;
              const R dS = prob_and_score_grad(mask, b, h, n, j).second;
              for (int c = 0; c < d; ++c) dq[i * d + c] += dS * p.at(1, b, h, j, c);
            }
        }
        for (int i = 0; i < tile && qt * tile + i < p.N; ++i)
          for (int c = 0; c < d; ++c) out(0, b, h, qt * tile + i, c) = dq[i * d + c] * scale;
      }
    }
}

struct EmulationCase {
  int N;
  bool causal, padded;
};

class FlashEmulation : public ::testing::TestWithParam<EmulationCase> {};

// The CPU layer's forward and backward (double) against its own Linears around the emulated
// tiled core: out, dx and the qkv weight gradient (= dqkv^T x) within 1e-12, for the kernels'
// two tile sizes (32, 64). The same emulation in float stays within 1e-5 of it: the accuracy
// the fp32 kernels are held to.
TEST_P(FlashEmulation, MatchesTheSoftmaxAttentionLayer) {
  const auto [N, causal, padded] = GetParam();
  const int B = 3, H = 2, d = 8, C = H * d;
  std::vector<int32_t> lengths;
  if (padded) lengths = {N, std::max(1, N / 2), 1};
  ParameterStore<double> params;
  SoftmaxAttention<double> attn(params, "attn", C, H);
  params.finalize(1);
  // Weights of order 1 (not the init's 0.02): scores spread over several units, so that the
  // softmax is far from uniform and the max subtraction matters.
  const std::vector<double> w = random_values(params.numel(), 2, -0.7, 0.7);
  std::copy(w.begin(), w.end(), params.values().data());
  const Sequence seq{B, N, padded ? lengths.data() : nullptr, causal};
  const int64_t rows = int64_t(B) * N;
  std::vector<double> x_values = random_values(rows * C, 3),
                      dout_values = random_values(rows * C, 4);
  Tensor<double> x(x_values.data(), {B, N, C});
  Arena arena;
  Tensor<double> dout = arena.alloc<double>({B, N, C});
  std::copy(dout_values.begin(), dout_values.end(), dout.data());
  const Tensor<double>& dw = attn.qkv_linear().weight()->grad;

  KsvdPartial partial;
  const Tensor<double> out_ref = attn.forward(arena, x, seq, partial, nullptr);
  Tensor<double> dx_ref = arena.zeros<double>({B, N, C});
  params.zero_grads();
  attn.backward(arena, dout, dx_ref, {});
  const std::vector<double> dw_ref(dw.data(), dw.data() + dw.numel());

  for (const int tile : {32, 64}) {
    SCOPED_TRACE("tile " + std::to_string(tile));
    params.zero_grads();
    const Tensor<double> qkv = attn.qkv_linear().forward(arena, x);
    const Problem<double> problem{qkv.data(), seq.lengths, causal, B, N, H, d};
    Tensor<double> y = arena.alloc<double>({B, N, C});
    std::vector<double> lse(int64_t(B) * H * N);
    emulate_forward(problem, tile, y.data(), lse.data());
    const Tensor<double> out = attn.proj_linear().forward(arena, y);
    Tensor<double> dy = arena.zeros<double>({B, N, C});
    attn.proj_linear().backward(arena, dout, dy);
    Tensor<double> dqkv = arena.alloc<double>({B, N, 3 * C});
    emulate_backward(problem, tile, y.data(), lse.data(), dy.data(), dqkv.data());
    Tensor<double> dx = arena.zeros<double>({B, N, C});
    attn.qkv_linear().backward(arena, dqkv, dx);
    const double e_out = rel_error(out.data(), out_ref.data(), out.numel());
    const double e_dx = rel_error(dx.data(), dx_ref.data(), dx.numel());
    const double e_dw = rel_error(dw.data(), dw_ref.data(), dw.numel());
    EXPECT_LT(e_out, 1e-12);
    EXPECT_LT(e_dx, 1e-12);
    EXPECT_LT(e_dw, 1e-12);

    // In float, from the same (rounded) inputs, against the double emulation just checked.
    std::vector<float> qkv_f(qkv.data(), qkv.data() + qkv.numel());
    std::vector<float> dy_f(dy.data(), dy.data() + dy.numel());
    std::vector<float> y_f(y.numel()), lse_f(lse.size()), dqkv_f(dqkv.numel());
    const Problem<float> problem_f{qkv_f.data(), seq.lengths, causal, B, N, H, d};
    emulate_forward(problem_f, tile, y_f.data(), lse_f.data());
    emulate_backward(problem_f, tile, y_f.data(), lse_f.data(), dy_f.data(), dqkv_f.data());
    const double e_y_f = rel_error(y_f.data(), y.data(), y.numel());
    const double e_dqkv_f = rel_error(dqkv_f.data(), dqkv.data(), dqkv.numel());
    EXPECT_LT(e_y_f, 1e-5);
    EXPECT_LT(e_dqkv_f, 1e-5);
    std::printf("tile %d: double out %.1e dx %.1e dWqkv %.1e;  float y %.1e dqkv %.1e\n", tile,
                e_out, e_dx, e_dw, e_y_f, e_dqkv_f);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, FlashEmulation,
    ::testing::Values(EmulationCase{1, true, false}, EmulationCase{1, false, true},
                      EmulationCase{7, true, false}, EmulationCase{7, false, true},
                      EmulationCase{63, true, false}, EmulationCase{63, false, true},
                      EmulationCase{64, true, false}, EmulationCase{64, false, true},
                      EmulationCase{65, true, false}, EmulationCase{65, false, true},
                      EmulationCase{65, false, false}, EmulationCase{130, true, false},
                      EmulationCase{130, false, true}, EmulationCase{130, true, true}),
    [](const auto& info) {
      return std::string("N") + std::to_string(info.param.N) + (info.param.causal ? "Causal" : "") +
             (info.param.padded ? "Padded" : "") +
             (!info.param.causal && !info.param.padded ? "Full" : "");
    });

}  // namespace
}  // namespace primal
