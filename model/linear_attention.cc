#include "model/linear_attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "core/blas.h"
#include "core/parallel.h"
#include "core/progress.h"
#include "core/reduce.h"
#include "model/attention_kinds.h"

namespace primal {

namespace {

// Keeps D_n away from 0 where every feature is tiny (fast-transformers' value).
constexpr double kLinearAttentionEps = 1e-6;

// phi(x) = elu(x) + 1: x + 1 for x > 0, exp(x) otherwise; always positive.
template <typename T>
T phi(T x) {
  return x > T(0) ? x + T(1) : std::exp(x);
}
// phi'(x) from f = phi(x): 1 where x > 0 (f > 1), else exp(x) = f. A padded position's f = 0
// gives 0.
template <typename T>
T phi_grad_of(T f) {
  return f > T(1) ? T(1) : f;
}

// Zeroes the entries above the diagonal of a rows x rows block (leading dimension ld): the
// keys after each query.
template <typename T>
void mask_future(T* a, int rows, int ld) {
  for (int i = 0; i < rows; ++i)
    std::fill(a + int64_t(i) * ld + i + 1, a + int64_t(i) * ld + rows, T(0));
}

}  // namespace

template <typename T>
LinearAttention<T>::LinearAttention(ParameterStore<T>& params, const std::string& name, int width,
                                    int heads, TensorParallelGroup* tp, int block)
    : qkv_(params, name + ".qkv", width, 3 * width, {Split::kColumn, 3}, tp),
      proj_(params, name + ".proj", width, width, {Split::kRow}, tp),
      tp_(tp),
      heads_(heads / (tp ? tp->size() : 1)),
      head_dim_(width / heads),
      block_(block) {}

template <typename T>
Tensor<T> LinearAttention<T>::forward(Arena& arena, const Tensor<T>& x, const Sequence& seq,
                                      KsvdPartial&, LayerNorm<T>* norm) {
  // C: the width of this rank's heads (the model width without tensor parallelism).
  const int B = seq.B, N = seq.N, H = heads_, d = head_dim_, C = H * d, da = d + 1;
  const int c = block_;
  seq_ = seq;
  norm_ = norm;
  const Tensor<T> qkv = qkv_.forward(arena, norm ? norm->forward(arena, x) : x);
  blocks_ = seq.causal ? (N + c - 1) / c : 1;
  fq_ = arena.alloc<T>({B, H, N, d});
  fk_ = arena.alloc<T>({B, H, N, d});
  va_ = arena.alloc<T>({B, H, N, da});
  states_ = arena.alloc<T>({B * H, blocks_, d, da});
  denom_ = arena.alloc<T>({B, H, N});
  y_ = arena.alloc<T>({B, N, C});
  const int64_t scratch_size = int64_t(N) * da + int64_t(c) * c;  // num, A
  Tensor<T> scratch = arena.alloc<T>({omp_get_max_threads(), scratch_size});
#pragma omp parallel for schedule(static) if (int64_t(B) * N * C > kParallelGrain)
  for (int bh = 0; bh < B * H; ++bh) {
    const int b = bh / H, h = bh % H, len = seq.length(b);
    const T* q = qkv.data() + int64_t(b) * N * 3 * C + h * d;
    T* fq = fq_.data() + int64_t(bh) * N * d;
    T* fk = fk_.data() + int64_t(bh) * N * d;
    T* va = va_.data() + int64_t(bh) * N * da;
    T* S = states_.data() + int64_t(bh) * blocks_ * d * da;
    T* num = scratch.data() + int64_t(omp_get_thread_num()) * scratch_size;
    T* A = num + int64_t(N) * da;
    for (int n = 0; n < N; ++n) {
      const T* row = q + int64_t(n) * 3 * C;
      const bool real = n < len;
      for (int j = 0; j < d; ++j) {
        fq[int64_t(n) * d + j] = real ? phi(row[j]) : T(0);
        fk[int64_t(n) * d + j] = real ? phi(row[C + j]) : T(0);
        va[int64_t(n) * da + j] = row[2 * C + j];
      }
      va[int64_t(n) * da + d] = T(1);
    }
    if (!seq.causal) {
      gemm(Trans::kYes, Trans::kNo, d, da, N, T(1), fk, d, va, da, T(0), S, da);
      gemm(Trans::kNo, Trans::kNo, N, da, d, T(1), fq, d, S, da, T(0), num, da);
    } else {
      for (int k = 0; k < blocks_; ++k) {
        const int q0 = k * c, rows = std::min(c, N - q0);
        T* Sk = S + int64_t(k) * d * da;
        if (k == 0) {
          std::fill_n(Sk, int64_t(d) * da, T(0));
        } else {  // S_k = S_{k-1} + fk_{k-1}^T va_{k-1}
          std::copy_n(Sk - int64_t(d) * da, int64_t(d) * da, Sk);
          gemm(Trans::kYes, Trans::kNo, d, da, c, T(1), fk + int64_t(q0 - c) * d, d,
               va + int64_t(q0 - c) * da, da, T(1), Sk, da);
        }
        T* numk = num + int64_t(q0) * da;
        gemm(Trans::kNo, Trans::kNo, rows, da, d, T(1), fq + int64_t(q0) * d, d, Sk, da, T(0), numk,
             da);
        gemm(Trans::kNo, Trans::kYes, rows, rows, d, T(1), fq + int64_t(q0) * d, d,
             fk + int64_t(q0) * d, d, T(0), A, c);
        mask_future(A, rows, c);
        gemm(Trans::kNo, Trans::kNo, rows, da, rows, T(1), A, c, va + int64_t(q0) * da, da, T(1),
             numk, da);
      }
    }
    T* D = denom_.data() + int64_t(bh) * N;
    T* y = y_.data() + int64_t(b) * N * C + h * d;
    for (int n = 0; n < N; ++n) {
      D[n] = num[int64_t(n) * da + d] + T(kLinearAttentionEps);
      for (int j = 0; j < d; ++j) y[int64_t(n) * C + j] = num[int64_t(n) * da + j] / D[n];
    }
  }
  return proj_.forward(arena, y_);
}

template <typename T>
void LinearAttention<T>::backward(Arena& arena, const Tensor<T>& dout, const Tensor<T>& dx,
                                  const KsvdGrad&) {
  const int B = seq_.B, N = seq_.N, H = heads_, d = head_dim_, C = H * d, da = d + 1;
  const int c = block_;
  Tensor<T> dy = arena.zeros<T>({B, N, C});
  proj_.backward(arena, dout, dy);
  Tensor<T> dqkv = arena.alloc<T>({B, N, 3 * C});
  const int64_t scratch_size = int64_t(N) * da + 2 * int64_t(c) * c + int64_t(d) * da;
  Tensor<T> scratch = arena.alloc<T>({omp_get_max_threads(), scratch_size});
#pragma omp parallel for schedule(static) if (int64_t(B) * N * C > kParallelGrain)
  for (int bh = 0; bh < B * H; ++bh) {
    const int b = bh / H, h = bh % H;
    const T* fq = fq_.data() + int64_t(bh) * N * d;
    const T* fk = fk_.data() + int64_t(bh) * N * d;
    const T* va = va_.data() + int64_t(bh) * N * da;
    const T* S = states_.data() + int64_t(bh) * blocks_ * d * da;
    const T* D = denom_.data() + int64_t(bh) * N;
    const T* dyh = dy.data() + int64_t(b) * N * C + h * d;
    const T* yh = y_.data() + int64_t(b) * N * C + h * d;
    T* dq = dqkv.data() + int64_t(b) * N * 3 * C + h * d;
    T* dk = dq + C;
    T* dv = dq + 2 * C;
    T* dnum = scratch.data() + int64_t(omp_get_thread_num()) * scratch_size;
    T* A = dnum + int64_t(N) * da;
    T* G = A + int64_t(c) * c;
    T* R = G + int64_t(c) * c;
    for (int n = 0; n < N; ++n) {
      const T* g = dyh + int64_t(n) * C;
      T* dn = dnum + int64_t(n) * da;
      for (int j = 0; j < d; ++j) dn[j] = g[j] / D[n];
      dn[d] = -dot(g, yh + int64_t(n) * C, d) / D[n];
    }
    if (!seq_.causal) {
      gemm(Trans::kNo, Trans::kYes, N, d, da, T(1), dnum, da, S, da, T(0), dq, 3 * C);
      gemm(Trans::kYes, Trans::kNo, d, da, N, T(1), fq, d, dnum, da, T(0), R, da);
      gemm(Trans::kNo, Trans::kYes, N, d, da, T(1), va, da, R, da, T(0), dk, 3 * C);
      gemm(Trans::kNo, Trans::kNo, N, d, d, T(1), fk, d, R, da, T(0), dv, 3 * C);
    } else {
      std::fill_n(R, int64_t(d) * da, T(0));  // the state's gradient from the later blocks
      for (int k = blocks_ - 1; k >= 0; --k) {
        const int q0 = k * c, rows = std::min(c, N - q0);
        const T* fqk = fq + int64_t(q0) * d;
        const T* fkk = fk + int64_t(q0) * d;
        const T* vak = va + int64_t(q0) * da;
        const T* dnk = dnum + int64_t(q0) * da;
        T* dqk = dq + int64_t(q0) * 3 * C;
        T* dkk = dk + int64_t(q0) * 3 * C;
        T* dvk = dv + int64_t(q0) * 3 * C;
        gemm(Trans::kNo, Trans::kYes, rows, d, da, T(1), dnk, da, S + int64_t(k) * d * da, da, T(0),
             dqk, 3 * C);
        gemm(Trans::kNo, Trans::kYes, rows, rows, d, T(1), fqk, d, fkk, d, T(0), A, c);
        mask_future(A, rows, c);
        gemm(Trans::kNo, Trans::kYes, rows, rows, da, T(1), dnk, da, vak, da, T(0), G, c);
        mask_future(G, rows, c);
        gemm(Trans::kNo, Trans::kNo, rows, d, rows, T(1), G, c, fkk, d, T(1), dqk, 3 * C);
        gemm(Trans::kNo, Trans::kYes, rows, d, da, T(1), vak, da, R, da, T(0), dkk, 3 * C);
        gemm(Trans::kYes, Trans::kNo, rows, d, rows, T(1), G, c, fqk, d, T(1), dkk, 3 * C);
        gemm(Trans::kNo, Trans::kNo, rows, d, d, T(1), fkk, d, R, da, T(0), dvk, 3 * C);
        gemm(Trans::kYes, Trans::kNo, rows, d, rows, T(1), A, c, dnk, da, T(1), dvk, 3 * C);
        if (k > 0) gemm(Trans::kYes, Trans::kNo, d, da, rows, T(1), fqk, d, dnk, da, T(1), R, da);
      }
    }
    for (int n = 0; n < N; ++n)
      for (int j = 0; j < d; ++j) {
        dq[int64_t(n) * 3 * C + j] *= phi_grad_of(fq[int64_t(n) * d + j]);
        dk[int64_t(n) * 3 * C + j] *= phi_grad_of(fk[int64_t(n) * d + j]);
      }
    progress();  // the gradient buckets in flight move between heads
  }
  input_projection_backward(arena, qkv_, dqkv, norm_, tp_, dx);
}

template <typename T>
int64_t LinearAttention<T>::decode_state_size(int) const {
  return int64_t(heads_) * head_dim_ * (head_dim_ + 1);
}

template <typename T>
int64_t LinearAttention<T>::decode_state_read(int) const {
  return decode_state_size(0);
}

template <typename T>
Tensor<T> LinearAttention<T>::decode_step(Arena& arena, const Tensor<T>& x, std::span<T> state,
                                          int position) {
  const int H = heads_, d = head_dim_, C = H * d, da = d + 1;
  if (position == 0) std::fill(state.begin(), state.end(), T(0));
  Tensor<T> qkv = qkv_.forward(arena, x);  // [1, 3C]: q | k | v, head-major
  Tensor<T> y = arena.alloc<T>({1, C});
  Tensor<T> features = arena.alloc<T>({3, da});  // fq, fk, va of one head
  Tensor<T> num = arena.alloc<T>({da});
  T* fq = features.data();
  T* fk = fq + da;
  T* va = fk + da;
  for (int h = 0; h < H; ++h) {
    const T* row = qkv.data() + h * d;
    for (int j = 0; j < d; ++j) {
      fq[j] = phi(row[j]);
      fk[j] = phi(row[C + j]);
      va[j] = row[2 * C + j];
    }
    va[d] = T(1);
    T* S = state.data() + int64_t(h) * d * da;
    gemm(Trans::kNo, Trans::kNo, d, da, 1, T(1), fk, 1, va, da, T(1), S, da);  // S += fk va^T
    gemm(Trans::kNo, Trans::kNo, 1, da, d, T(1), fq, d, S, da, T(0), num.data(), da);
    const T D = num[d] + T(kLinearAttentionEps);
    for (int j = 0; j < d; ++j) y[h * d + j] = num[j] / D;
  }
  return proj_.forward(arena, y);
}

template <typename T>
void LinearAttention<T>::analysed_matrix(int b, int h, int n, std::vector<double>& out) const {
  const int64_t N = seq_.N, d = head_dim_, bh = int64_t(b) * heads_ + h;
  const T* fq = fq_.data() + bh * N * d;
  const T* fk = fk_.data() + bh * N * d;
  const T* D = denom_.data() + bh * N;
  out.assign(size_t(n) * n, 0.0);
  for (int i = 0; i < n; ++i) {
    const int keys = seq_.causal ? i + 1 : n;
    for (int j = 0; j < keys; ++j) {
      double acc = 0;
      for (int64_t t = 0; t < d; ++t) acc += double(fq[i * d + t]) * double(fk[j * d + t]);
      out[size_t(i) * n + j] = acc / double(D[i]);
    }
  }
}

template class LinearAttention<float>;
template class LinearAttention<double>;

namespace {

// qkv 6RC^2, proj 2RC^2, and per (b, h) the products of forward and backward above, block by
// block (rows r of d-wide features, da = d + 1).
AttentionFlops linear_gemm_flops(const ModelConfig& c, int64_t B, int64_t S) {
  const int64_t R = B * S, C = c.width, H = c.heads, d = c.head_dim(), da = d + 1;
  int64_t forward = 0, backward = 0;  // of one (b, h)
  if (!c.causal()) {
    forward = 4 * S * d * da;
    backward = 6 * S * d * da + 2 * S * d * d;
  } else {
    const int64_t blocks = (S + kLinearAttentionBlock - 1) / kLinearAttentionBlock;
    for (int64_t k = 0; k < blocks; ++k) {
      const int64_t r = std::min<int64_t>(kLinearAttentionBlock, S - k * kLinearAttentionBlock);
      forward += 2 * r * d * da + 2 * r * r * d + 2 * r * r * da;
      if (k > 0) forward += 2 * kLinearAttentionBlock * d * da;  // the state update before it
      backward += 4 * r * d * da + 8 * r * r * d + 2 * r * r * da + 2 * r * d * d;
      if (k > 0) backward += 2 * r * d * da;  // the state's gradient for the blocks before it
    }
  }
  return {.forward = 8 * R * C * C + B * H * forward,
          .backward = 16 * R * C * C + B * H * backward};
}

}  // namespace

extern constinit const AttentionKindSpec kLinearAttentionKind =
    attention_kind_spec<LinearAttention>(AttentionKind::kLinear, "LINEAR", /*ksvd_loss=*/false,
                                         "2,2", &linear_gemm_flops);

}  // namespace primal
