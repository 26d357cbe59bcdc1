#include "model/primal_attention.h"

#include <algorithm>

#include <cmath>
#include "core/parallel.h"

#include "core/blas.h"
#include "core/element_math.h"
#include "core/reduce.h"
#include "model/attention_kinds.h"
#include "model/blocks.h"

namespace primal {

template <typename T>
PrimalAttention<T>::PrimalAttention(ParameterStore<T>& params, const std::string& name, int width,
                                    int heads, int low_rank, int sampled_len, bool causal,
                                    TensorParallelGroup* tp, int64_t block_rows)
    : qk_(params, name + ".qk", width, 2 * width, {Split::kColumn, 2}, tp),
      we_(params.add(name + ".we", {heads, causal ? width / heads : sampled_len, low_rank},
                     Split::kHeads, Init::kOrthogonalRows)),
      wr_(params.add(name + ".wr", we_->shape, Split::kHeads, Init::kOrthogonalRows)),
      lambda_(params.add(name + ".lambda", {heads, low_rank}, Split::kHeads, Init::kUniform)),
      // One matrix for all heads: every rank holds it, and its gradient sums over all heads.
      concat_(params, name + ".concat", 2 * low_rank, width / heads,
              {Split::kReplicated, 1, /*sum_grad_over_tp=*/true}, tp),
      proj_(params, name + ".proj", width, width, {Split::kRow}, tp),
      width_(width),
      heads_(heads / (tp ? tp->size() : 1)),
      head_dim_(width / heads),
      first_head_(tp ? tp->rank() * heads_ : 0),
      rank_(low_rank),
      sampled_len_(sampled_len),
      causal_(causal),
      tp_(tp),
      block_rows_(block_rows) {
  q_.w = we_;
  q_.block = 0;
  k_.w = wr_;
  k_.block = 1;
}

template <typename T>
const T* PrimalAttention<T>::projection(const Side& side, int b, int h) const {
  const int d = head_dim_, s = rank_;
  if (causal_) return side.w->value.data() + int64_t(h) * d * s;
  return side.w_eff.data() + (int64_t(b) * heads_ + h) * d * s;
}

template <typename T>
int PrimalAttention<T>::block_samples(int N) const {
  if (whole_batch_is_one_block(tp_)) return seq_.B;
  return int(std::max<int64_t>(1, block_rows_ / std::max(N, 1)));
}

template <typename T>
void PrimalAttention<T>::side_forward(const Tensor<T>& qk, Side& side, int b0, int b1) {
  // C: the width of this rank's heads; Cx: the model width (rows of x and of the samples Xs).
  const int N = seq_.N, H = heads_, d = head_dim_, C = H * d, Cx = width_, s = rank_;
  const int L = sampled_len_, Bb = b1 - b0;
  // qin: the prefix mean of q (causal), written into u and normalised there, or q itself,
  // normalised on its way from qk into u.
  if (causal_) {
#pragma omp parallel for schedule(static) if (int64_t(Bb) * N * C > kParallelGrain)
    for (int b = b0; b < b1; ++b) {
      for (int n = 0; n < N; ++n) {
        const T* q = qk.data() + (int64_t(b - b0) * N + n) * 2 * C + side.block * C;
        T* u = side.u.data() + (int64_t(b) * N + n) * C;
        const T* prev = u - C;  // qin_{n-1}: qin_n = (n qin_{n-1} + q_n) / (n + 1)
        for (int c = 0; c < C; ++c) u[c] = em::prefix_mean_step(n == 0 ? q[c] : prev[c], q[c], n);
      }
    }
  }
  // The prefix means above read the previous row before it is normalised, so phi runs after.
#pragma omp parallel for schedule(static) if (int64_t(Bb) * N * C > kParallelGrain)
  for (int64_t row = int64_t(b0) * N * H; row < int64_t(b1) * N * H; ++row) {
    const int64_t token = row / H - int64_t(b0) * N;  // the block's row of qk
    const T* qin = causal_ ? side.u.data() + row * d
                           : qk.data() + token * 2 * C + side.block * C + (row % H) * d;
    T* u = side.u.data() + row * d;
    const T norm = std::sqrt(dot(qin, qin, d));
    side.norm[row] = norm;
    const T inv = em::phi_scale(norm);
    for (int j = 0; j < d; ++j) u[j] = qin[j] * inv;
  }
  if (!causal_) {
#pragma omp parallel for schedule(static) if (int64_t(Bb) * N * C > kParallelGrain)
    for (int bh = b0 * H; bh < b1 * H; ++bh) {
      const int b = bh / H, h = bh % H;
      gemm(Trans::kYes, Trans::kNo, d, s, L, T(1),
           xs_.data() + int64_t(b) * L * Cx + (first_head_ + h) * d, Cx,
           side.w->value.data() + int64_t(h) * L * s, s, T(0),
           side.w_eff.data() + int64_t(bh) * d * s, s);
    }
  }
#pragma omp parallel for schedule(static) if (int64_t(Bb) * N * C > kParallelGrain)
  for (int bh = b0 * H; bh < b1 * H; ++bh) {
    const int b = bh / H, h = bh % H;
    gemm(Trans::kNo, Trans::kNo, N, s, d, T(1), side.u.data() + int64_t(b) * N * C + h * d, C,
         projection(side, b, h), s, T(0),
         er_.data() + (int64_t(b) * N * H + h) * 2 * s + side.block * s, 2 * s * H);
  }
}

template <typename T>
Tensor<T> PrimalAttention<T>::forward(Arena& arena, const Tensor<T>& x, const Sequence& seq,
                                      KsvdPartial& ksvd, LayerNorm<T>* norm) {
  const int B = seq.B, N = seq.N, H = heads_, C = H * head_dim_, Cx = width_, s = rank_;
  const int L = sampled_len_;
  seq_ = seq;
  x_ = x;
  norm_ = norm;
  // What backward needs, and the output, are allocated first; a block's temporaries sit above
  // a mark and are handed back after it.
  if (!causal_) {
    idx_ = arena.alloc<int32_t>({B, L});
    xs_ = arena.alloc<T>({B, L, Cx});
  }
  er_ = arena.alloc<T>({int64_t(B) * N * H, 2 * s});
  for (Side* side : {&q_, &k_}) {
    side->u = arena.alloc<T>({B, N, C});
    side->norm = arena.alloc<T>({B, N, H});
    if (!causal_) side->w_eff = arena.alloc<T>({B, H, head_dim_, s});
  }
  norm_stats_ = norm ? arena.alloc<T>({2, int64_t(B) * N}) : Tensor<T>();  // means, rstds
  Tensor<T> out = arena.alloc<T>({int64_t(B) * N, Cx});
  const T* lambda = lambda_->value.data();
  const int per_block = block_samples(N);
  const int64_t blocks = (B + per_block - 1) / per_block;
  Tensor<double> sums = arena.zeros<double>({block_slots(blocks), 2});  // e, r per slot
  for_each_block(arena, blocks, [&](Arena& scratch, int slot, int64_t block) {
    const int b0 = int(block) * per_block, b1 = std::min(B, b0 + per_block);
    const int64_t r0 = int64_t(b0) * N, rows = int64_t(b1 - b0) * N;
    Tensor<T> in(x.data() + r0 * Cx, {rows, Cx});
    if (norm) {
      Tensor<T> normed = scratch.alloc<T>({rows, Cx});
      norm->forward_rows(in.data(), rows, normed.data(), norm_stats_.data() + r0,
                         norm_stats_.data() + int64_t(B) * N + r0);
      in = normed;
    }
    if (!causal_) {
      for (int b = b0; b < b1; ++b) {
        const int64_t len = seq.length(b);
        for (int l = 0; l < L; ++l) {
          const int32_t n = L == 1 ? 0 : int32_t(l * (len - 1) / (L - 1));
          idx_[int64_t(b) * L + l] = n;
          std::copy_n(in.data() + (int64_t(b - b0) * N + n) * Cx, Cx,
                      xs_.data() + (int64_t(b) * L + l) * Cx);
        }
      }
    }
    Tensor<T> qk = scratch.alloc<T>({rows, 2 * C});
    qk_.forward_into(in, qk);
    side_forward(qk, q_, b0, b1);
    side_forward(qk, k_, b0, b1);

    // KSVD partial sums over real tokens, accumulated in double.
    reduce_rows<double>(scratch, rows, 2, sums.data() + 2 * slot,
                        [&](int64_t q0, int64_t q1, double* acc) {
                          for (int64_t row = r0 + q0; row < r0 + q1; ++row) {
                            if (!seq.is_real(int(row / N), int(row % N))) continue;
                            const T* er = er_.data() + row * H * 2 * s;
                            for (int h = 0; h < H; ++h, er += 2 * s) {
                              double e = 0, r = 0;  // in SIMD lanes
#pragma omp simd reduction(+ : e, r)
                              for (int i = 0; i < s; ++i) {
                                const double l2 = double(lambda[h * s + i]) * lambda[h * s + i];
                                e += 0.5 * l2 * er[i] * er[i];
                                r += 0.5 * l2 * er[s + i] * er[s + i];
                              }
                              acc[0] += e;
                              acc[1] += r;
                            }
                          }
                        });
    Tensor<T> o = scratch.alloc<T>({rows * H, head_dim_});  // [rows*H, d] == [rows, C]
    concat_.forward_into(Tensor<T>(er_.data() + r0 * H * 2 * s, {rows * H, 2 * s}), o);
    proj_.forward_into(o.reshape({rows, C}), Tensor<T>(out.data() + r0 * Cx, {rows, Cx}));
  });
  ksvd.e = ksvd.r = 0;
  for (int slot = 0; slot < sums.dim(0); ++slot) {
    ksvd.e += sums[2 * slot];
    ksvd.r += sums[2 * slot + 1];
  }
  ksvd.t = 0;
  for (int64_t i = 0; i < we_->value.numel(); ++i) ksvd.t += double(we_->value[i]) * wr_->value[i];
  return out;
}

template <typename T>
void PrimalAttention<T>::side_backward(Arena& arena, const Side& side, const Tensor<T>& der,
                                       const Tensor<T>& dqk, const Tensor<T>& dxs, int b0, int b1,
                                       T* dw) {
  // C: the width of this rank's heads; Cx: the model width (rows of x and of the samples Xs).
  const int N = seq_.N, H = heads_, d = head_dim_, C = H * d, Cx = width_, s = rank_;
  const int L = sampled_len_, Bb = b1 - b0;
  const int64_t ld_er = 2 * s * H, r0 = int64_t(b0) * N;
  const T* dproj = der.data() + side.block * s;  // de or dr inside [e r] rows (of the block)
  const Arena::Mark temporaries = arena.mark();
  Tensor<T> du = arena.alloc<T>({Bb, N, C});
  Tensor<T> dw_eff = causal_ ? Tensor<T>() : arena.alloc<T>({Bb, H, d, s});
#pragma omp parallel for schedule(static) if (int64_t(Bb) * N * C > kParallelGrain)
  for (int bh = b0 * H; bh < b1 * H; ++bh) {
    const int b = bh / H, h = bh % H;
    const T* dp = dproj + int64_t(b - b0) * N * ld_er + h * 2 * s;
    const T* u = side.u.data() + int64_t(b) * N * C + h * d;
    gemm(Trans::kNo, Trans::kYes, N, d, s, T(1), dp, ld_er, projection(side, b, h), s, T(0),
         du.data() + int64_t(b - b0) * N * C + h * d, C);
    if (!causal_) {
      T* dwe = dw_eff.data() + int64_t(bh - b0 * H) * d * s;
      gemm(Trans::kYes, Trans::kNo, d, s, N, T(1), u, C, dp, ld_er, T(0), dwe, s);
      gemm(Trans::kNo, Trans::kYes, L, d, s, T(1), side.w->value.data() + int64_t(h) * L * s, s,
           dwe, s, T(1), dxs.data() + int64_t(b) * L * Cx + (first_head_ + h) * d, Cx);
    }
  }
  if (causal_) {
    // dWe[h] = sum over all (b, n) of u^T de: per head, one GEMM over the block's rows.
    for (int h = 0; h < H; ++h) {
      gemm(Trans::kYes, Trans::kNo, d, s, Bb * N, T(1), side.u.data() + r0 * C + h * d, C,
           dproj + h * 2 * s, ld_er, T(1), dw + int64_t(h) * d * s, s);
    }
  } else {
    // dWe[h] = sum_b Xs[b,h] dwe[b,h], b in order.
#pragma omp parallel for schedule(static) if (int64_t(Bb) * N * C > kParallelGrain)
    for (int h = 0; h < H; ++h) {
      for (int b = b0; b < b1; ++b) {
        gemm(Trans::kNo, Trans::kNo, L, s, d, T(1),
             xs_.data() + int64_t(b) * L * Cx + (first_head_ + h) * d, Cx,
             dw_eff.data() + (int64_t(b - b0) * H + h) * d * s, s, T(1), dw + int64_t(h) * L * s,
             s);
      }
    }
  }
  // phi's Jacobian: dqin = (du - u (u . du)) / |qin|  (or du / eps where |qin| < eps), in
  // place (causal) or straight into dqk's block (encoder: qin is q).
#pragma omp parallel for schedule(static) if (int64_t(Bb) * N * C > kParallelGrain)
  for (int64_t row = 0; row < int64_t(Bb) * N * H; ++row) {
    const T* u = side.u.data() + r0 * C + row * d;
    T* g = du.data() + row * d;
    T* dqin = causal_ ? g : dqk.data() + (row / H) * 2 * C + side.block * C + (row % H) * d;
    const T norm = side.norm[r0 * H + row];
    const T u_dot_g = dot(u, g, d);
    for (int j = 0; j < d; ++j) dqin[j] = em::phi_grad(g[j], u[j], u_dot_g, norm);
  }
  if (causal_) {
    // Through the prefix mean into dqk's block: dq_j = sum_{n >= j} dqin_n / (n + 1), a
    // reverse running sum.
#pragma omp parallel for schedule(static) if (int64_t(Bb) * N * C > kParallelGrain)
    for (int b = 0; b < Bb; ++b) {
      for (int n = N - 1; n >= 0; --n) {
        const T* g = du.data() + (int64_t(b) * N + n) * C;
        T* dq = dqk.data() + (int64_t(b) * N + n) * 2 * C + side.block * C;
        const T* next = dq + 2 * C;  // dq_{n+1} = running sum over n' > n
        for (int c = 0; c < C; ++c) dq[c] = g[c] / T(n + 1) + (n == N - 1 ? T(0) : next[c]);
      }
    }
  }
  arena.release(temporaries);
}

template <typename T>
void PrimalAttention<T>::backward(Arena& arena, const Tensor<T>& dout, const Tensor<T>& dx,
                                  const KsvdGrad& ksvd) {
  const int B = seq_.B, N = seq_.N, H = heads_, C = H * head_dim_, Cx = width_, s = rank_;
  const int L = sampled_len_;
  const T* lambda = lambda_->value.data();
  const T gk = T(ksvd.de);
  // d(t-sum)/dWe = Wr, d(t-sum)/dWr = We.
  const T gt = T(ksvd.dt);
  for (int64_t i = 0; i < we_->value.numel(); ++i) {
    we_->grad[i] += gt * wr_->value[i];
    wr_->grad[i] += gt * we_->value[i];
  }
  Tensor<T> dxs = causal_ ? Tensor<T>() : arena.zeros<T>({B, L, Cx});
  const int per_block = block_samples(N);
  const int64_t blocks = (B + per_block - 1) / per_block;
  // The accumulators, in this order: qk W, b; concat W, b; proj W, b; We; Wr; Lambda; the
  // norm's w, b.
  const GradSlots<T> slots(
      arena, block_slots(blocks),
      {qk_.weight(), qk_.bias(), concat_.weight(), concat_.bias(), proj_.weight(), proj_.bias(),
       we_, wr_, lambda_, norm_ ? norm_->weight() : nullptr, norm_ ? norm_->bias() : nullptr});
  for_each_block(arena, blocks, [&](Arena& scratch, int slot, int64_t block) {
    const int b0 = int(block) * per_block, b1 = std::min(B, b0 + per_block);
    const int64_t r0 = int64_t(b0) * N, rows = int64_t(b1 - b0) * N;
    const Tensor<T> er(er_.data() + r0 * H * 2 * s, {rows * H, 2 * s});
    // o = [e r] Wc^T + bc again, for proj's weight gradient.
    Tensor<T> o = scratch.alloc<T>({rows * H, head_dim_});
    concat_.forward_into(er, o);
    Tensor<T> dout_o = scratch.zeros<T>({rows, C});
    proj_.backward_from(scratch, o.reshape({rows, C}), Tensor<T>(dout.data() + r0 * Cx, {rows, Cx}),
                        dout_o, slots.grad(slot, 4), slots.grad(slot, 5));
    Tensor<T> der = scratch.zeros<T>(er.shape());
    concat_.backward_from(scratch, er, dout_o.reshape({rows * H, C / H}), der, slots.grad(slot, 2),
                          slots.grad(slot, 3));

    // KSVD: d(e-sum)/de = Lambda^2 e and d(e-sum)/dLambda = sum e^2 Lambda, real tokens only.
#pragma omp parallel for schedule(static) if (rows * C > kParallelGrain)
    for (int64_t row = r0; row < r0 + rows; ++row) {
      if (!seq_.is_real(int(row / N), int(row % N))) continue;
      const T* e = er_.data() + row * H * 2 * s;
      T* g = der.data() + (row - r0) * H * 2 * s;
      for (int h = 0; h < H; ++h)
        for (int i = 0; i < s; ++i) {
          const T l2 = lambda[h * s + i] * lambda[h * s + i];
          g[h * 2 * s + i] += gk * l2 * e[h * 2 * s + i];
          g[h * 2 * s + s + i] += gk * l2 * e[h * 2 * s + s + i];
        }
    }
    reduce_rows<T>(scratch, rows, H * s, slots.grad(slot, 8), [&](int64_t q0, int64_t q1, T* acc) {
      for (int64_t row = r0 + q0; row < r0 + q1; ++row) {
        if (!seq_.is_real(int(row / N), int(row % N))) continue;
        const T* e = er_.data() + row * H * 2 * s;
        for (int h = 0; h < H; ++h)
          for (int i = 0; i < s; ++i) {
            const T ev = e[h * 2 * s + i], rv = e[h * 2 * s + s + i];
            acc[h * s + i] += gk * (ev * ev + rv * rv) * lambda[h * s + i];
          }
      }
    });

    Tensor<T> dqk = scratch.alloc<T>({rows, 2 * C});
    side_backward(scratch, q_, der, dqk, dxs, b0, b1, slots.grad(slot, 6));
    side_backward(scratch, k_, der, dqk, dxs, b0, b1, slots.grad(slot, 7));
    // qk's input: norm(x) again (with its row statistics) or x itself.
    Tensor<T> x(x_.data() + r0 * Cx, {rows, Cx}), in = x;
    const T* mean = norm_stats_.data() + r0;
    const T* rstd = norm_stats_.data() + int64_t(B) * N + r0;
    if (norm_) {
      in = scratch.alloc<T>({rows, Cx});
      norm_->apply_rows(x.data(), rows, mean, rstd, in.data());
    }
    Tensor<T> din =
        norm_ ? scratch.zeros<T>({rows, Cx}) : Tensor<T>(dx.data() + r0 * Cx, {rows, Cx});
    qk_.backward_from(scratch, in, dqk, din, slots.grad(slot, 0), slots.grad(slot, 1));
    if (!causal_) {  // dXs back onto the sampled tokens
      for (int b = b0; b < b1; ++b) {
        for (int l = 0; l < L; ++l) {
          const T* g = dxs.data() + (int64_t(b) * L + l) * Cx;
          T* o_row = din.data() + (int64_t(b - b0) * N + idx_[int64_t(b) * L + l]) * Cx;
          for (int c = 0; c < Cx; ++c) o_row[c] += g[c];
        }
      }
    }
    if (norm_) {
      tp_all_reduce(tp_, din);  // each rank's heads gave a partial sum
      norm_->backward_rows(scratch, x.data(), din.data(), mean, rstd, rows, dx.data() + r0 * Cx,
                           slots.grad(slot, 9), slots.grad(slot, 10));
    }
  });
  slots.add_to_grads();
}

template <typename T>
int64_t PrimalAttention<T>::decode_state_size(int) const {
  return 2 * int64_t(heads_) * head_dim_;
}

template <typename T>
int64_t PrimalAttention<T>::decode_state_read(int) const {
  return 2 * int64_t(heads_) * head_dim_;
}

template <typename T>
Tensor<T> PrimalAttention<T>::decode_step(Arena& arena, const Tensor<T>& x, std::span<T> state,
                                          int position) {
  check(causal_, "PrimalAttention: incremental generation needs the causal form");
  const int n = position, H = heads_, d = head_dim_, C = H * d, s = rank_;
  Tensor<T> qk = qk_.forward(arena, x);       // [1, 2C]: q | k
  Tensor<T> er = arena.alloc<T>({H, 2 * s});  // [e_h r_h] per head
  Tensor<T> u = arena.alloc<T>({C});
  for (const Side* side : {&q_, &k_}) {
    const T* q = qk.data() + side->block * C;
    T* mean = state.data() + side->block * C;  // qbar, then kbar
    const T* w = side->w->value.data();        // [H, d, s]
    for (int c = 0; c < C; ++c) mean[c] = em::prefix_mean_step(mean[c], q[c], n);
    for (int h = 0; h < H; ++h) {
      const T inv = em::phi_scale(std::sqrt(dot(mean + h * d, mean + h * d, d)));
      for (int j = 0; j < d; ++j) u[h * d + j] = mean[h * d + j] * inv;
      gemm(Trans::kNo, Trans::kNo, 1, s, d, T(1), u.data() + h * d, d, w + int64_t(h) * d * s, s,
           T(0), er.data() + h * 2 * s + side->block * s, 2 * s);
    }
  }
  Tensor<T> o = concat_.forward(arena, er);  // [H, d] == [1, C]
  return proj_.forward(arena, o.reshape({1, C}));
}

template <typename T>
void primal_kernel_matrix(const PrimalAttention<T>& attn, int b, int h, int n,
                          std::vector<double>& out) {
  // K = E R^T with E = phi(qin) we [n, s] and R = phi(kin) wr [n, s], all in double.
  const int d = attn.head_dim(), s = attn.low_rank(), H = attn.local_heads(), C = H * d;
  const int64_t N = attn.saved_u_q().dim(1);
  std::vector<double> e(size_t(n) * s), r(size_t(n) * s);
  for (int side = 0; side < 2; ++side) {
    const T* u =
        (side == 0 ? attn.saved_u_q() : attn.saved_u_k()).data() + int64_t(b) * N * C + h * d;
    const T* w = side == 0 ? attn.saved_we(b, h) : attn.saved_wr(b, h);  // [d, s]
    std::vector<double>& dst = side == 0 ? e : r;
    for (int i = 0; i < n; ++i)
      for (int k = 0; k < s; ++k) {
        double acc = 0;
        for (int j = 0; j < d; ++j) acc += double(u[int64_t(i) * C + j]) * double(w[j * s + k]);
        dst[size_t(i) * s + k] = acc;
      }
  }
  out.resize(size_t(n) * n);
  gemm(Trans::kNo, Trans::kYes, n, n, s, 1.0, e.data(), s, r.data(), s, 0.0, out.data(), n);
}

template <typename T>
void PrimalAttention<T>::analysed_matrix(int b, int h, int n, std::vector<double>& out) const {
  primal_kernel_matrix(*this, b, h, n, out);
}

template class PrimalAttention<float>;
template class PrimalAttention<double>;
template void primal_kernel_matrix(const PrimalAttention<float>&, int, int, int,
                                   std::vector<double>&);
template void primal_kernel_matrix(const PrimalAttention<double>&, int, int, int,
                                   std::vector<double>&);

namespace {

// qk 4RC^2, proj 2RC^2; e and r: 2 R s C each; concat Linear(2s -> d) on R H rows: 4RsC; the
// encoder's we, wr = Xs We[h], Xs Wr[h] per (b, h): 2 d s L each. Backward is two of each
// (d input, d weight) and concat again for proj's weight gradient.
AttentionFlops primal_gemm_flops(const ModelConfig& c, int64_t B, int64_t S) {
  const int64_t R = B * S, C = c.width, s = c.low_rank, L = c.sampled_len();
  int64_t forward = 6 * R * C * C + 8 * R * s * C;
  if (!c.causal()) forward += 4 * B * L * s * C;
  return {.forward = forward, .backward = 2 * forward + 4 * R * s * C};
}

// The encoder form samples L = min(N_max, s m) tokens and projects onto s of them.
ConfigProblem primal_config_problem(const ModelConfig& c) {
  if (c.causal() || c.low_rank <= c.sampled_len()) return {};
  return {"low_rank", std::to_string(c.low_rank) + " exceeds the " +
                          std::to_string(c.sampled_len()) +
                          " sampled tokens L = min(model.max_len, low_rank*rank_multi)"};
}

}  // namespace

extern constinit const AttentionKindSpec kPrimalAttentionKind =
    attention_kind_spec<PrimalAttention>(AttentionKind::kPrimal, "PRIMAL", /*ksvd_loss=*/true, "",
                                         &primal_gemm_flops, &primal_config_problem);

}  // namespace primal
