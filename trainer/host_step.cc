#include "trainer/host_step.h"

#include <cmath>
#include <span>

#include "model/ksvd_loss.h"

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
  if (groups_ && groups_->world->size() > 1) {
    const bool global = config.proto().parallel().ksvd_sync() == config::Parallel::GLOBAL;
    model_.reduce_ksvd = [this, global](std::span<double> sums) {
      const bool over_dp = global && !evaluating_ && groups_->dp_size > 1;
      Communicator& comm = over_dp ? *groups_->world : *groups_->tp;
      if (comm.size() > 1) comm.all_reduce(sums.data(), int64_t(sums.size()), ReduceOp::kSum);
      divide_shared_ksvd_sums(sums, over_dp ? groups_->dp_size : 1, groups_->tp_size);
    };
    if (global) model_.ksvd_data_grad_scale = groups_->dp_size;
  }
}

HostStep::~HostStep() {
  model_.reduce_ksvd = nullptr;
  model_.ksvd_data_grad_scale = 1;
  model_.on_grads_final = nullptr;
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
  if (tp_ && tp_->size() > 1) {
    float* grads = model_.params().grads().data();
    for (const GradRange& r : ready_.tp_summed_of_layer[layer + 1])
      tp_->all_reduce_sum(grads + r.offset, r.count);
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
  double sum = 0;
  const int tp_rank = groups_ ? groups_->tp_rank : 0;
  for (const auto& p : model_.params().all()) {
    if (counts_in_global_norm(p.sharding, tp_rank)) {
      sum += sum_of_squares(p.grad.data(), p.grad.numel());
    }
  }
  if (groups_ && groups_->tp->size() > 1) groups_->tp->all_reduce(&sum, 1, ReduceOp::kSum);
  const double norm = std::sqrt(sum);
  if (max_norm > 0) clip_grads_to_norm(model_.params(), norm, max_norm);
  return norm;
}

EvalBatch HostStep::evaluate_batch(const Batch& batch) {
  evaluating_ = true;
  const EvalBatch out = evaluate_batch_on(model_, eval_arena_, batch);
  evaluating_ = false;
  return out;
}

}  // namespace primal
