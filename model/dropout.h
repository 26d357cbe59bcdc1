// Dropout with masks from a counter-based generator keyed by
// (seed, step, layer, site, global element index) (SPEC §3.5): the same mask whatever the
// parallel layout, and nothing stored: backward regenerates it.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "model/sequence.h"

namespace primal {

enum class DropoutSite : uint32_t { kAttention = 1, kMlp = 2 };

// x = x * mask / (1 - p), in place, x [B, N, C]; mask_i = (u_i >= p).
// Backward is the same operation applied to the gradient.
template <typename T>
void dropout_inplace(const Tensor<T>& x, double p, const Sequence& seq, int layer,
                     DropoutSite site);

}  // namespace primal
