// Central finite differences in double precision against a layer's analytic gradients.
// The five-point stencil (f(-2h) - 8 f(-h) + 8 f(h) - f(2h)) / 12h has error O(h^4), so with
// h = 1e-4 both truncation and rounding stay near 1e-12 of the gradient's scale.
//
// Error of one element: |analytic - numeric| / max(|analytic|, |numeric|, floor), with
// floor = 1e-3 * max|numeric| over the tensor (and at least 1e-10): elements many orders of
// magnitude below their tensor's scale are judged relative to that scale, because their
// finite difference is itself only that accurate.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/parameters.h"

namespace primal::testing {

struct Checked {
  std::string name;
  Tensor<double> value;
  Tensor<double> grad;
};

inline std::vector<Checked> all_parameters(ParameterStore<double>& params) {
  std::vector<Checked> out;
  for (auto& p : params.all()) out.push_back({p.name, p.value, p.grad});
  return out;
}

// Moves every parameter off its (often degenerate: zeros, ones) initial value, so that the
// check exercises every term.
inline void randomize(ParameterStore<double>& params, uint32_t seed, double scale = 0.5) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal(0.0, scale);
  Tensor<double> v = params.values();
  for (int64_t i = 0; i < v.numel(); ++i) v[i] += normal(gen);
}

inline std::vector<double> random_vector(int64_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<double> v(n);
  for (double& x : v) x = normal(gen);
  return v;
}

// loss(): forward only. forward_backward(): zeroes and then fills every item's grad.
// Returns the largest element error over all items; reports the worst element per item.
inline double check_gradients(const std::function<double()>& loss,
                              const std::function<void()>& forward_backward,
                              const std::vector<Checked>& items, double tolerance = 1e-6,
                              double step = 1e-4) {
  for (const Checked& item : items) item.grad.zero();
  forward_backward();
  double worst = 0;
  for (const Checked& item : items) {
    const int64_t n = item.value.numel();
    std::vector<double> analytic(item.grad.data(), item.grad.data() + n), numeric(n);
    for (int64_t i = 0; i < n; ++i) {
      const double saved = item.value[i];
      auto at_offset = [&](double k) {
        item.value[i] = saved + k * step;
        return loss();
      };
      const double f2 = at_offset(2), f1 = at_offset(1), b1 = at_offset(-1), b2 = at_offset(-2);
      item.value[i] = saved;
      numeric[i] = (b2 - 8 * b1 + 8 * f1 - f2) / (12 * step);
    }
    double scale = 0;
    for (double g : numeric) scale = std::max(scale, std::abs(g));
    const double floor = std::max(1e-3 * scale, 1e-10);
    double item_worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double denom = std::max({std::abs(analytic[i]), std::abs(numeric[i]), floor});
      const double err = std::abs(analytic[i] - numeric[i]) / denom;
      if (err > item_worst) item_worst = err, at = i;
    }
    EXPECT_LT(item_worst, tolerance) << item.name << "[" << at << "]: analytic " << analytic[at]
                                     << " numeric " << numeric[at] << " (scale " << scale << ")";
    worst = std::max(worst, item_worst);
  }
  return worst;
}

inline double dot(const Tensor<double>& a, const std::vector<double>& r) {
  return std::inner_product(a.data(), a.data() + a.numel(), r.begin(), 0.0);
}

// A layer's whole check (max relative error 1e-6): d(sum(forward(x) * R) + extra()) /
// d(parameters, x) for a fixed random R.
// forward(arena, x) -> out;  backward(arena, dout, dx) accumulates into dx and the params.
template <typename Forward, typename Backward>
void check_layer(ParameterStore<double>& params, Shape x_shape, Shape out_shape, Forward forward,
                 Backward backward, uint32_t seed, std::function<double()> extra = nullptr) {
  randomize(params, seed);
  std::vector<double> x_values = random_vector(x_shape.numel(), seed + 1);
  std::vector<double> r = random_vector(out_shape.numel(), seed + 2);
  std::vector<double> dx_values(x_values.size());
  Tensor<double> x(x_values.data(), x_shape), dx(dx_values.data(), x_shape);
  Arena arena;
  auto loss = [&] {
    arena.reset();
    double l = dot(forward(arena, x), r);
    return extra ? l + extra() : l;
  };
  auto forward_backward = [&] {
    arena.reset();
    forward(arena, x);
    Tensor<double> dout = arena.alloc<double>(out_shape);
    std::copy(r.begin(), r.end(), dout.data());
    backward(arena, dout, dx);
  };
  std::vector<Checked> items = all_parameters(params);
  items.push_back({"x", x, dx});
  check_gradients(loss, forward_backward, items, 1e-6);
}

}  // namespace primal::testing
