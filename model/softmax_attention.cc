#include "model/softmax_attention.h"

#include <omp.h>

#include "core/parallel.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/blas.h"
#include "core/progress.h"
#include "core/reduce.h"
#include "core/softmax.h"
#include "model/attention_kinds.h"

namespace primal {

template <typename T>
SoftmaxAttention<T>::SoftmaxAttention(ParameterStore<T>& params, const std::string& name, int width,
                                      int heads, TensorParallelGroup* tp)
    : qkv_(params, name + ".qkv", width, 3 * width, {Split::kColumn, 3}, tp),
      proj_(params, name + ".proj", width, width, {Split::kRow}, tp),
      tp_(tp),
      heads_(heads / (tp ? tp->size() : 1)),
      head_dim_(width / heads) {}

namespace {

// Query rows per block and the keys a block's queries may attend to: with the causal mask,
// blocks of kQueryBlock and the keys up to the block's last query; without it one block of
// all rows and all keys (the GEMMs, so the FLOP count, do not depend on the padding).
int query_block(const Sequence& seq) {
  return seq.causal ? kQueryBlock : seq.N;
}
int key_end(const Sequence& seq, int query_end) {
  return seq.causal ? query_end : seq.N;
}

}  // namespace

template <typename T>
Tensor<T> SoftmaxAttention<T>::forward(Arena& arena, const Tensor<T>& x, const Sequence& seq,
                                       KsvdPartial&, LayerNorm<T>* norm) {
  // C: the width of this rank's heads (the model width without tensor parallelism).
  const int B = seq.B, N = seq.N, H = heads_, d = head_dim_, C = H * d;
  const T scale = T(1 / std::sqrt(double(d)));
  seq_ = seq;
  norm_ = norm;
  // The [B, H, N, N] attention matrices dwarf the normed input: this layer keeps it.
  qkv_out_ = qkv_.forward(arena, norm ? norm->forward(arena, x) : x);
  attn_ = arena.alloc<T>({B, H, N, N});
  Tensor<T> y = arena.alloc<T>({B, N, C});
  const int block = query_block(seq);
#pragma omp parallel for schedule(static) if (int64_t(B) * N * N > kParallelGrain)
  for (int bh = 0; bh < B * H; ++bh) {
    const int b = bh / H, h = bh % H, len = seq.length(b);
    const T* q = qkv_out_.data() + int64_t(b) * N * 3 * C + h * d;
    const T* k = q + C;
    const T* v = q + 2 * C;
    T* A = attn_.data() + int64_t(bh) * N * N;
    T* yh = y.data() + int64_t(b) * N * C + h * d;
    for (int q0 = 0; q0 < N; q0 += block) {
      const int rows = std::min(block, N - q0), keys = key_end(seq, q0 + rows);
      T* Ab = A + int64_t(q0) * N;
      gemm(Trans::kNo, Trans::kYes, rows, keys, d, scale, q + int64_t(q0) * 3 * C, 3 * C, k, 3 * C,
           T(0), Ab, N);
      for (int n = q0; n < q0 + rows; ++n) {
        T* row = A + int64_t(n) * N;
        const int row_keys = n >= len ? 0 : (seq.causal ? std::min(n + 1, len) : len);
        softmax_row(row, row_keys);
        std::fill(row + row_keys, row + N, T(0));
      }
      gemm(Trans::kNo, Trans::kNo, rows, d, keys, T(1), Ab, N, v, 3 * C, T(0), yh + int64_t(q0) * C,
           C);
    }
  }
  return proj_.forward(arena, y);
}

template <typename T>
void SoftmaxAttention<T>::backward(Arena& arena, const Tensor<T>& dout, const Tensor<T>& dx,
                                   const KsvdGrad&) {
  const int B = seq_.B, N = seq_.N, H = heads_, d = head_dim_, C = H * d;
  const T scale = T(1 / std::sqrt(double(d)));
  Tensor<T> dy = arena.zeros<T>({B, N, C});
  proj_.backward(arena, dout, dy);
  Tensor<T> dqkv = arena.alloc<T>({B, N, 3 * C});
  const int block = query_block(seq_);
  Tensor<T> scratch = arena.alloc<T>({omp_get_max_threads(), block, N});
#pragma omp parallel for schedule(static) if (int64_t(B) * N * N > kParallelGrain)
  for (int bh = 0; bh < B * H; ++bh) {
    const int b = bh / H, h = bh % H;
    const int64_t offset = int64_t(b) * N * 3 * C + h * d;
    const T* q = qkv_out_.data() + offset;
    const T* k = q + C;
    const T* v = q + 2 * C;
    T* dq = dqkv.data() + offset;
    T* dk = dq + C;
    T* dv = dq + 2 * C;
    const T* A = attn_.data() + int64_t(bh) * N * N;
    const T* dyh = dy.data() + int64_t(b) * N * C + h * d;
    T* dS = scratch.data() + int64_t(omp_get_thread_num()) * block * N;
    // dk and dv add up over the query blocks that see each key.
    for (int n = 0; n < N; ++n) {
      std::fill_n(dk + int64_t(n) * 3 * C, d, T(0));
      std::fill_n(dv + int64_t(n) * 3 * C, d, T(0));
    }
    for (int q0 = 0; q0 < N; q0 += block) {
      const int rows = std::min(block, N - q0), keys = key_end(seq_, q0 + rows);
      T* dqb = dq + int64_t(q0) * 3 * C;
      const T* Ab = A + int64_t(q0) * N;
      const T* dyb = dyh + int64_t(q0) * C;
      gemm(Trans::kNo, Trans::kYes, rows, keys, d, T(1), dyb, C, v, 3 * C, T(0), dS, N);
      gemm(Trans::kYes, Trans::kNo, keys, d, rows, T(1), Ab, N, dyb, C, T(1), dv, 3 * C);
      for (int n = 0; n < rows; ++n) {
        const T* a = Ab + int64_t(n) * N;
        T* ds = dS + int64_t(n) * N;
        const T ds_dot_a = dot(ds, a, keys);
        for (int j = 0; j < keys; ++j) ds[j] = a[j] * (ds[j] - ds_dot_a);
      }
      gemm(Trans::kNo, Trans::kNo, rows, d, keys, scale, dS, N, k, 3 * C, T(0), dqb, 3 * C);
      gemm(Trans::kYes, Trans::kNo, keys, d, rows, scale, dS, N, q + int64_t(q0) * 3 * C, 3 * C,
           T(1), dk, 3 * C);
    }
    progress();  // the gradient buckets in flight move between heads
  }
  input_projection_backward(arena, qkv_, dqkv, norm_, tp_, dx);
  // softmax(q (k + c)^T) = softmax(q k^T) for a key bias shift c: the key bias gradient is
  // exactly zero (sum_j dS[n, j] = 0 for every row). Computed, it is rounding noise, which
  // Adam turns into lr-sized steps that differ from one parallel layout to another; so it is
  // written as the exact value.
  std::fill_n(qkv_.bias()->grad.data() + C, C, T(0));
}

template <typename T>
int64_t SoftmaxAttention<T>::decode_state_size(int max_len) const {
  return 2 * int64_t(max_len) * heads_ * head_dim_;
}

template <typename T>
int64_t SoftmaxAttention<T>::decode_state_read(int position) const {
  return 2 * int64_t(position) * heads_ * head_dim_;
}

template <typename T>
Tensor<T> SoftmaxAttention<T>::decode_step(Arena& arena, const Tensor<T>& x, std::span<T> state,
                                           int position) {
  const int n = position, H = heads_, d = head_dim_, C = H * d, keys = n + 1;
  const int max_len = int(int64_t(state.size()) / (2 * C));
  const T scale = T(1 / std::sqrt(double(d)));
  Tensor<T> qkv = qkv_.forward(arena, x);  // [1, 3C]: q | k | v, head-major
  Tensor<T> y = arena.alloc<T>({1, C});
  Tensor<T> scores = arena.alloc<T>({max_len});  // one head's attention row
  for (int h = 0; h < H; ++h) {
    const T* q = qkv.data() + h * d;
    T* kc = state.data() + int64_t(h) * max_len * d;
    T* vc = kc + int64_t(max_len) * C;
    std::copy_n(q + C, d, kc + int64_t(n) * d);
    std::copy_n(q + 2 * C, d, vc + int64_t(n) * d);
    T* a = scores.data();
    gemm(Trans::kNo, Trans::kYes, 1, keys, d, scale, q, 3 * C, kc, d, T(0), a, keys);
    softmax_row(a, keys);
    gemm(Trans::kNo, Trans::kNo, 1, d, keys, T(1), a, keys, vc, d, T(0), y.data() + h * d, C);
  }
  return proj_.forward(arena, y);
}

template <typename T>
void softmax_attention_matrix(const SoftmaxAttention<T>& attn, int b, int h, int n,
                              std::vector<double>& out) {
  const Tensor<T>& A = attn.saved_attention();  // [B, H, N, N]
  const int64_t H = A.dim(1), N = A.dim(2);
  const T* a = A.data() + (int64_t(b) * H + h) * N * N;
  out.resize(size_t(n) * n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) out[size_t(i) * n + j] = double(a[int64_t(i) * N + j]);
}

template <typename T>
void SoftmaxAttention<T>::analysed_matrix(int b, int h, int n, std::vector<double>& out) const {
  softmax_attention_matrix(*this, b, h, n, out);
}

template class SoftmaxAttention<float>;
template class SoftmaxAttention<double>;
template void softmax_attention_matrix(const SoftmaxAttention<float>&, int, int, int,
                                       std::vector<double>&);
template void softmax_attention_matrix(const SoftmaxAttention<double>&, int, int, int,
                                       std::vector<double>&);

namespace {

// qkv 6RC^2, proj 2RC^2; per (b, h): q k^T and A v, 2 d per (query, key) pair each: S^2 pairs,
// or under the causal mask those of the query blocks (query_block, key_end).
AttentionFlops softmax_gemm_flops(const ModelConfig& c, int64_t B, int64_t S) {
  const int64_t R = B * S, C = c.width;
  int64_t pairs = S * S;
  if (c.causal()) {
    pairs = 0;
    for (int64_t q0 = 0; q0 < S; q0 += kQueryBlock) {
      const int64_t rows = std::min<int64_t>(kQueryBlock, S - q0);
      pairs += rows * (q0 + rows);
    }
  }
  const int64_t forward = 8 * R * C * C + 4 * B * pairs * C;
  return {.forward = forward, .backward = 2 * forward};  // d input and d weight of each
}

}  // namespace

extern constinit const AttentionKindSpec kSoftmaxAttentionKind =
    attention_kind_spec<SoftmaxAttention>(AttentionKind::kSoftmax, "SOFTMAX",
                                          /*ksvd_loss=*/false, "6,3", &softmax_gemm_flops);

}  // namespace primal
