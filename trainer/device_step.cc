// TrainingStep on a cuda::DeviceTransformer<T> (T = float or bf16), tensor and data parallel
// through trainer/device_data_parallel.h on more than one process. Built only with PRIMAL_CUDA;
// trainer/device_step_unavailable.cc stands in for it otherwise.
#include "trainer/device_step.h"

#include <functional>
#include <limits>
#include <span>
#include <utility>
#include <vector>

#include "core/cuda/device.h"
#include "core/cuda/kernels_model.h"
#include "core/error.h"
#include "model/cuda/transformer.h"
#include "trainer/device_data_parallel.h"

namespace primal {
namespace {

template <typename T>
class CudaStep final : public TrainingStep {
 public:
  CudaStep(const LoadedConfig& config, int device, ProcessGroups* groups)
      : device_(device),
        precision_(config::Train::Precision_Name(config.proto().train().precision())),
        adamw_(config.adamw()),
        transport_(config.proto().parallel().device_transport()),
        tp_(groups && groups->tp_size > 1 ? make_device_tensor_parallel(config, *groups) : nullptr),
        model_(config.model(), tp_.get()) {
    if (groups && groups->dp_size > 1) dp_ = make_device_data_parallel(config, *groups, model_);
    // As the host step: on the step's last micro-batch, each layer's replicated gradients are
    // summed over TP as they become final, then its buckets go.
    model_.on_grads_final = [this](int layer) {
      if (!last_) return;
      model_.sum_grads_over_tp(layer);
      if (dp_) dp_->grads_final(layer);
    };
  }

  std::string describe() const override {
    const cuda::DeviceInfo info = cuda::device_info(device_);
    return "GPU " + std::to_string(device_) + ": " + info.name + " (sm_" +
           std::to_string(info.major) + std::to_string(info.minor) + "), " + precision_ +
           (tp_ ? ", tensor parallel over " + std::to_string(tp_->size()) + " ranks (" +
                      config::Parallel::DeviceTransport_Name(transport_) + ")"
                : "") +
           (dp_ ? ", " + dp_->describe() : "");
  }

  void zero_grads() override { model_.params().zero_grads(); }

  LossTerms forward_backward(const Batch& batch, int64_t step, bool last) override {
    const LossTerms terms = model_.forward(batch, step, /*training=*/true);
    last_ = last;
    if (dp_) dp_->before_backward(last);
    model_.backward();
    if (dp_ && last) dp_->after_backward();
    last_ = false;
    return terms;
  }

  void scale_grads(float scale) override {
    cuda::scale_inplace({model_.stream(), &model_.allocator()}, model_.params().grads(),
                        model_.params().numel(), scale);
  }

  double clip(double max_norm) override {
    // Without clipping, the norm alone: no finite norm reaches a coefficient below 1 against
    // the largest double, so the gradients stay as they are.
    return model_.clip_grad_norm(max_norm > 0 ? max_norm : std::numeric_limits<double>::max());
  }

  void adamw_step(double lr) override { model_.adamw_step(lr, adamw_); }

  EvalBatch evaluate_batch(const Batch& batch) override {
    // Each DP rank evaluates batches of its own: the KSVD sums stay the batch's (the hook of
    // data parallelism would make every rank wait for the others).
    struct KeepHook {
      std::function<void(std::span<double>)>& hook;
      std::function<void(std::span<double>)> kept = std::exchange(hook, nullptr);
      ~KeepHook() { hook = std::move(kept); }
    } keep{model_.reduce_ksvd};
    EvalBatch out{model_.forward(batch, 0, /*training=*/false)};
    if (model_.config().head == HeadKind::kClassifier) {
      const int K = model_.config().num_classes;
      probs_.resize(size_t(batch.B) * K);
      cuda::copy_to_host(probs_.data(), model_.probabilities(), probs_.size() * sizeof(float),
                         model_.stream());
      model_.synchronize();
      out.correct = count_correct(probs_.data(), batch.B, K, batch.targets);
    }
    return out;
  }

  void download(ParameterStore<float>& params, AdamW<float>* optimizer, bool grads) override {
    model_.download(params);
    if (grads) model_.download_grads(params);
    if (optimizer) {
      model_.download_adamw(optimizer->exp_avg().data(), optimizer->exp_avg_sq().data());
      optimizer->set_steps(model_.adamw_steps());
    }
  }

  void upload(const ParameterStore<float>& params, AdamW<float>& optimizer) override {
    model_.upload(params);
    model_.upload_adamw(optimizer.exp_avg().data(), optimizer.exp_avg_sq().data(),
                        optimizer.steps());
  }

 private:
  int device_;
  std::string precision_;
  AdamWOptions adamw_;
  config::Parallel::DeviceTransport transport_;
  std::unique_ptr<cuda::DeviceTensorParallelGroup> tp_;  // before model_, which uses it
  cuda::DeviceTransformer<T> model_;
  std::unique_ptr<DeviceDataParallel> dp_;  // after model_: destroyed (buckets waited) first
  std::vector<float> probs_;                // host copy of an evaluation batch's [B, K]
  bool last_ = false;  // the backward under way is the step's last micro-batch's
};

}  // namespace

std::unique_ptr<TrainingStep> make_device_step(const LoadedConfig& config,
                                               const ParameterStore<float>& params,
                                               AdamW<float>& optimizer, ProcessGroups* groups) {
  const std::string reason = cuda::no_device_reason();
  const bool parallel = groups && groups->world->size() > 1;
  if (parallel) {
    // Every rank agrees before the collectives below (NCCL's set-up), so that a rank without a
    // GPU ends the job instead of leaving the others waiting.
    double missing = reason.empty() ? 0 : 1;
    groups->world->all_reduce(&missing, 1, ReduceOp::kSum);
    if (missing > 0 && reason.empty()) {
      throw Error(config.where("train.device"),
                  "CUDA: " + std::to_string(int(missing)) +
                      " other rank(s) of the job have no usable GPU (their errors say why)");
    }
  }
  if (!reason.empty()) throw Error(config.where("train.device"), "CUDA: " + reason);
  // One process: the first visible device; more: one per node-local rank (modulo the devices).
  const int device = parallel ? select_data_parallel_device(config, *groups) : 0;
  cuda::set_device(device);
  std::unique_ptr<TrainingStep> step;
  if (config.proto().train().precision() == config::Train::BF16) {
    step = std::make_unique<CudaStep<cuda::bf16>>(config, device, groups);
  } else {
    step = std::make_unique<CudaStep<float>>(config, device, groups);
  }
  step->upload(params, optimizer);
  return step;
}

}  // namespace primal
