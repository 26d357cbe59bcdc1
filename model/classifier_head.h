// The classifier head (SPEC §3): pool the final x, then a two-layer ReLU MLP to K logits.
//   pooled = mean over real positions (MEAN) or x[:, 0] (CLS)
//   logits = fc2(ReLU(fc1(pooled)))
#pragma once

#include "model/config.h"
#include "model/linear.h"
#include "model/sequence.h"

namespace primal {

template <typename T>
class ClassifierHead {
 public:
  ClassifierHead(ParameterStore<T>& params, const ModelConfig& config);

  // x [B, N, C] (padded rows are 0) -> logits [B, K]
  Tensor<T> forward(Arena& arena, const Tensor<T>& x, const Sequence& seq);
  // dpooled = fc1^T ...;  MEAN: dx[b, n] += dpooled / n_b on real rows;  CLS: dx[b, 0] += dpooled
  void backward(Arena& arena, const Tensor<T>& dlogits, const Tensor<T>& dx);

  Linear<T>& fc1() { return fc1_; }
  Linear<T>& fc2() { return fc2_; }

 private:
  Linear<T> fc1_, fc2_;
  Pooling pooling_;
  int width_, hidden_;
  // saved by forward
  Sequence seq_;
  Tensor<T> hidden_pre_;  // fc1 output, before ReLU
};

}  // namespace primal
