// Element math shared by the CPU layers and the CUDA kernels (core/cuda/): one definition of
// each per-element formula, compiled as __host__ __device__ by nvcc and as plain inline C++
// everywhere else, so that the CPU unit tests (tests/gpu/element_math_test.cc) check the very
// functions the kernels run.
//
// Rounding. Where trainer/adamw.cc fuses a multiply and an add (std::fma), so does
// adamw_update; every other operation of adamw_update is rounded on its own: on the host the
// callers compile it with -ffp-contract=off (as adamw.cc is), on the device it is written with
// the _rn intrinsics, which nvcc never contracts. The other functions leave contraction to
// the compiler, as the CPU layers do: they agree with them to a few ulps, not bit for bit.
#pragma once

#include <bit>
#include <cmath>
#include <type_traits>

#include "core/error.h"

#if defined(__CUDACC__)
#define PRIMAL_HD __host__ __device__
#else
#define PRIMAL_HD
#endif

namespace primal::em {

// ---- rounding-explicit arithmetic (see the header comment) -------------------------------

template <typename T>
PRIMAL_HD inline T mul_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>)
    return __fmul_rn(a, b);
  else
    return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
template <typename T>
PRIMAL_HD inline T add_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>)
    return __fadd_rn(a, b);
  else
    return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
template <typename T>
PRIMAL_HD inline T div_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>)
    return __fdiv_rn(a, b);
  else
    return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
template <typename T>
PRIMAL_HD inline T sqrt_rn(T a) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>)
    return __fsqrt_rn(a);
  else
    return __dsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
template <typename T>
PRIMAL_HD inline T fma_rn(T a, T b, T c) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>)
    return __fmaf_rn(a, b, c);
  else
    return __fma_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// ---- GELU, exact erf form -----------------------------------------------------------------
// gelu(x) = x Phi(x) = 0.5 x (1 + erf(x / sqrt2));  gelu'(x) = Phi(x) + x phi(x),
// phi(x) = exp(-x^2/2) / sqrt(2 pi).

inline constexpr double kInvSqrt2 = 0.70710678118654752440;
inline constexpr double kInvSqrt2Pi = 0.39894228040143267794;

// A rational approximation (the one of Eigen and XLA) within 5e-7 of erf, a few float ulps:
// glibc's scalar erff was a fifth of a ListOps training step (GELU forward and backward); this
// vectorises. The float layers and the kernels use it; the double path keeps erf itself.
PRIMAL_HD inline float erf_approx(float a) {
  const float x = a < -4.f ? -4.f : (a > 4.f ? 4.f : a);  // |x| >= 4 gives +-1 in float
  const float x2 = x * x;
  float p = x2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
  p = x2 * p + -2.10102402082508e-06f;
  p = x2 * p + -5.69250639462346e-05f;
  p = x2 * p + -7.34990630326855e-04f;
  p = x2 * p + -2.95459980854025e-03f;
  p = x2 * p + -1.60960333262415e-02f;
  p = x * p;
  float q = x2 * -1.45660718464996e-05f + -2.13374055278905e-04f;
  q = x2 * q + -1.68282697438203e-03f;
  q = x2 * q + -7.37332916720468e-03f;
  q = x2 * q + -1.42647390514189e-02f;
  return p / q;
}

// erf in T: the approximation for float, erf itself for double (the gradient checks need it).
template <typename T>
PRIMAL_HD inline T erf_t(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return erf_approx(x);
  } else {
#if defined(__CUDA_ARCH__)
    return ::erf(x);
#else
    return std::erf(x);
#endif
  }
}

// e^x for x in [-87, 88] (clamped there), within 2 float ulps: Cephes' expf, the one of Eigen.
// x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two parts, so that r is exact), e^r by a
// degree-7 polynomial, 2^n put into the exponent bits. glibc's expf is a scalar call, which
// kept GELU's backward loop from vectorising.
PRIMAL_HD inline float exp_approx(float a) {
  float x = a > 88.f ? 88.f : a;
  x = x < -87.f ? -87.f : x;
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  x = x - n * 0.693359375f;
  x = x - n * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * x * x + x + 1.f;
  const int bits = (int(n) + 127) << 23;
#if defined(__CUDA_ARCH__)
  return y * __int_as_float(bits);
#else
  return y * std::bit_cast<float>(bits);
#endif
}

template <typename T>
PRIMAL_HD inline T exp_t(T x) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>)
    return ::expf(x);
  else
    return ::exp(x);
#else
  return std::exp(x);
#endif
}

// e^x in the element-wise loops that must vectorise (GELU's backward, softmax rows): the
// approximation for float, exp itself for double (the gradient checks need it).
template <typename T>
PRIMAL_HD inline T exp_vec(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return exp_approx(x);
  } else {
    return exp_t(x);
  }
}

template <typename T>
PRIMAL_HD inline T log_t(T x) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>)
    return ::logf(x);
  else
    return ::log(x);
#else
  return std::log(x);
#endif
}

template <typename T>
PRIMAL_HD inline T gelu(T x) {
  return T(0.5) * x * (T(1) + erf_t(x * T(kInvSqrt2)));
}

// d gelu / dx at x.
template <typename T>
PRIMAL_HD inline T gelu_grad(T x) {
  const T cdf = T(0.5) * (T(1) + erf_t(x * T(kInvSqrt2)));
  const T pdf = T(kInvSqrt2Pi) * exp_vec(T(-0.5) * x * x);
  return cdf + x * pdf;
}

// ---- phi(v) = v / max(|v|, eps), per head --------------------------------------------------

inline constexpr double kPhiEps = 1e-12;

// The factor phi multiplies v by, given |v|.
template <typename T>
PRIMAL_HD inline T phi_scale(T norm) {
  return T(1) / (norm > T(kPhiEps) ? norm : T(kPhiEps));
}
// One element of phi's backward: dv_j = (du_j - u_j (u . du)) / |v|, or du_j / eps where
// |v| < eps (phi is then v / eps, linear).
template <typename T>
PRIMAL_HD inline T phi_grad(T du, T u, T u_dot_du, T norm) {
  if (norm < T(kPhiEps)) return du / T(kPhiEps);
  return (du - u * u_dot_du) / norm;
}

// ---- prefix means: qin_n = mean_{j<=n} q_j -------------------------------------------------
// The CPU recurrence: qin_n = (n qin_{n-1} + q_n) / (n + 1). (The kernels scan prefix sums
// instead and divide once: the same value up to rounding.)
template <typename T>
PRIMAL_HD inline T prefix_mean_step(T prev, T q, int n) {
  return n == 0 ? q : (T(n) * prev + q) / T(n + 1);
}

// ---- LayerNorm -----------------------------------------------------------------------------
// y = (x - mean) rstd w + b, rstd = 1 / sqrt(var + eps) (biased variance).
template <typename T>
PRIMAL_HD inline T layernorm_rstd(T var, T eps) {
  return T(1) / sqrt_rn(var + eps);
}
template <typename T>
PRIMAL_HD inline T layernorm_normalise(T x, T mean, T rstd, T w, T b) {
  return (x - mean) * rstd * w + b;
}
// dx_j = rstd (dy_j w_j - mean(dy w) - xhat_j mean(dy w xhat)).
template <typename T>
PRIMAL_HD inline T layernorm_dx(T dy_w, T xhat, T mean_dy_w, T mean_dy_w_xhat, T rstd) {
  return rstd * (dy_w - mean_dy_w - xhat * mean_dy_w_xhat);
}

// ---- global-norm clip (trainer/grad_clip.h, and the device model's clip_grad_norm) -----------

// max_norm must be finite and > 0: an Error naming grad_clip.max_norm otherwise.
inline void check_max_norm(double max_norm) {
  if (!(max_norm > 0 && std::isfinite(max_norm)))
    throw Error("grad_clip.max_norm", "must be finite and > 0, got " + format_number(max_norm));
}
// The factor every gradient is scaled by, given their global norm: max_norm / (norm + 1e-6)
// when that is below 1, else 1; 1 for a non-finite norm (the caller sees it and skips the step).
inline double clip_coefficient(double norm, double max_norm) {
  if (!std::isfinite(norm)) return 1;
  const double coef = max_norm / (norm + 1e-6);
  return coef < 1 ? coef : 1;
}

// ---- AdamW, torch.optim.AdamW's single-tensor arithmetic (trainer/adamw.h) -------------------

// Its hyper-parameters, for the host optimizer (trainer/adamw.h) and the device model's
// (model/cuda/transformer.h) alike.
struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;  // for the parameters whose decay flag is set
};

// The per-step scalars, computed in double and rounded to T as torch does with Python floats.
template <typename T>
struct AdamWScalars {
  T decay;  // 1 - lr wd (1 where the parameter does not decay)
  T b1, one_minus_b1;
  T b2, one_minus_b2;
  T neg_step_size;  // -lr / (1 - b1^t)
  T bc2_sqrt;       // sqrt(1 - b2^t)
  T eps;
};

template <typename T>
inline AdamWScalars<T> adamw_scalars(double lr, double beta1, double beta2, double eps,
                                     double weight_decay, bool decay, long long step) {
  const double t = double(step);
  const double bc1 = 1 - std::pow(beta1, t), bc2 = 1 - std::pow(beta2, t);
  return {decay ? T(1 - lr * weight_decay) : T(1),
          T(beta1),
          T(1 - beta1),
          T(beta2),
          T(1 - beta2),
          T(-(lr / bc1)),
          T(std::sqrt(bc2)),
          T(eps)};
}

// The scalars of one optimizer step for the parameters that decay and for those that do not,
// after the step count has become `step`. Throws, naming AdamW::step, on a learning rate that
// is not finite and >= 0. The host optimizer and the device model both start their step here.
template <typename T>
struct AdamWStepScalars {
  AdamWScalars<T> with_decay, without_decay;
  const AdamWScalars<T>& of(bool decay) const { return decay ? with_decay : without_decay; }
};
template <typename T>
inline AdamWStepScalars<T> adamw_step_scalars(double lr, const AdamWOptions& o, long long step) {
  if (!(lr >= 0 && std::isfinite(lr))) {
    throw Error("AdamW::step", "learning rate must be finite and >= 0, got " + format_number(lr));
  }
  return {adamw_scalars<T>(lr, o.beta1, o.beta2, o.eps, o.weight_decay, true, step),
          adamw_scalars<T>(lr, o.beta1, o.beta2, o.eps, o.weight_decay, false, step)};
}

// One element: updates p, m, v in place from g.
template <typename T>
PRIMAL_HD inline void adamw_update(T& p, T& m, T& v, T g, const AdamWScalars<T>& s) {
  const T pi = mul_rn(p, s.decay);
  const T mi = fma_rn(g, s.one_minus_b1, mul_rn(m, s.b1));
  const T vi = fma_rn(mul_rn(s.one_minus_b2, g), g, mul_rn(v, s.b2));
  const T denom = add_rn(div_rn(sqrt_rn(vi), s.bc2_sqrt), s.eps);
  p = add_rn(pi, div_rn(mul_rn(s.neg_step_size, mi), denom));
  m = mi;
  v = vi;
}

}  // namespace primal::em
