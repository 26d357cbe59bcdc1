// The input of the Transformer (SPEC §3):
//   x = tok_emb[tokens] + pos_emb[0..N)                          (tokens)
//   x = [cls;] (patches W_p^T + b_p) + pos_emb[0..N(+1))          (image patches)
#pragma once

#include <memory>

#include "model/batch.h"
#include "model/config.h"
#include "model/linear.h"
#include "model/sequence.h"

namespace primal {

template <typename T>
class Embedding {
 public:
  Embedding(ParameterStore<T>& params, const ModelConfig& config);

  // -> x [B, seq.N, C]; with CLS, position 0 holds cls + pos[0] and input i sits at i + 1.
  Tensor<T> forward(Arena& arena, const Batch& batch, const Sequence& seq);
  // dtok[t] += dx at every position holding t;  dpos[n] += sum_b dx[b, n];
  // dcls += sum_b dx[b, 0];  patches: through the patch Linear.
  void backward(Arena& arena, const Tensor<T>& dx);

  Parameter<T>* tokens() const { return tok_; }  // null with patch inputs
  Parameter<T>* positions() const { return pos_; }
  Parameter<T>* cls() const { return cls_; }         // null without a CLS slot
  Linear<T>* patch() const { return patch_.get(); }  // null with token inputs

 private:
  const ModelConfig& config_;
  Parameter<T>* tok_ = nullptr;
  std::unique_ptr<Linear<T>> patch_;
  Parameter<T>* cls_ = nullptr;
  Parameter<T>* pos_;
  // saved by forward
  const Batch* batch_ = nullptr;
  Sequence seq_;
};

}  // namespace primal
