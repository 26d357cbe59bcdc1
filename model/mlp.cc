#include "model/mlp.h"

#include <algorithm>

#include "core/element_math.h"
#include "core/elementwise.h"
#include "core/parallel.h"
#include "model/blocks.h"

namespace primal {

template <typename T>
Tensor<T> gelu_forward(Arena& arena, const Tensor<T>& x) {
  Tensor<T> y = arena.alloc<T>(x.shape());
  const int64_t n = x.numel();
  const T* in = x.data();
  T* out = y.data();
  for_each_element(n, [=](int64_t i) { out[i] = em::gelu(in[i]); }, {in});
  return y;
}

template <typename T>
void gelu_with_grad(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& grad) {
  const int64_t n = x.numel();
  const T* in = x.data();
  T* out = y.data();
  T* d = grad.data();
  for_each_element(n,
                   [=](int64_t i) {
                     out[i] = em::gelu(in[i]);
                     d[i] = em::gelu_grad(in[i]);
                   },
                   {in});
}

namespace {

// Rows [r0, r0 + rows) of a [*, width] tensor.
template <typename T>
Tensor<T> row_block(const Tensor<T>& t, int64_t width, int64_t r0, int64_t rows) {
  return Tensor<T>(t.data() + r0 * width, {rows, width});
}

}  // namespace

template <typename T>
Mlp<T>::Mlp(ParameterStore<T>& params, const std::string& name, int width, int hidden,
            TensorParallelGroup* tp, int64_t tile_rows)
    : fc1_(params, name + ".fc1", width, hidden, {Split::kColumn}, tp),
      fc2_(params, name + ".fc2", hidden, width, {Split::kRow}, tp),
      tp_(tp),
      tile_rows_(tile_rows > 0 ? tile_rows
                               : std::max(kMlpMinBlockRows,
                                          kMlpBlockBytes / int64_t(sizeof(T) * fc1_.out()))) {
  check(tile_rows >= 0, "Mlp: tile_rows must be >= 0");
  if (whole_batch_is_one_block(tp)) tile_rows_ = 0;  // 0: all rows
}

template <typename T>
Tensor<T> Mlp<T>::forward(Arena& arena, const Tensor<T>& x, LayerNorm<T>* norm) {
  const int64_t C = fc1_.in(), F = fc1_.out(), rows = x.numel() / C;
  const int64_t tile = tile_rows_ > 0 ? tile_rows_ : rows;
  x_ = x;
  norm_ = norm;
  h_ = arena.alloc<T>({rows, F});
  norm_stats_ = norm ? arena.alloc<T>({2, rows}) : Tensor<T>();  // mean, rstd of every row
  Tensor<T> y = arena.alloc<T>({rows, C});
  for_each_block(arena, (rows + tile - 1) / tile, [&](Arena& scratch, int, int64_t block) {
    const int64_t r0 = block * tile, n = std::min(tile, rows - r0);
    Tensor<T> in = row_block(x, C, r0, n);
    if (norm) {
      Tensor<T> normed = scratch.alloc<T>({n, C});
      norm->forward_rows(in.data(), n, normed.data(), norm_stats_.data() + r0,
                         norm_stats_.data() + rows + r0);
      in = normed;
    }
    Tensor<T> h = row_block(h_, F, r0, n);
    fc1_.forward_into(in, h);
    fc2_.forward_into(gelu_forward(scratch, h), row_block(y, C, r0, n));
  });
  return y;
}

template <typename T>
void Mlp<T>::backward(Arena& arena, const Tensor<T>& dy, const Tensor<T>& dx) {
  const int64_t C = fc1_.in(), F = fc1_.out(), rows = x_.numel() / C;
  const int64_t tile = tile_rows_ > 0 ? tile_rows_ : rows, blocks = (rows + tile - 1) / tile;
  // The accumulators, in this order: fc1 W, b; fc2 W, b; the norm's w, b.
  const GradSlots<T> slots(arena, block_slots(blocks),
                           {fc1_.weight(), fc1_.bias(), fc2_.weight(), fc2_.bias(),
                            norm_ ? norm_->weight() : nullptr, norm_ ? norm_->bias() : nullptr});
  for_each_block(arena, blocks, [&](Arena& scratch, int slot, int64_t block) {
    const int64_t r0 = block * tile, n = std::min(tile, rows - r0);
    const Tensor<T> x = row_block(x_, C, r0, n), dyb = row_block(dy, C, r0, n);
    const Tensor<T> dxb = row_block(dx, C, r0, n);
    const T* mean = norm_stats_.data() + r0;
    const T* rstd = norm_stats_.data() + rows + r0;
    Tensor<T> in = x;
    if (norm_) {
      in = scratch.alloc<T>({n, C});
      norm_->apply_rows(x.data(), n, mean, rstd, in.data());
    }
    Tensor<T> act = scratch.alloc<T>({n, F}), dh = scratch.zeros<T>({n, F});
    Tensor<T> gelu_grad = scratch.alloc<T>({n, F});
    gelu_with_grad(row_block(h_, F, r0, n), act, gelu_grad);
    // d loss / d gelu output, then in place d loss / d h:
    fc2_.backward_from(scratch, act, dyb, dh, slots.grad(slot, 2), slots.grad(slot, 3));
    T* g = dh.data();
    const T* gg = gelu_grad.data();
    for_each_element(n * F, [=](int64_t i) { g[i] *= gg[i]; }, {g, gg});
    if (!norm_) {
      fc1_.backward_from(scratch, in, dh, dxb, slots.grad(slot, 0), slots.grad(slot, 1));
      return;
    }
    Tensor<T> dnormed = scratch.zeros<T>({n, C});
    fc1_.backward_from(scratch, in, dh, dnormed, slots.grad(slot, 0), slots.grad(slot, 1));
    tp_all_reduce(tp_, dnormed);  // each rank's slice of the MLP gave a partial sum
    norm_->backward_rows(scratch, x.data(), dnormed.data(), mean, rstd, n, dxb.data(),
                         slots.grad(slot, 4), slots.grad(slot, 5));
  });
  slots.add_to_grads();
}

template Tensor<float> gelu_forward(Arena&, const Tensor<float>&);
template Tensor<double> gelu_forward(Arena&, const Tensor<double>&);
template void gelu_with_grad(const Tensor<float>&, const Tensor<float>&, const Tensor<float>&);
template void gelu_with_grad(const Tensor<double>&, const Tensor<double>&, const Tensor<double>&);
template class Mlp<float>;
template class Mlp<double>;

}  // namespace primal
