#include "model/ready_order.h"

#include "core/error.h"

namespace primal {

ReadyOrder ready_order(std::span<const GradSlot> slots, int layers) {
  ReadyOrder order;
  order.of_layer.assign(layers + 1, {});
  order.tp_summed_of_layer.assign(layers + 1, {});
  for (int layer = layers - 1; layer >= -1; --layer) {
    for (int i = 0; i < int(slots.size()); ++i) {
      if (slots[i].layer != layer) continue;
      order.of_layer[layer + 1].push_back(int(order.ranges.size()));
      order.ranges.push_back(slots[i].range);
      order.slot_of.push_back(i);
      if (slots[i].sum_over_tp) order.tp_summed_of_layer[layer + 1].push_back(slots[i].range);
    }
  }
  check(order.ranges.size() == slots.size(),
        "ready_order: a gradient's layer is outside [-1, layers)");
  return order;
}

ReadyOrder ready_order(ParameterStore<float>& params, int layers) {
  std::vector<GradSlot> slots;
  const float* base = params.grads().data();
  for (const auto& p : params.all())
    slots.push_back({{p.grad.data() - base, p.grad.numel()}, p.layer, p.sharding.sum_grad_over_tp});
  return ready_order(slots, layers);
}

}  // namespace primal
