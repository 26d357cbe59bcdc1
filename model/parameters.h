// Parameters: named tensors (SPEC §4) in one contiguous value buffer and one contiguous
// gradient buffer (one memset zeroes all gradients; buckets and the optimizer walk them in
// order). Each parameter knows how tensor parallelism splits it (SPEC §5) and how it is
// initialised from (seed, name) (SPEC §3.5), so every layout starts from the same weights.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace primal {

enum class Split { kReplicated, kColumn, kRow, kHeads };

enum class Init {
  kNormal,          // normal(0, 0.02): Linear weights, embeddings
  kZeros,           // biases
  kOnes,            // LayerNorm weights
  kUniform,         // uniform(0, 1): Lambda
  kOrthogonalRows,  // [H, ...] viewed as H x rest with orthonormal rows: We, Wr
};

template <typename T>
struct Parameter {
  std::string name;
  Shape shape;  // full, unsharded
  Split split;
  Init init;
  bool weight_decay;  // false for biases, LayerNorm and Lambda
  Tensor<T> value;    // bound by ParameterStore::finalize()
  Tensor<T> grad;
};

template <typename T>
class ParameterStore {
 public:
  // Declares a parameter; its storage exists after finalize(). The pointer stays valid.
  Parameter<T>* add(std::string name, Shape shape, Split split, Init init);
  // Allocates the buffers and initialises every parameter from (seed, name).
  void finalize(uint64_t seed);

  std::deque<Parameter<T>>& all() { return params_; }
  const std::deque<Parameter<T>>& all() const { return params_; }
  Parameter<T>* find(const std::string& name);
  int64_t numel() const { return int64_t(values_.size()); }
  Tensor<T> values() { return Tensor<T>(values_.data(), {numel()}); }
  Tensor<T> grads() { return Tensor<T>(grads_.data(), {numel()}); }
  void zero_grads() { grads().zero(); }

 private:
  std::deque<Parameter<T>> params_;
  std::vector<T> values_, grads_;
};

// Fills out[0..n) (the whole tensor) as init prescribes, from (seed, name). Computed in
// double so that float and double models start from the same (rounded) weights.
void init_values(Init init, const std::string& name, const Shape& shape, uint64_t seed,
                 std::vector<double>& out);

}  // namespace primal
