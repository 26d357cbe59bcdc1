#include "trainer/host_step.h"

#include <cmath>

#include "model/tensor_parallel.h"
#include "trainer/grad_clip.h"

namespace primal {

HostStep::HostStep(const LoadedConfig& config, Transformer<float>& model, AdamW<float>& optimizer,
                   ProcessGroups* groups, CommTensorParallelGroup* tp)
    : model_(model),
      optimizer_(optimizer),
      groups_(groups),
      tp_(tp),
      ready_(ready_order(model.params(), int(model.layers().size()))) {
  if (groups_ && groups_->dp->size() > 1) {
    buckets_ = std::make_unique<GradientBuckets>(
        *groups_->dp, model_.params().grads().data(), model_.params().numel(), ready_.ranges,
        size_t(config.proto().parallel().bucket_mb() * (1 << 20)), ReduceOp::kAverage);
  }
}

LossTerms HostStep::forward_backward(const Batch& batch, int64_t step, bool last) {
  arena_.reset();
  const LossTerms t = model_.forward(arena_, batch, step);
  if (last && buckets_) buckets_->begin_backward();
  if (last && (buckets_ || tp_)) {
    model_.on_grads_final = [this](int layer) { reduce_gradients_for_layer(layer); };
  } else {
    model_.on_grads_final = nullptr;
  }
  model_.backward(arena_);
  if (last && buckets_) buckets_->wait_all();
  return t;
}

void HostStep::reduce_gradients_for_layer(int layer) {
  auto& params = model_.params().all();
  for (int k : ready_.of_layer[layer + 1]) {
    Parameter<float>& p = params[ready_.slot_of[k]];
    if (p.sharding.sum_grad_over_tp) tp_all_reduce(tp_, p.grad);
  }
  if (buckets_) {
    for (int k : ready_.of_layer[layer + 1]) buckets_->mark_ready(k);
  }
}

void HostStep::scale_grads(float scale) {
  Tensor<float> g = model_.params().grads();
  for (int64_t i = 0; i < g.numel(); ++i) g[i] *= scale;
}

double HostStep::clip(double max_norm) {
  // Sharded gradients count on every TP rank, replicated ones once (they are equal).
  double sum = 0;
  const bool replicated_here = !groups_ || groups_->tp_rank == 0;
  for (const auto& p : model_.params().all()) {
    if (p.sharding.split != Split::kReplicated || replicated_here) {
      sum += sum_of_squares(p.grad.data(), p.grad.numel());
    }
  }
  if (groups_ && groups_->tp->size() > 1) groups_->tp->all_reduce(&sum, 1, ReduceOp::kSum);
  const double norm = std::sqrt(sum);
  if (max_norm > 0) clip_grads_to_norm(model_.params(), norm, max_norm);
  return norm;
}

EvalBatch HostStep::evaluate_batch(const Batch& batch) {
  return evaluate_batch_on(model_, eval_arena_, batch);
}

}  // namespace primal
