// The order in which backward makes the gradients final: the data-parallel buckets
// (comm/gradient_buckets.h, comm/nccl/device_gradient_buckets.h) are filled and issued in it,
// on the host and on the device alike. Backward runs the last Transformer layer first, down to
// layer 0, and then the rest (embeddings, final norm, head: Parameter::layer -1).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/parameters.h"

namespace primal {

// Elements [offset, offset + count) of a flat gradient buffer.
struct GradRange {
  int64_t offset = 0;
  int64_t count = 0;
};

// One parameter's gradient: where it lies, the layer whose backward makes it final, and
// whether it is summed over the tensor-parallel group then (Sharding::sum_grad_over_tp).
struct GradSlot {
  GradRange range;
  int layer = -1;
  bool sum_over_tp = false;
};

// ranges[k] is the k-th gradient to become final (the buckets' mark_ready(k)); of_layer[l + 1]
// lists the positions k of layer l's gradients (of_layer[0]: layer -1), and slot_of[k] the
// slot it came from. Within a layer, slot order. tp_summed_of_layer[l + 1]: the ranges of
// layer l that are summed over TP once final (attn.concat), before the data-parallel buckets
// take them (the host step and the device step both do it there).
struct ReadyOrder {
  std::vector<GradRange> ranges;
  std::vector<std::vector<int>> of_layer;
  std::vector<int> slot_of;
  std::vector<std::vector<GradRange>> tp_summed_of_layer;
};

// Throws an Error if a slot's layer is outside [-1, layers).
ReadyOrder ready_order(std::span<const GradSlot> slots, int layers);
// The host store's gradients, in store order (the device model has its own slots: its buffer
// aligns each parameter, model/cuda/transformer.h).
ReadyOrder ready_order(ParameterStore<float>& params, int layers);

}  // namespace primal
