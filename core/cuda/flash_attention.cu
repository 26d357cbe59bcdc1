// Kernels of core/cuda/flash_attention.h. The tile loops follow core/cuda/flash_plan.h (which
// tiles, which masked, the online softmax), as tests/gpu/flash_plan_test.cc's CPU emulation
// does; here they only gain shared memory and threads.
//
// Blocks of 256 threads (8 warps). Square tiles of kTile positions (64 for bf16 with d <= 64,
// 32 otherwise, which keeps the backward's shared memory within an A100's 163 KB); q, k, v, dy
// tiles of T and the fp32 accumulators (o, dk, dv, dq) live in shared memory, rows padded.
// Products of two tiles are tile_product: plain fp32 FMA for float (no TF32: the fp32 path is
// held to 1e-5), 16x16x16 WMMA tensor-core fragments with fp32 accumulation for bf16. Element-
// wise steps (mask, softmax, dS) run on the fp32 scores in shared memory between products.
#include <mma.h>

#include <cmath>
#include <string>
#include <type_traits>

#include "core/cuda/flash_attention.h"
#include "core/cuda/flash_plan.h"
#include "core/cuda/kernel_util.cuh"

namespace primal::cuda {
namespace {

using detail::from_f;
using detail::to_f;
using detail::warp_max;
using detail::warp_sum;
using flash::SoftmaxRow;
using flash::TilePlan;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// Tile sizes and the shared-memory layout for element type T and padded head dimension D.
template <typename T, int D>
struct Tiling {
  static constexpr bool kBf16 = std::is_same_v<T, bf16>;
  static constexpr int kTile = kBf16 && D <= 64 ? 64 : 32;
  // Row padding: 8 elements keep every 16 x 16 WMMA fragment 32-byte aligned (bf16); one float
  // spreads the fp32 path's column reads over the banks.
  static constexpr int kPad = kBf16 ? 8 : 1;
  static constexpr int kLd = D + kPad;       // a tile of rows of D: q, k, v, dy, o, dk, dv, dq
  static constexpr int kLdS = kTile + kPad;  // a tile x tile block: S (then dP), P, dS
  static constexpr size_t aligned(size_t bytes) { return (bytes + 127) / 128 * 128; }
  static constexpr size_t kRowsT = aligned(size_t(kTile) * kLd * sizeof(T));
  static constexpr size_t kRowsF = aligned(size_t(kTile) * kLd * sizeof(float));
  static constexpr size_t kSquareT = aligned(size_t(kTile) * kLdS * sizeof(T));
  static constexpr size_t kSquareF = aligned(size_t(kTile) * kLdS * sizeof(float));
  static constexpr size_t kVec = aligned(size_t(kTile) * sizeof(float));
  // forward: q k v | o | S | P | m l;  backward: q dy k v | S | P dS | L D | accumulators
  static constexpr size_t kForwardBytes = 3 * kRowsT + kRowsF + kSquareF + kSquareT + 2 * kVec;
  static constexpr size_t backward_bytes(int accumulators) {
    return 4 * kRowsT + accumulators * kRowsF + kSquareF + 2 * kSquareT + 2 * kVec;
  }
};

// Consecutive pieces of the dynamic shared memory.
struct Carve {
  unsigned char* p;
  template <typename U>
  __device__ U* take(size_t bytes) {
    U* r = reinterpret_cast<U*>(p);
    p += bytes;
    return r;
  }
};

// ---- the product of two tiles -----------------------------------------------------------------
// C [M x N] (fp32, shared, ldc) = (accumulate ? C : 0) + op(A) op(B), A and B in shared memory:
// op(A) = A stored [M x K] (lda), or with kTransA the transpose of A stored [K x M]; op(B) = B
// stored [K x N], or with kTransB the transpose of B stored [N x K]. The whole block computes
// it; the caller synchronises before C is read.

// fp32: one output element per thread at a time, K in order (the same sums on every run).
template <bool kTransA, bool kTransB, int M, int N, int K>
__device__ void tile_product(const float* A, int lda, const float* B, int ldb, float* C, int ldc,
                             bool accumulate) {
  for (int e = threadIdx.x; e < M * N; e += kThreads) {
    const int i = e / N, j = e % N;
    float acc = accumulate ? C[i * ldc + j] : 0.f;
#pragma unroll 8
    for (int k = 0; k < K; ++k)
      acc = fmaf(kTransA ? A[k * lda + i] : A[i * lda + k],
                 kTransB ? B[j * ldb + k] : B[k * ldb + j], acc);
    C[i * ldc + j] = acc;
  }
}

// bf16: tensor cores. Warp w computes the 16 x 16 output fragments w, w + 8, ...; a transposed
// operand is read as a column-major fragment, so no data moves.
template <bool kTransA, bool kTransB, int M, int N, int K>
__device__ void tile_product(const bf16* A, int lda, const bf16* B, int ldb, float* C, int ldc,
                             bool accumulate) {
  namespace wmma = nvcuda::wmma;
  using LayoutA = std::conditional_t<kTransA, wmma::col_major, wmma::row_major>;
  using LayoutB = std::conditional_t<kTransB, wmma::col_major, wmma::row_major>;
  static_assert(M % 16 == 0 && N % 16 == 0 && K % 16 == 0, "tile_product: 16 x 16 x 16 fragments");
  for (int f = threadIdx.x / 32; f < (M / 16) * (N / 16); f += kWarps) {
    const int i0 = f / (N / 16) * 16, j0 = f % (N / 16) * 16;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
    float* cp = C + i0 * ldc + j0;
    if (accumulate)
      wmma::load_matrix_sync(c, cp, ldc, wmma::mem_row_major);
    else
      wmma::fill_fragment(c, 0.f);
    for (int k0 = 0; k0 < K; k0 += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, LayoutA> a;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, LayoutB> b;
      wmma::load_matrix_sync(a, kTransA ? A + k0 * lda + i0 : A + i0 * lda + k0, lda);
      wmma::load_matrix_sync(b, kTransB ? B + j0 * ldb + k0 : B + k0 * ldb + j0, ldb);
      wmma::mma_sync(c, a, b, c);
    }
    wmma::store_matrix_sync(cp, c, ldc, wmma::mem_row_major);
  }
}

// ---- tiles in and out ---------------------------------------------------------------------------

// dst [kTile x D] (ld) = rows [row0, row0 + kTile) and columns [0, d) of the matrix at src (row
// stride ld_src, N rows); 0 past N and past d, so that the padding adds nothing to a product.
template <int kTile, int D, typename T>
__device__ void load_rows(const T* src, int64_t ld_src, int row0, int N, int d, T* dst, int ld) {
  for (int e = threadIdx.x; e < kTile * D; e += kThreads) {
    const int i = e / D, c = e % D;
    dst[i * ld + c] = row0 + i < N && c < d ? src[int64_t(row0 + i) * ld_src + c] : from_f<T>(0.f);
  }
}

// Rows [row0, row0 + kTile) within N and columns [0, d) of dst (row stride ld_dst) =
// factor(i) src[i, c].
template <int kTile, int D, typename T, typename F>
__device__ void store_rows(const float* src, int ld, F factor, int row0, int N, int d, T* dst,
                           int64_t ld_dst) {
  for (int e = threadIdx.x; e < kTile * D; e += kThreads) {
    const int i = e / D, c = e % D;
    if (row0 + i < N && c < d)
      dst[int64_t(row0 + i) * ld_dst + c] = from_f<T>(src[i * ld + c] * factor(i));
  }
}

template <int kTile, int D>
__device__ void zero_rows(float* dst, int ld) {
  for (int e = threadIdx.x; e < kTile * D; e += kThreads) dst[e / D * ld + e % D] = 0.f;
}

// The scaled score q_n . k_j / sqrt(d) of a tile element: -inf where the tile needs the mask
// and query n does not attend to key j.
__device__ __forceinline__ float masked_score(float dot, float scale, bool mask, int n, int j,
                                              int len, bool causal) {
  return mask && !flash::attends(n, j, len, causal) ? -INFINITY : dot * scale;
}

// The (sample, head) of a block, blockIdx.y = b H + h: its real length, and where its head's
// columns start in qkv [B, N, 3C] (q; k at + C, v at + 2 C) and in a [B, N, C] tensor (y, dy).
struct HeadBlock {
  int bh, b, h, len;
  int64_t C, qkv_at, rows_at;
  __device__ HeadBlock(const int32_t* lengths, int N, int H, int d)
      : bh(int(blockIdx.y)),
        b(bh / H),
        h(bh % H),
        len(lengths ? lengths[b] : N),
        C(int64_t(H) * d),
        qkv_at(int64_t(b) * N * 3 * C + int64_t(h) * d),
        rows_at(int64_t(b) * N * C + int64_t(h) * d) {}
};

// ---- forward ------------------------------------------------------------------------------------
// Block (query tile, b h). The query tiles of a causal sample run from the last (the most key
// tiles) to the first: the long blocks start first.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    flash_forward_kernel(const T* qkv, const int32_t* lengths, bool causal, int N, int H, int d,
                         float scale, T* y, float* logsumexp) {
  using Ti = Tiling<T, D>;
  constexpr int tile = Ti::kTile, ld = Ti::kLd, lds = Ti::kLdS;
  extern __shared__ __align__(128) unsigned char smem[];
  Carve carve{smem};
  T* q = carve.take<T>(Ti::kRowsT);
  T* k = carve.take<T>(Ti::kRowsT);
  T* v = carve.take<T>(Ti::kRowsT);
  float* o = carve.take<float>(Ti::kRowsF);
  float* s = carve.take<float>(Ti::kSquareF);
  T* p = carve.take<T>(Ti::kSquareT);
  float* m = carve.take<float>(Ti::kVec);
  float* l = carve.take<float>(Ti::kVec);

  const TilePlan plan{N, tile, causal};
  const int qt = plan.tiles() - 1 - int(blockIdx.x), q0 = qt * tile;
  const HeadBlock hb(lengths, N, H, d);
  const int len = hb.len, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t C = hb.C;
  const T* base = qkv + hb.qkv_at;

  load_rows<tile, D>(base, 3 * C, q0, N, d, q, ld);
  zero_rows<tile, D>(o, ld);
  for (int i = threadIdx.x; i < tile; i += kThreads) {
    m[i] = SoftmaxRow<float>{}.m;
    l[i] = SoftmaxRow<float>{}.l;
  }
  for (int kt = 0; kt < plan.key_end(qt, len); ++kt) {
    const int k0 = kt * tile;
    __syncthreads();  // the last tile's P v is done with v and p
    load_rows<tile, D>(base + C, 3 * C, k0, N, d, k, ld);
    load_rows<tile, D>(base + 2 * C, 3 * C, k0, N, d, v, ld);
    __syncthreads();
    tile_product<false, true, tile, tile, D>(q, ld, k, ld, s, lds, false);  // S = q k^T
    __syncthreads();
    // One warp per row: the tile's max, the rescale of l and of o's row, the weights P.
    const bool mask = plan.needs_mask(qt, kt, len);
    for (int i = warp; i < tile; i += kWarps) {
      float score[tile / 32], tile_max = -INFINITY;
      for (int c = 0; c < tile / 32; ++c) {
        const int jj = lane + 32 * c;
        score[c] = masked_score(s[i * lds + jj], scale, mask, q0 + i, k0 + jj, len, causal);
        tile_max = fmaxf(tile_max, score[c]);
      }
      SoftmaxRow<float> row{m[i], l[i]};
      const float alpha = flash::softmax_rescale(row, warp_max(tile_max));
      float sum = 0;
      for (int c = 0; c < tile / 32; ++c) {
        const float w = flash::softmax_weight(row, score[c]);
        p[i * lds + lane + 32 * c] = from_f<T>(w);
        sum += w;
      }
      flash::softmax_add(row, warp_sum(sum));
      for (int c = lane; c < D; c += 32) o[i * ld + c] *= alpha;
      __syncwarp();  // every lane has read m[i], l[i]
      if (lane == 0) {
        m[i] = row.m;
        l[i] = row.l;
      }
    }
    __syncthreads();
    tile_product<false, false, tile, D, tile>(p, lds, v, ld, o, ld, true);  // o += P v
  }
  __syncthreads();
  // y = o / l;  logsumexp = m + log l  (a row without keys: y = 0, +inf)
  store_rows<tile, D>(
      o, ld,
      [&](int i) {
        return flash::softmax_normaliser(SoftmaxRow<float>{m[i], l[i]});
      },
      q0, N, d, y + hb.rows_at, C);
  for (int i = threadIdx.x; i < tile && q0 + i < N; i += kThreads)
    logsumexp[int64_t(hb.bh) * N + q0 + i] =
        flash::softmax_logsumexp(SoftmaxRow<float>{m[i], l[i]});
}

// ---- backward -----------------------------------------------------------------------------------

// D[b, h, n] = sum_c dy[b, n, h d + c] y[b, n, h d + c]: one warp per (b, n, h).
template <typename T>
__global__ void flash_row_dot_kernel(const T* y, const T* dy, int N, int H, int d, float* D,
                                     int64_t vectors) {
  const int64_t w = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (w >= vectors) return;  // whole warps
  const int64_t row = w / H;
  const int h = int(w % H);
  const int64_t at = row * H * d + int64_t(h) * d;
  float sum = 0;
  for (int c = lane; c < d; c += 32) sum += to_f(dy[at + c]) * to_f(y[at + c]);
  sum = warp_sum(sum);
  if (lane == 0) D[(row / N * H + h) * N + row % N] = sum;
}

// What both backward kernels share. Shared memory: the tiles of q, dy, k, v; the scores S (then
// dP), P and dS of one tile pair; a query tile's logsumexp and D (+inf and 0 past N: P = 0
// there); then the kernel's own fp32 accumulators (dk and dv, or dq).
template <typename T, int D>
struct BackwardTiles {
  using Ti = Tiling<T, D>;
  T *q, *g, *k, *v;  // g: dy
  float* s;          // S, then dP
  T *p, *ds;
  float *lse, *Drow;
  float* accumulators;

  __device__ explicit BackwardTiles(unsigned char* smem) {
    Carve carve{smem};
    q = carve.take<T>(Ti::kRowsT);
    g = carve.take<T>(Ti::kRowsT);
    k = carve.take<T>(Ti::kRowsT);
    v = carve.take<T>(Ti::kRowsT);
    s = carve.take<float>(Ti::kSquareF);
    p = carve.take<T>(Ti::kSquareT);
    ds = carve.take<T>(Ti::kSquareT);
    lse = carve.take<float>(Ti::kVec);
    Drow = carve.take<float>(Ti::kVec);
    accumulators = reinterpret_cast<float*>(carve.p);
  }
  __device__ float* accumulator(int i) const {
    return accumulators + i * Ti::kRowsF / sizeof(float);
  }

  __device__ void load_query_rows(const T* base, const T* dy_base, const float* logsumexp,
                                  const float* row_dots, int64_t bh, int q0, int N, int d,
                                  int64_t C) {
    load_rows<Ti::kTile, D>(base, 3 * C, q0, N, d, q, Ti::kLd);
    load_rows<Ti::kTile, D>(dy_base, C, q0, N, d, g, Ti::kLd);
    for (int i = threadIdx.x; i < Ti::kTile; i += kThreads) {
      const bool in = q0 + i < N;
      lse[i] = in ? logsumexp[bh * N + q0 + i] : INFINITY;
      Drow[i] = in ? row_dots[bh * N + q0 + i] : 0.f;
    }
  }
  __device__ void load_key_rows(const T* base, int k0, int N, int d, int64_t C) {
    load_rows<Ti::kTile, D>(base + C, 3 * C, k0, N, d, k, Ti::kLd);
    load_rows<Ti::kTile, D>(base + 2 * C, 3 * C, k0, N, d, v, Ti::kLd);
  }

  // With q, dy, k, v of a tile pair loaded (and synchronised): S = q k^T;
  // P = exp(S scale - logsumexp), masked;  dP = dy v^T;  dS = P (dP - D). Ends synchronised,
  // P and dS ready for the kernel's own products.
  __device__ void probs_and_score_grad(bool mask, int q0, int k0, int len, bool causal,
                                       float scale) {
    constexpr int tile = Ti::kTile, ld = Ti::kLd, lds = Ti::kLdS;
    tile_product<false, true, tile, tile, D>(q, ld, k, ld, s, lds, false);  // S = q k^T
    __syncthreads();
    for (int e = threadIdx.x; e < tile * tile; e += kThreads) {
      const int i = e / tile, jj = e % tile;
      const float score = masked_score(s[i * lds + jj], scale, mask, q0 + i, k0 + jj, len, causal);
      p[i * lds + jj] = from_f<T>(flash::softmax_prob(score, lse[i]));
    }
    __syncthreads();  // S is read: its space takes dP
    tile_product<false, true, tile, tile, D>(g, ld, v, ld, s, lds, false);  // dP = dy v^T
    __syncthreads();
    for (int e = threadIdx.x; e < tile * tile; e += kThreads) {
      const int i = e / tile, jj = e % tile;
      ds[i * lds + jj] = from_f<T>(to_f(p[i * lds + jj]) * (s[i * lds + jj] - Drow[i]));
    }
    __syncthreads();
  }
};

// dk, dv of one key tile: block (key tile, b h), over the query tiles that attend to it.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    flash_backward_kv_kernel(const T* qkv, const int32_t* lengths, bool causal, const T* dy,
                             const float* logsumexp, const float* Drow, int N, int H, int d,
                             float scale, T* dqkv) {
  using Ti = Tiling<T, D>;
  constexpr int tile = Ti::kTile, ld = Ti::kLd, lds = Ti::kLdS;
  extern __shared__ __align__(128) unsigned char smem[];
  BackwardTiles<T, D> t(smem);
  float* dk = t.accumulator(0);
  float* dv = t.accumulator(1);

  const TilePlan plan{N, tile, causal};
  const int kt = blockIdx.x, k0 = kt * tile;
  const HeadBlock hb(lengths, N, H, d);
  const int len = hb.len;
  const int64_t C = hb.C;
  const T* base = qkv + hb.qkv_at;

  t.load_key_rows(base, k0, N, d, C);
  zero_rows<tile, D>(dk, ld);
  zero_rows<tile, D>(dv, ld);
  for (int qt = plan.query_begin(kt); qt < plan.query_end(kt, len); ++qt) {
    const int q0 = qt * tile;
    __syncthreads();  // the last query tile's products are done with q, dy, P and dS
    t.load_query_rows(base, dy + hb.rows_at, logsumexp, Drow, hb.bh, q0, N, d, C);
    __syncthreads();
    t.probs_and_score_grad(plan.needs_mask(qt, kt, len), q0, k0, len, causal, scale);
    tile_product<true, false, tile, D, tile>(t.p, lds, t.g, ld, dv, ld, true);   // dv += P^T dy
    tile_product<true, false, tile, D, tile>(t.ds, lds, t.q, ld, dk, ld, true);  // dk += dS^T q
  }
  __syncthreads();
  T* out = dqkv + hb.qkv_at;
  store_rows<tile, D>(
      dk, ld, [&](int) { return scale; }, k0, N, d, out + C, 3 * C);
  store_rows<tile, D>(
      dv, ld, [](int) { return 1.f; }, k0, N, d, out + 2 * C, 3 * C);
}

// dq of one query tile: block (query tile, b h), over its key tiles (the last tile first).
template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    flash_backward_q_kernel(const T* qkv, const int32_t* lengths, bool causal, const T* dy,
                            const float* logsumexp, const float* Drow, int N, int H, int d,
                            float scale, T* dqkv) {
  using Ti = Tiling<T, D>;
  constexpr int tile = Ti::kTile, ld = Ti::kLd, lds = Ti::kLdS;
  extern __shared__ __align__(128) unsigned char smem[];
  BackwardTiles<T, D> t(smem);
  float* dq = t.accumulator(0);

  const TilePlan plan{N, tile, causal};
  const int qt = plan.tiles() - 1 - int(blockIdx.x), q0 = qt * tile;
  const HeadBlock hb(lengths, N, H, d);
  const int len = hb.len;
  const int64_t C = hb.C;
  const T* base = qkv + hb.qkv_at;

  t.load_query_rows(base, dy + hb.rows_at, logsumexp, Drow, hb.bh, q0, N, d, C);
  zero_rows<tile, D>(dq, ld);
  for (int kt = 0; kt < plan.key_end(qt, len); ++kt) {
    const int k0 = kt * tile;
    __syncthreads();  // the last key tile's products are done with k, v and dS
    t.load_key_rows(base, k0, N, d, C);
    __syncthreads();
    t.probs_and_score_grad(plan.needs_mask(qt, kt, len), q0, k0, len, causal, scale);
    tile_product<false, false, tile, D, tile>(t.ds, lds, t.k, ld, dq, ld, true);  // dq += dS k
  }
  __syncthreads();
  store_rows<tile, D>(
      dq, ld, [&](int) { return scale; }, q0, N, d, dqkv + hb.qkv_at, 3 * C);
}

// ---- launches -----------------------------------------------------------------------------------

// Calls f with std::integral_constant<int, D>, D = d rounded up to a kernel's head dimension.
template <typename F>
void with_head_dim(int d, const char* who, F&& f) {
  check(d >= 1 && d <= 128, std::string(who) + ": head dimension d = " + std::to_string(d) +
                                " is not supported (the kernels take 1 <= d <= 128)");
  if (d <= 16)
    f(std::integral_constant<int, 16>{});
  else if (d <= 32)
    f(std::integral_constant<int, 32>{});
  else if (d <= 64)
    f(std::integral_constant<int, 64>{});
  else
    f(std::integral_constant<int, 128>{});
}

// Opts the kernel in to `bytes` of dynamic shared memory (past the default 48 KB), within the
// device's limit per block.
template <typename Kernel>
void allow_shared_memory(Kernel kernel, size_t bytes, int d, const char* who) {
  int device = 0, limit = 0;
  PRIMAL_CUDA_CHECK(cudaGetDevice(&device));
  PRIMAL_CUDA_CHECK(
      cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  check(bytes <= size_t(limit), std::string(who) + ": d = " + std::to_string(d) + " needs " +
                                    std::to_string(bytes) + " bytes of shared memory per block, " +
                                    "the device allows " + std::to_string(limit));
  PRIMAL_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

dim3 tile_grid(const TilePlan& plan, int B, int H) {
  check(int64_t(B) * H <= 65535, "flash attention: more than 65535 (sample, head) pairs");
  return dim3(unsigned(plan.tiles()), unsigned(B * H));
}

float score_scale(int d) {
  return float(1 / std::sqrt(double(d)));
}

}  // namespace

template <typename T>
void flash_attention_forward(const Exec& ex, const T* qkv, const int32_t* lengths, bool causal,
                             int B, int N, int H, int d, T* y, float* logsumexp) {
  if (int64_t(B) * N * H == 0) return;
  with_head_dim(d, "flash_attention_forward", [&](auto D) {
    using Ti = Tiling<T, decltype(D)::value>;
    const auto kernel = flash_forward_kernel<T, decltype(D)::value>;
    allow_shared_memory(kernel, Ti::kForwardBytes, d, "flash_attention_forward");
    kernel<<<tile_grid({N, Ti::kTile, causal}, B, H), kThreads, Ti::kForwardBytes, ex.stream>>>(
        qkv, lengths, causal, N, H, d, score_scale(d), y, logsumexp);
    PRIMAL_CUDA_CHECK_LAUNCH("flash_forward_kernel");
  });
}

template <typename T>
void flash_attention_backward(const Exec& ex, const T* qkv, const int32_t* lengths, bool causal,
                              const T* y, const float* logsumexp, const T* dy, int B, int N, int H,
                              int d, T* dqkv) {
  if (int64_t(B) * N * H == 0) return;
  check(ex.allocator != nullptr, "flash_attention_backward: needs Exec::allocator");
  const int64_t vectors = int64_t(B) * N * H;
  DeviceBuffer<float> D_rows(*ex.allocator, vectors, ex.stream);
  flash_row_dot_kernel<<<detail::blocks_for(vectors * 32, kThreads, INT32_MAX), kThreads, 0,
                         ex.stream>>>(y, dy, N, H, d, D_rows.data(), vectors);
  PRIMAL_CUDA_CHECK_LAUNCH("flash_row_dot_kernel");
  with_head_dim(d, "flash_attention_backward", [&](auto D) {
    using Ti = Tiling<T, decltype(D)::value>;
    const dim3 grid = tile_grid({N, Ti::kTile, causal}, B, H);
    const auto kv = flash_backward_kv_kernel<T, decltype(D)::value>;
    allow_shared_memory(kv, Ti::backward_bytes(2), d, "flash_attention_backward");
    kv<<<grid, kThreads, Ti::backward_bytes(2), ex.stream>>>(
        qkv, lengths, causal, dy, logsumexp, D_rows.data(), N, H, d, score_scale(d), dqkv);
    PRIMAL_CUDA_CHECK_LAUNCH("flash_backward_kv_kernel");
    const auto q = flash_backward_q_kernel<T, decltype(D)::value>;
    allow_shared_memory(q, Ti::backward_bytes(1), d, "flash_attention_backward");
    q<<<grid, kThreads, Ti::backward_bytes(1), ex.stream>>>(
        qkv, lengths, causal, dy, logsumexp, D_rows.data(), N, H, d, score_scale(d), dqkv);
    PRIMAL_CUDA_CHECK_LAUNCH("flash_backward_q_kernel");
  });
}

double flash_attention_flops(bool is_bf16, int B, int N, int H, int d, bool causal) {
  double flops = 0;
  with_head_dim(d, "flash_attention_flops", [&](auto D) {
    const int tile = is_bf16 ? Tiling<bf16, decltype(D)::value>::kTile
                             : Tiling<float, decltype(D)::value>::kTile;
    const TilePlan plan{N, tile, causal};
    int64_t pairs = 0;
    for (int qt = 0; qt < plan.tiles(); ++qt) pairs += plan.key_end(qt, N);
    flops = 6 * 2.0 * tile * tile * d * double(pairs) * B * H;
  });
  return flops;
}

#define PRIMAL_INSTANTIATE(T)                                                                      \
  template void flash_attention_forward<T>(const Exec&, const T*, const int32_t*, bool, int, int,  \
                                           int, int, T*, float*);                                  \
  template void flash_attention_backward<T>(const Exec&, const T*, const int32_t*, bool, const T*, \
                                            const float*, const T*, int, int, int, int, T*);
PRIMAL_INSTANTIATE(float)
PRIMAL_INSTANTIATE(bf16)
#undef PRIMAL_INSTANTIATE

}  // namespace primal::cuda
