#include "model/embedding.h"

#include <string>

#include "core/parallel.h"

#include "core/reduce.h"

namespace primal {

template <typename T>
Embedding<T>::Embedding(ParameterStore<T>& params, const ModelConfig& config) : config_(config) {
  if (config.input == InputKind::kTokens) {
    tok_ = params.add("embed.tok.weight", {config.vocab, config.width}, Split::kReplicated,
                      Init::kNormal);
  } else {
    patch_ = std::make_unique<Linear<T>>(params, "embed.patch", config.patch_dim, config.width);
  }
  pos_ = params.add("embed.pos.weight", {config.max_len, config.width}, Split::kReplicated,
                    Init::kNormal);
  if (config.has_cls()) {
    cls_ = params.add("embed.cls", {config.width}, Split::kReplicated, Init::kNormal);
  }
}

template <typename T>
Tensor<T> Embedding<T>::forward(Arena& arena, const Batch& batch, const Sequence& seq) {
  const int B = batch.B, N = batch.N, C = config_.width, first = cls_ ? 1 : 0;
  if (seq.N > config_.max_len) {
    throw Error("Embedding: " + std::to_string(seq.N) + " positions but the position table has " +
                std::to_string(config_.max_len));
  }
  batch_ = &batch;
  seq_ = seq;
  Tensor<T> in;  // [B*N, C]: the embedded inputs before positions are added
  if (patch_) {
    Tensor<T> patches = arena.alloc<T>({int64_t(B) * N, config_.patch_dim});
    for (int64_t i = 0; i < patches.numel(); ++i) patches[i] = T(batch.patches[i]);
    in = patch_->forward(arena, patches);
  }
  Tensor<T> x = arena.alloc<T>({B, seq.N, C});
  const T* pos = pos_->value.data();
#pragma omp parallel for schedule(static) if (int64_t(B) * seq.N * C > kParallelGrain)
  for (int b = 0; b < B; ++b) {
    for (int n = 0; n < seq.N; ++n) {
      T* xr = x.data() + (int64_t(b) * seq.N + n) * C;
      const T* src;
      if (n < first) {
        src = cls_->value.data();
      } else if (tok_) {
        const int32_t t = batch.tokens[int64_t(b) * N + n - first];
        src = tok_->value.data() + int64_t(t) * C;
      } else {
        src = in.data() + (int64_t(b) * N + n - first) * C;
      }
      for (int c = 0; c < C; ++c) xr[c] = src[c] + pos[int64_t(n) * C + c];
    }
  }
  return x;
}

template <typename T>
void Embedding<T>::backward(Arena& arena, const Tensor<T>& dx) {
  const int B = batch_->B, N = batch_->N, C = config_.width, first = cls_ ? 1 : 0;
  const int S = seq_.N;
  // Positions: dpos[n] = sum_b dx[b, n], b in order.
#pragma omp parallel for schedule(static) if (int64_t(B) * S * C > kParallelGrain)
  for (int n = 0; n < S; ++n) {
    T* g = pos_->grad.data() + int64_t(n) * C;
    for (int b = 0; b < B; ++b) {
      const T* d = dx.data() + (int64_t(b) * S + n) * C;
      for (int c = 0; c < C; ++c) g[c] += d[c];
    }
  }
  if (cls_) {
    for (int b = 0; b < B; ++b)
      for (int c = 0; c < C; ++c) cls_->grad[c] += dx[int64_t(b) * S * C + c];
  }
  if (tok_) {
    // Rows with the same token add up in position order; channels run in parallel.
    const int64_t rows = int64_t(B) * N;
    T* g = tok_->grad.data();
#pragma omp parallel for schedule(static) if (rows * C > kParallelGrain)
    for (int c0 = 0; c0 < C; c0 += 16) {
      const int c1 = std::min(C, c0 + 16);
      for (int64_t r = 0; r < rows; ++r) {
        const int b = int(r / N), n = int(r % N) + first;
        const T* d = dx.data() + (int64_t(b) * S + n) * C;
        T* gt = g + int64_t(batch_->tokens[r]) * C;
        for (int c = c0; c < c1; ++c) gt[c] += d[c];
      }
    }
  } else {
    Tensor<T> din = arena.alloc<T>({int64_t(B) * N, C});
    for (int b = 0; b < B; ++b)
      std::copy_n(dx.data() + (int64_t(b) * S + first) * C, int64_t(N) * C,
                  din.data() + int64_t(b) * N * C);
    patch_->backward(arena, din, Tensor<T>());
  }
}

template class Embedding<float>;
template class Embedding<double>;

}  // namespace primal
