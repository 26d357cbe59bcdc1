#include "model/classifier_head.h"

#include <algorithm>

namespace primal {

template <typename T>
ClassifierHead<T>::ClassifierHead(ParameterStore<T>& params, const ModelConfig& config)
    : fc1_(params, "head.fc1", config.width, config.head_width),
      fc2_(params, "head.fc2", config.head_width, config.num_classes),
      pooling_(config.pooling),
      width_(config.width),
      hidden_(config.head_width) {}

template <typename T>
Tensor<T> ClassifierHead<T>::forward(Arena& arena, const Tensor<T>& x, const Sequence& seq) {
  const int B = seq.B, N = seq.N, C = width_;
  seq_ = seq;
  Tensor<T> pooled = arena.zeros<T>({B, C});
  for (int b = 0; b < B; ++b) {
    T* p = pooled.data() + int64_t(b) * C;
    const T* xb = x.data() + int64_t(b) * N * C;
    if (pooling_ == Pooling::kCls) {
      std::copy_n(xb, C, p);
      continue;
    }
    const int len = seq.length(b);
    for (int n = 0; n < len; ++n)
      for (int c = 0; c < C; ++c) p[c] += xb[int64_t(n) * C + c];
    for (int c = 0; c < C; ++c) p[c] /= T(len);
  }
  hidden_pre_ = fc1_.forward(arena, pooled);
  Tensor<T> act = arena.alloc<T>(hidden_pre_.shape());
  for (int64_t i = 0; i < act.numel(); ++i) act[i] = std::max(hidden_pre_[i], T(0));
  return fc2_.forward(arena, act);
}

template <typename T>
void ClassifierHead<T>::backward(Arena& arena, const Tensor<T>& dlogits, const Tensor<T>& dx) {
  const int B = seq_.B, N = seq_.N, C = width_;
  Tensor<T> dact = arena.zeros<T>(hidden_pre_.shape());
  fc2_.backward(arena, dlogits, dact);
  for (int64_t i = 0; i < dact.numel(); ++i)
    if (hidden_pre_[i] <= T(0)) dact[i] = 0;
  Tensor<T> dpooled = arena.zeros<T>({B, C});
  fc1_.backward(arena, dact, dpooled);
  for (int b = 0; b < B; ++b) {
    const T* g = dpooled.data() + int64_t(b) * C;
    T* dxb = dx.data() + int64_t(b) * N * C;
    const int rows = pooling_ == Pooling::kCls ? 1 : seq_.length(b);
    const T scale = pooling_ == Pooling::kCls ? T(1) : T(1) / T(rows);
    for (int n = 0; n < rows; ++n)
      for (int c = 0; c < C; ++c) dxb[int64_t(n) * C + c] += g[c] * scale;
  }
}

template class ClassifierHead<float>;
template class ClassifierHead<double>;

}  // namespace primal
