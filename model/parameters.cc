#include "model/parameters.h"

#include <array>
#include <charconv>
#include <cmath>

#include "core/random.h"

namespace primal {
namespace {

// Rows of the [rows, cols] Gaussian matrix made orthonormal by modified Gram-Schmidt:
// the Q of a QR with positive diagonal, as torch.nn.init.orthogonal_ produces.
void orthonormalise_rows(std::vector<double>& a, int64_t rows, int64_t cols,
                         const std::string& name) {
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
    case Init::kZeros:
      break;
    case Init::kOnes:
      std::fill(out.begin(), out.end(), 1.0);
      break;
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

Shape local_shape(const Shape& full, const Sharding& sharding, TensorParallelRank tp) {
  if (sharding.split == Split::kReplicated || tp.size == 1) return full;
  const int axis = sharding.split == Split::kRow ? full.rank() - 1 : 0;
  const int64_t cut = sharding.split == Split::kRow ? 1 : sharding.blocks;
  if (full[axis] % (cut * tp.size) != 0) {
    throw Error("a parameter of shape " + full.str() + " cannot be cut " + std::to_string(tp.size) +
                " ways (tensor parallelism)");
  }
  Shape local;
  std::array<int64_t, Shape::kMaxRank> dims{};
  for (int i = 0; i < full.rank(); ++i) dims[i] = i == axis ? full[i] / tp.size : full[i];
  switch (full.rank()) {
    case 1:
      local = {dims[0]};
      break;
    case 2:
      local = {dims[0], dims[1]};
      break;
    case 3:
      local = {dims[0], dims[1], dims[2]};
      break;
    default:
      local = {dims[0], dims[1], dims[2], dims[3]};
      break;
  }
  return local;
}

std::vector<std::pair<int64_t, int64_t>> shard_runs(const Shape& full, const Sharding& sharding,
                                                    TensorParallelRank tp) {
  const Shape local = local_shape(full, sharding, tp);
  if (local == full) return {{0, full.numel()}};
  if (sharding.split == Split::kRow) {
    // Every row of the full tensor contributes its columns [rank K/TP, (rank+1) K/TP).
    const int64_t K = full[full.rank() - 1], k = K / tp.size, rows = full.numel() / K;
    std::vector<std::pair<int64_t, int64_t>> runs;
    for (int64_t r = 0; r < rows; ++r) runs.emplace_back(r * K + tp.rank * k, k);
    return runs;
  }
  // Dim 0 in blocks: each block contributes its rows [rank P/TP, (rank+1) P/TP).
  const int64_t inner = full.numel() / full[0], per_block = full[0] / sharding.blocks;
  const int64_t mine = per_block / tp.size;
  std::vector<std::pair<int64_t, int64_t>> runs;
  for (int b = 0; b < sharding.blocks; ++b) {
    runs.emplace_back((b * per_block + tp.rank * mine) * inner, mine * inner);
  }
  return runs;
}

template <typename T>
Parameter<T>* ParameterStore<T>::add(std::string name, Shape shape, Sharding sharding, Init init) {
  check(values_.empty(), "ParameterStore::add after finalize: " + name);
  for (const auto& p : params_) check(p.name != name, "duplicate parameter " + name);
  bool decay = init == Init::kNormal || init == Init::kOrthogonalRows;
  const Shape local = local_shape(shape, sharding, tp_);
  // The one place a parameter's layer is read off its name ("layers.<i>.", SPEC §4).
  int layer = -1;
  if (name.rfind("layers.", 0) == 0) {
    const char* end = name.data() + name.size();
    const auto [next, ec] = std::from_chars(name.data() + 7, end, layer);
    check(ec == std::errc() && layer >= 0 && next != end && *next == '.',
          "parameter '" + name + "': layers.<i>. needs the layer's index i");
  }
  params_.push_back({std::move(name), layer, shape, local, sharding, init, decay, {}, {}});
  return &params_.back();
}

template <typename T>
void ParameterStore<T>::finalize(uint64_t seed) {
  int64_t total = 0;
  for (const auto& p : params_) total += p.local_shape.numel();
  values_.assign(total, T(0));
  grads_.assign(total, T(0));
  int64_t offset = 0;
  std::vector<double> init;
  for (auto& p : params_) {
    p.value = Tensor<T>(values_.data() + offset, p.local_shape);
    p.grad = Tensor<T>(grads_.data() + offset, p.local_shape);
    init_values(p.init, p.name, p.shape, seed, init);
    int64_t i = 0;
    for (auto [from, length] : shard_runs(p.shape, p.sharding, tp_)) {
      for (int64_t j = 0; j < length; ++j) p.value[i++] = T(init[from + j]);
    }
    offset += p.local_shape.numel();
  }
}

template <typename T>
void ParameterStore<T>::finalize_values_only() {
  int64_t total = 0;
  for (const auto& p : params_) total += p.local_shape.numel();
  values_.assign(total, T(0));
  int64_t offset = 0;
  for (auto& p : params_) {
    p.value = Tensor<T>(values_.data() + offset, p.local_shape);
    offset += p.local_shape.numel();
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
