// The training step on the host (trainer/training_step.h): the trainer's CPU model and
// optimizer, with the parallel collectives of its backward. Under tensor parallelism the
// gradients of parameters replicated over TP are summed over the TP group as each layer's
// become final; with data parallelism the gradient buckets (comm/gradient_buckets.h) average
// every gradient over the DP group during the last micro-batch's backward, in the ready order
// of model/ready_order.h. The clip's norm counts sharded gradients on every TP rank and
// replicated ones once. On more than one process the step installs the model's KSVD hook
// (SPEC §3.4): the partial sums of every PRIMAL layer in one all-reduce, over TP (heads), and
// over TP x DP (the global batch) in training with ksvd_sync GLOBAL; evaluation runs the same
// batches on every DP rank, so it sums over TP only.
#pragma once

#include <memory>
#include <string>

#include "comm/gradient_buckets.h"
#include "comm/process_groups.h"
#include "comm/tensor_parallel_group.h"
#include "configs/config.h"
#include "core/arena.h"
#include "model/ready_order.h"
#include "trainer/training_step.h"

namespace primal {

class HostStep final : public TrainingStep {
 public:
  // model, optimizer, groups (null: one process) and tp (null without TP) outlive the step.
  HostStep(const LoadedConfig& config, Transformer<float>& model, AdamW<float>& optimizer,
           ProcessGroups* groups, CommTensorParallelGroup* tp);
  ~HostStep() override;

  std::string describe() const override { return "the CPU"; }
  void zero_grads() override { model_.params().zero_grads(); }
  LossTerms forward_backward(const Batch& batch, int64_t step, bool last) override;
  void scale_grads(float scale) override;
  double clip(double max_norm) override;
  void adamw_step(double lr) override { optimizer_.step(lr); }
  EvalBatch evaluate_batch(const Batch& batch) override;
  void download(ParameterStore<float>&, AdamW<float>*, bool) override {}
  void upload(const ParameterStore<float>&, AdamW<float>&) override {}

  // The data-parallel buckets (null without data parallelism), for tests and traces.
  GradientBuckets* buckets() { return buckets_.get(); }

 private:
  void reduce_gradients_for_layer(int layer);

  Transformer<float>& model_;
  AdamW<float>& optimizer_;
  ProcessGroups* groups_;
  CommTensorParallelGroup* tp_;
  Arena arena_, eval_arena_;
  ReadyOrder ready_;
  std::unique_ptr<GradientBuckets> buckets_;
  bool evaluating_ = false;  // the KSVD sums of an evaluation batch stay on this DP rank
};

}  // namespace primal
