// A stand-in for a GPU (train.device CUDA, trainer/device_step.h) without one: a TrainingStep
// that keeps its own CPU model and optimizer as "the device" and runs the host step
// (trainer/host_step.h) on them, with the job's tensor- and data-parallel groups. The trainer
// then drives it exactly as a device step (uploads at start-up and resume, host copies before
// checkpoints and histograms, evaluation through the step's own parameters), so a run on the
// stand-in must equal the CPU run of the same layout bit for bit. Used by device_step_test.cc
// (one process) and device_step_mpi_test.cc (TP = 2 and TP = 2 x DP = 2 under mpirun).
#pragma once

#include <algorithm>
#include <memory>
#include <string>

#include "comm/process_groups.h"
#include "comm/tensor_parallel_group.h"
#include "configs/config.h"
#include "trainer/host_step.h"
#include "trainer/trainer.h"
#include "trainer/training_step.h"

namespace primal::testing {

class HostStandIn final : public TrainingStep {
 public:
  // uploads, grad_downloads: counters of the host copies (tests read them). groups: null on
  // one process.
  HostStandIn(const LoadedConfig& config, ProcessGroups* groups, int* uploads, int* grad_downloads)
      : tp_(groups && groups->tp_size > 1 ? std::make_unique<CommTensorParallelGroup>(*groups->tp)
                                          : nullptr),
        model_(config.model(), tp_.get()),
        optimizer_(model_.params(), config.adamw()),
        step_(config, model_, optimizer_, groups, tp_.get()),
        uploads_(uploads),
        grad_downloads_(grad_downloads) {}

  std::string describe() const override { return "a host stand-in"; }
  void zero_grads() override { step_.zero_grads(); }
  LossTerms forward_backward(const Batch& batch, int64_t step, bool last) override {
    return step_.forward_backward(batch, step, last);
  }
  void scale_grads(float scale) override { step_.scale_grads(scale); }
  double clip(double max_norm) override { return step_.clip(max_norm); }
  void adamw_step(double lr) override { step_.adamw_step(lr); }
  EvalBatch evaluate_batch(const Batch& batch) override { return step_.evaluate_batch(batch); }
  void download(ParameterStore<float>& params, AdamW<float>* optimizer, bool grads) override {
    copy(model_.params().values(), params.values());
    if (grads) {
      ++*grad_downloads_;
      copy(model_.params().grads(), params.grads());
    }
    if (optimizer) {
      copy(optimizer_.exp_avg(), optimizer->exp_avg());
      copy(optimizer_.exp_avg_sq(), optimizer->exp_avg_sq());
      optimizer->set_steps(optimizer_.steps());
    }
  }
  void upload(const ParameterStore<float>& params, AdamW<float>& optimizer) override {
    ++*uploads_;
    check(params.numel() == model_.params().numel(), "HostStandIn: the upload has another layout");
    std::copy_n(params.all().front().value.data(), params.numel(), model_.params().values().data());
    copy(optimizer.exp_avg(), optimizer_.exp_avg());
    copy(optimizer.exp_avg_sq(), optimizer_.exp_avg_sq());
    optimizer_.set_steps(optimizer.steps());
  }

 private:
  static void copy(const Tensor<float>& from, Tensor<float> to) {
    check(from.numel() == to.numel(), "HostStandIn: the host copy has another layout");
    std::copy_n(from.data(), from.numel(), to.data());
  }

  std::unique_ptr<CommTensorParallelGroup> tp_;  // before model_, which uses it
  Transformer<float> model_;
  AdamW<float> optimizer_;
  HostStep step_;
  int* uploads_;
  int* grad_downloads_;
};

// The trainer's device factory for it: the stand-in, given the trainer's state, counting its
// host copies into *uploads and *grad_downloads.
inline Trainer::DeviceStepFactory host_stand_in(int* uploads, int* grad_downloads) {
  return [=](const LoadedConfig& config, const ParameterStore<float>& params,
             AdamW<float>& optimizer, ProcessGroups* groups) -> std::unique_ptr<TrainingStep> {
    auto step = std::make_unique<HostStandIn>(config, groups, uploads, grad_downloads);
    step->upload(params, optimizer);
    return step;
  };
}

}  // namespace primal::testing
