#include "model/parameters.h"

#include <cmath>

#include "core/random.h"

namespace primal {
namespace {

// Rows of the [rows, cols] Gaussian matrix made orthonormal by modified Gram-Schmidt:
// the Q of a QR with positive diagonal, as torch.nn.init.orthogonal_ produces.
void orthonormalise_rows(std::vector<double>& a, int64_t rows, int64_t cols, const std::string& name) {
  check(rows <= cols, "orthogonal init of " + name + ": more rows than columns");
  for (int64_t i = 0; i < rows; ++i) {
    double* ri = &a[i * cols];
    for (int64_t j = 0; j < i; ++j) {
      const double* rj = &a[j * cols];
      double dot = 0;
      for (int64_t c = 0; c < cols; ++c) dot += ri[c] * rj[c];
      for (int64_t c = 0; c < cols; ++c) ri[c] -= dot * rj[c];
    }
    double norm = 0;
    for (int64_t c = 0; c < cols; ++c) norm += ri[c] * ri[c];
    norm = std::sqrt(norm);
    for (int64_t c = 0; c < cols; ++c) ri[c] /= norm;
  }
}

}  // namespace

void init_values(Init init, const std::string& name, const Shape& shape, uint64_t seed,
                 std::vector<double>& out) {
  const int64_t n = shape.numel();
  out.assign(n, 0.0);
  CounterRng rng(seed, fnv1a(name));
  switch (init) {
    case Init::kZeros: break;
    case Init::kOnes: std::fill(out.begin(), out.end(), 1.0); break;
    case Init::kNormal:
      for (int64_t i = 0; i < n; ++i) out[i] = 0.02 * rng.normal(i);
      break;
    case Init::kUniform:
      for (int64_t i = 0; i < n; ++i) out[i] = rng.uniform(i);
      break;
    case Init::kOrthogonalRows:
      for (int64_t i = 0; i < n; ++i) out[i] = rng.normal(i);
      orthonormalise_rows(out, shape[0], n / shape[0], name);
      break;
  }
}

template <typename T>
Parameter<T>* ParameterStore<T>::add(std::string name, Shape shape, Split split, Init init) {
  check(values_.empty(), "ParameterStore::add after finalize: " + name);
  for (const auto& p : params_) check(p.name != name, "duplicate parameter " + name);
  bool decay = init == Init::kNormal || init == Init::kOrthogonalRows;
  params_.push_back({std::move(name), shape, split, init, decay, {}, {}});
  return &params_.back();
}

template <typename T>
void ParameterStore<T>::finalize(uint64_t seed) {
  int64_t total = 0;
  for (const auto& p : params_) total += p.shape.numel();
  values_.assign(total, T(0));
  grads_.assign(total, T(0));
  int64_t offset = 0;
  std::vector<double> init;
  for (auto& p : params_) {
    p.value = Tensor<T>(values_.data() + offset, p.shape);
    p.grad = Tensor<T>(grads_.data() + offset, p.shape);
    init_values(p.init, p.name, p.shape, seed, init);
    for (int64_t i = 0; i < p.shape.numel(); ++i) p.value[i] = T(init[i]);
    offset += p.shape.numel();
  }
}

template <typename T>
Parameter<T>* ParameterStore<T>::find(const std::string& name) {
  for (auto& p : params_)
    if (p.name == name) return &p;
  return nullptr;
}

template class ParameterStore<float>;
template class ParameterStore<double>;

}  // namespace primal
