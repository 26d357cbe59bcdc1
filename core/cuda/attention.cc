#include "core/cuda/attention.h"

#include <cmath>
#include <type_traits>

namespace primal::cuda {
namespace {

void check_stream(const Blas& blas, const Exec& ex, const char* who) {
  check(blas.stream() == ex.stream, std::string(who) + ": Blas is bound to another stream");
  check(ex.allocator != nullptr, std::string(who) + ": needs Exec::allocator");
}

}  // namespace

template <typename T>
void softmax_attention_forward_reference(Blas& blas, const Exec& ex, const T* qkv,
                                         const int32_t* lengths, bool causal, int B, int N, int H,
                                         int d, T* probs, T* y) {
  check_stream(blas, ex, "softmax_attention_forward_reference");
  const int64_t C = int64_t(H) * d, NN = int64_t(N) * N;
  const float scale = float(1 / std::sqrt(double(d)));
  constexpr bool kFp32 = std::is_same_v<T, float>;
  DeviceBuffer<float> scores;
  if constexpr (!kFp32) scores = DeviceBuffer<float>(*ex.allocator, H * NN, ex.stream);
  for (int b = 0; b < B; ++b) {
    const T* q = qkv + int64_t(b) * N * 3 * C;
    T* P = probs + int64_t(b) * H * NN;
    float* S;
    if constexpr (kFp32)
      S = P;
    else
      S = scores.data();
    blas.gemm_strided_batched<T, float>(Trans::kNo, Trans::kYes, N, N, d, scale, q, 3 * C, d, q + C,
                                        3 * C, d, 0.f, S, N, NN, H);
    masked_softmax_forward<T>(ex, S, P, lengths ? lengths + b : nullptr, causal, 1, H, N);
    blas.gemm_strided_batched<T, T>(Trans::kNo, Trans::kNo, N, d, N, 1.f, P, N, NN, q + 2 * C,
                                    3 * C, d, 0.f, y + int64_t(b) * N * C, C, d, H);
  }
}

template <typename T>
void softmax_attention_backward_reference(Blas& blas, const Exec& ex, const T* qkv, const T* probs,
                                          const T* dy, int B, int N, int H, int d, T* dqkv) {
  check_stream(blas, ex, "softmax_attention_backward_reference");
  const int64_t C = int64_t(H) * d, NN = int64_t(N) * N;
  const float scale = float(1 / std::sqrt(double(d)));
  constexpr bool kFp32 = std::is_same_v<T, float>;
  DeviceBuffer<float> dP(*ex.allocator, H * NN, ex.stream);
  DeviceBuffer<T> dS_buffer;
  if constexpr (!kFp32) dS_buffer = DeviceBuffer<T>(*ex.allocator, H * NN, ex.stream);
  for (int b = 0; b < B; ++b) {
    const T* q = qkv + int64_t(b) * N * 3 * C;
    const T* P = probs + int64_t(b) * H * NN;
    const T* dyb = dy + int64_t(b) * N * C;
    T* dq = dqkv + int64_t(b) * N * 3 * C;
    T* dS;
    if constexpr (kFp32)
      dS = dP.data();
    else
      dS = dS_buffer.data();
    blas.gemm_strided_batched<T, float>(Trans::kNo, Trans::kYes, N, N, d, 1.f, dyb, C, d, q + 2 * C,
                                        3 * C, d, 0.f, dP.data(), N, NN, H);
    blas.gemm_strided_batched<T, T>(Trans::kYes, Trans::kNo, N, d, N, 1.f, P, N, NN, dyb, C, d, 0.f,
                                    dq + 2 * C, 3 * C, d, H);
    softmax_backward<T>(ex, P, dP.data(), dS, int64_t(H) * N, N);
    blas.gemm_strided_batched<T, T>(Trans::kNo, Trans::kNo, N, d, N, scale, dS, N, NN, q + C, 3 * C,
                                    d, 0.f, dq, 3 * C, d, H);
    blas.gemm_strided_batched<T, T>(Trans::kYes, Trans::kNo, N, d, N, scale, dS, N, NN, q, 3 * C, d,
                                    0.f, dq + C, 3 * C, d, H);
  }
}

template <typename T>
void primal_causal_forward(Blas& blas, const Exec& ex, const T* qk, const T* we, const T* wr, int B,
                           int N, int H, int d, int s, T* u, float* norm, T* er) {
  check_stream(blas, ex, "primal_causal_forward");
  const int64_t C = int64_t(H) * d, rows = int64_t(B) * N;
  for (int block = 0; block < 2; ++block) {
    T* us = u + block * rows * C;
    float* ns = norm + block * rows * H;
    prefix_mean_forward<T>(ex, qk + block * C, 2 * C, us, C, B, N, int(C));
    phi_forward<T>(ex, us, C, us, C, ns, rows, H, d);
    // All B N rows at once: the projection of head h is the same for every sample.
    blas.gemm_strided_batched<T, T>(Trans::kNo, Trans::kNo, int(rows), s, d, 1.f, us, C, d,
                                    block == 0 ? we : wr, s, int64_t(d) * s, 0.f, er + block * s,
                                    2 * int64_t(s) * H, 2 * s, H);
  }
}

template <typename T>
void primal_causal_backward(Blas& blas, const Exec& ex, const T* u, const float* norm, const T* we,
                            const T* wr, const T* der, int B, int N, int H, int d, int s, T* dqk,
                            float* dwe, float* dwr) {
  check_stream(blas, ex, "primal_causal_backward");
  const int64_t C = int64_t(H) * d, rows = int64_t(B) * N, ld_er = 2 * int64_t(s) * H;
  DeviceBuffer<T> du(*ex.allocator, rows * C, ex.stream);
  for (int block = 0; block < 2; ++block) {
    const T* us = u + block * rows * C;
    const float* ns = norm + block * rows * H;
    const T* w = block == 0 ? we : wr;
    float* dw = block == 0 ? dwe : dwr;
    const T* dproj = der + block * s;
    blas.gemm_strided_batched<T, T>(Trans::kNo, Trans::kYes, int(rows), d, s, 1.f, dproj, ld_er,
                                    2 * s, w, s, int64_t(d) * s, 0.f, du.data(), C, d, H);
    blas.gemm_strided_batched<T, float>(Trans::kYes, Trans::kNo, d, s, int(rows), 1.f, us, C, d,
                                        dproj, ld_er, 2 * s, 1.f, dw, s, int64_t(d) * s, H);
    phi_backward<T>(ex, us, C, ns, du.data(), C, du.data(), C, rows, H, d);
    prefix_mean_backward<T>(ex, du.data(), C, dqk + block * C, 2 * C, B, N, int(C));
  }
}

#define PRIMAL_INSTANTIATE(T)                                                                      \
  template void softmax_attention_forward_reference<T>(                                            \
      Blas&, const Exec&, const T*, const int32_t*, bool, int, int, int, int, T*, T*);             \
  template void softmax_attention_backward_reference<T>(Blas&, const Exec&, const T*, const T*,    \
                                                        const T*, int, int, int, int, T*);         \
  template void primal_causal_forward<T>(Blas&, const Exec&, const T*, const T*, const T*, int,    \
                                         int, int, int, int, T*, float*, T*);                      \
  template void primal_causal_backward<T>(Blas&, const Exec&, const T*, const float*, const T*,    \
                                          const T*, const T*, int, int, int, int, int, T*, float*, \
                                          float*);
PRIMAL_INSTANTIATE(float)
PRIMAL_INSTANTIATE(bf16)
#undef PRIMAL_INSTANTIATE

}  // namespace primal::cuda
