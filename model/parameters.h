// Parameters: named tensors (SPEC §4) in one contiguous value buffer and one contiguous
// gradient buffer (one memset zeroes all gradients; buckets and the optimizer walk them in
// order). Each parameter knows how tensor parallelism splits it (SPEC §5) and how it is
// initialised from (seed, name) (SPEC §3.5), so every layout starts from the same weights.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace primal {

enum class Split {
  kReplicated,  // every rank holds all of it
  kColumn,      // dim 0 cut (output rows of a Linear, column-parallel); see Sharding::blocks
  kRow,         // last dim cut (input columns of a Linear, row-parallel)
  kHeads,       // dim 0 (heads) cut
};

// How a parameter is cut across the tensor-parallel group (SPEC §5). With blocks > 1, dim 0 is
// that many equal blocks (q|k|v) and each block is cut alike: rank t owns heads
// [t H/TP, (t+1) H/TP) of every block.
struct Sharding {
  Split split = Split::kReplicated;
  int blocks = 1;
  // A replicated parameter used by every rank's own heads (attn.concat): its gradient is the
  // sum of the ranks' gradients.
  bool sum_grad_over_tp = false;
};

// This process's place in its tensor-parallel group.
struct TensorParallelRank {
  int rank = 0;
  int size = 1;
};

// Whether this rank's gradient of a parameter counts in the global gradient norm (the clip,
// on the host and on the device): a shard always, a replicated parameter's gradient (the same
// on every TP rank) on TP rank 0 alone, so that the TP sum counts it once.
inline bool counts_in_global_norm(const Sharding& sharding, int tp_rank) {
  return sharding.split != Split::kReplicated || tp_rank == 0;
}

// The shape of rank's shard of a tensor of shape full.
Shape local_shape(const Shape& full, const Sharding& sharding, TensorParallelRank tp);
// The shard as contiguous runs of the full tensor (row-major): pairs (full offset, length)
// whose concatenation, in order, is the local tensor. Checkpoints use it to write and to
// reassemble any slice.
std::vector<std::pair<int64_t, int64_t>> shard_runs(const Shape& full, const Sharding& sharding,
                                                    TensorParallelRank tp);

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
  // The Transformer layer whose backward makes the gradient final: i for SPEC §4's
  // layers.<i>.*, -1 for the embeddings, the final norm and the head (final after every layer).
  int layer;
  Shape shape;        // full, unsharded (SPEC §4)
  Shape local_shape;  // this rank's shard
  Sharding sharding;
  Init init;
  bool weight_decay;  // false for biases, LayerNorm and Lambda
  Tensor<T> value;    // the local shard, bound by ParameterStore::finalize()
  Tensor<T> grad;
};

template <typename T>
class ParameterStore {
 public:
  explicit ParameterStore(TensorParallelRank tp = {}) : tp_(tp) {}

  // Declares a parameter of full shape; its storage (this rank's shard) exists after
  // finalize(). The pointer stays valid.
  Parameter<T>* add(std::string name, Shape shape, Sharding sharding, Init init);
  Parameter<T>* add(std::string name, Shape shape, Split split, Init init) {
    return add(std::move(name), shape, Sharding{split, 1}, init);
  }
  // Allocates the buffers and initialises every parameter as a whole tensor from
  // (seed, name), keeping this rank's shard: every layout starts from the same weights.
  void finalize(uint64_t seed);
  // Allocates the value buffer alone, zero, with no gradients and no initialisation: a store
  // that a checkpoint or weights file fills right after and that never trains (export, import).
  void finalize_values_only();
  TensorParallelRank tp() const { return tp_; }

  std::deque<Parameter<T>>& all() { return params_; }
  const std::deque<Parameter<T>>& all() const { return params_; }
  Parameter<T>* find(const std::string& name);
  int64_t numel() const { return int64_t(values_.size()); }
  Tensor<T> values() { return Tensor<T>(values_.data(), {numel()}); }
  Tensor<T> grads() { return Tensor<T>(grads_.data(), {numel()}); }
  void zero_grads() { grads().zero(); }

 private:
  TensorParallelRank tp_;
  std::deque<Parameter<T>> params_;
  std::vector<T> values_, grads_;
};

// Fills out[0..n) (the whole tensor) as init prescribes, from (seed, name). Computed in
// double so that float and double models start from the same (rounded) weights.
void init_values(Init init, const std::string& name, const Shape& shape, uint64_t seed,
                 std::vector<double>& out);

}  // namespace primal
