#include "core/cuda/primal_encoder.h"

#include <string>

namespace primal::cuda {

template <typename T>
void primal_encoder_forward(Blas& blas, const Exec& ex, const T* qk, const T* xs, const T* we,
                            const T* wr, int B, int N, int L, int H, int d, int s, T* u,
                            float* norm, T* w_eff, T* er) {
  check(blas.stream() == ex.stream, "primal_encoder_forward: Blas is bound to another stream");
  const int64_t C = int64_t(H) * d, rows = int64_t(B) * N, ld_er = 2 * int64_t(s) * H;
  const int64_t ds = int64_t(d) * s, Ls = int64_t(L) * s;
  for (int block = 0; block < 2; ++block) {
    T* us = u + block * rows * C;
    T* weff = w_eff + block * int64_t(B) * H * ds;
    const T* w = block == 0 ? we : wr;
    // u = phi(q): q is read in place from its block of qk.
    phi_forward<T>(ex, qk + block * C, 2 * C, us, C, norm + block * rows * H, rows, H, d);
    for (int b = 0; b < B; ++b) {
      T* weff_b = weff + int64_t(b) * H * ds;
      // we[b,h] = Xs[b,h]^T We[h]   [d, s] = [L, d]^T [L, s]
      blas.gemm_strided_batched<T, T>(Trans::kYes, Trans::kNo, d, s, L, 1.f,
                                      xs + int64_t(b) * L * C, C, d, w, s, Ls, 0.f, weff_b, s, ds,
                                      H);
      // e = u we[b,h]   [N, s] = [N, d] [d, s]
      blas.gemm_strided_batched<T, T>(Trans::kNo, Trans::kNo, N, s, d, 1.f, us + int64_t(b) * N * C,
                                      C, d, weff_b, s, ds, 0.f,
                                      er + int64_t(b) * N * ld_er + block * s, ld_er, 2 * s, H);
    }
  }
}

template <typename T>
void primal_encoder_backward(Blas& blas, const Exec& ex, const T* u, const float* norm,
                             const T* w_eff, const T* xs, const T* we, const T* wr, const T* der,
                             int B, int N, int L, int H, int d, int s, T* dqk, T* dxs, float* dwe,
                             float* dwr) {
  check(blas.stream() == ex.stream, "primal_encoder_backward: Blas is bound to another stream");
  check(ex.allocator != nullptr, "primal_encoder_backward: needs Exec::allocator");
  const int64_t C = int64_t(H) * d, rows = int64_t(B) * N, ld_er = 2 * int64_t(s) * H;
  const int64_t ds = int64_t(d) * s, Ls = int64_t(L) * s;
  DeviceBuffer<T> du(*ex.allocator, rows * C, ex.stream);
  DeviceBuffer<T> dweff(*ex.allocator, int64_t(B) * H * ds, ex.stream);
  for (int block = 0; block < 2; ++block) {
    const T* us = u + block * rows * C;
    const T* weff = w_eff + block * int64_t(B) * H * ds;
    const T* w = block == 0 ? we : wr;
    float* dw = block == 0 ? dwe : dwr;
    const T* dproj = der + block * s;
    for (int b = 0; b < B; ++b) {
      const T* dp = dproj + int64_t(b) * N * ld_er;
      const T* weff_b = weff + int64_t(b) * H * ds;
      T* dweff_b = dweff.data() + int64_t(b) * H * ds;
      // du = de we[b,h]^T   [N, d] = [N, s] [d, s]^T
      blas.gemm_strided_batched<T, T>(Trans::kNo, Trans::kYes, N, d, s, 1.f, dp, ld_er, 2 * s,
                                      weff_b, s, ds, 0.f, du.data() + int64_t(b) * N * C, C, d, H);
      // dwe[b,h] = u^T de   [d, s] = [N, d]^T [N, s]
      blas.gemm_strided_batched<T, T>(Trans::kYes, Trans::kNo, d, s, N, 1.f,
                                      us + int64_t(b) * N * C, C, d, dp, ld_er, 2 * s, 0.f, dweff_b,
                                      s, ds, H);
      // dXs[b,h] += We[h] dwe[b,h]^T   [L, d] = [L, s] [d, s]^T
      blas.gemm_strided_batched<T, T>(Trans::kNo, Trans::kYes, L, d, s, 1.f, w, s, Ls, dweff_b, s,
                                      ds, 1.f, dxs + int64_t(b) * L * C, C, d, H);
    }
    // dWe[h] += Xs[b,h] dwe[b,h]   [L, s] = [L, d] [d, s], b in order
    for (int b = 0; b < B; ++b) {
      blas.gemm_strided_batched<T, float>(
          Trans::kNo, Trans::kNo, L, s, d, 1.f, xs + int64_t(b) * L * C, C, d,
          dweff.data() + int64_t(b) * H * ds, s, ds, 1.f, dw, s, Ls, H);
    }
    // phi: dq = (du - u (u . du)) / |q|, into q's block of dqk.
    phi_backward<T>(ex, us, C, norm + block * rows * H, du.data(), C, dqk + block * C, 2 * C, rows,
                    H, d);
  }
}

#define PRIMAL_INSTANTIATE(T)                                                                     \
  template void primal_encoder_forward<T>(Blas&, const Exec&, const T*, const T*, const T*,       \
                                          const T*, int, int, int, int, int, int, T*, float*, T*, \
                                          T*);                                                    \
  template void primal_encoder_backward<T>(Blas&, const Exec&, const T*, const float*, const T*,  \
                                           const T*, const T*, const T*, const T*, int, int, int, \
                                           int, int, int, T*, T*, float*, float*);
PRIMAL_INSTANTIATE(float)
PRIMAL_INSTANTIATE(bf16)
#undef PRIMAL_INSTANTIATE

}  // namespace primal::cuda
