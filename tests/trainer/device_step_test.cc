// The trainer's device path (train.device CUDA, trainer/device_step.h) without a GPU: a
// stand-in TrainingStep that keeps its own CPU model and optimizer as "the device" and does
// exactly the CPU step's arithmetic. With it the device path must give the CPU path's run bit
// for bit: that proves the plumbing around the GPU (micro-batches and their average, clip,
// schedule, evaluation through the device's own parameters, the host copies before
// checkpoints, the upload on resume, the AdamW moments and step count in the checkpoint), which
// tests/gpu/trainer_device_test.cc then runs with the real device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "configs/config.h"
#include "core/arena.h"
#include "tests/common/scratch_dir.h"
#include "trainer/device_step.h"
#include "trainer/grad_clip.h"
#include "trainer/trainer.h"

namespace primal {
namespace {

namespace fs = std::filesystem;

void copy(const Tensor<float>& from, Tensor<float> to) {
  std::copy_n(from.data(), from.numel(), to.data());
}

class HostStandIn final : public TrainingStep {
 public:
  HostStandIn(const LoadedConfig& config, int* uploads, int* grad_downloads)
      : model_(config.model()),
        optimizer_(model_.params(), config.adamw()),
        uploads_(uploads),
        grad_downloads_(grad_downloads) {}

  std::string describe() const override { return "a host stand-in"; }
  void zero_grads() override { model_.params().zero_grads(); }
  LossTerms forward_backward(const Batch& batch, int64_t step, bool) override {
    arena_.reset();
    const LossTerms t = model_.forward(arena_, batch, step);
    model_.backward(arena_);
    return t;
  }
  void scale_grads(float scale) override {
    Tensor<float> g = model_.params().grads();
    for (int64_t i = 0; i < g.numel(); ++i) g[i] *= scale;
  }
  double clip(double max_norm) override {
    double sum = 0;  // per parameter, in order, as the trainer sums it
    for (const auto& p : model_.params().all())
      sum += sum_of_squares(p.grad.data(), p.grad.numel());
    const double norm = std::sqrt(sum);
    if (max_norm > 0) clip_grads_to_norm(model_.params(), norm, max_norm);
    return norm;
  }
  void adamw_step(double lr) override { optimizer_.step(lr); }
  EvalBatch evaluate_batch(const Batch& batch) override {
    arena_.reset();
    EvalBatch out{model_.forward(arena_, batch, 0, /*training=*/false)};
    if (model_.config().head == HeadKind::kClassifier) {
      const Tensor<float>& p = model_.probabilities();
      out.correct = count_correct(p.data(), batch.B, int(p.dim(1)), batch.targets);
    }
    return out;
  }
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
    std::copy_n(params.all().front().value.data(), params.numel(), model_.params().values().data());
    copy(optimizer.exp_avg(), optimizer_.exp_avg());
    copy(optimizer.exp_avg_sq(), optimizer_.exp_avg_sq());
    optimizer_.set_steps(optimizer.steps());
  }

 private:
  Transformer<float> model_;
  AdamW<float> optimizer_;
  Arena arena_;
  int* uploads_;
  int* grad_downloads_;
};

class TrainerOnAStandInDevice : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_test_dir("primal_device_step_");
    std::ofstream corpus(dir_ / "corpus.txt");
    for (int i = 0; i < 400; ++i) {
      corpus << "In the beginning God created the heaven and the earth. " << i % 89 << "\n";
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A tiny LM, 12 steps of 2 accumulated micro-batches, dropout on, evaluations at 6 and 12.
  std::string config_text() const {
    return "model { width: 32 heads: 2 mlp_width: 64 max_len: 32 layers: [SOFTMAX, PRIMAL] "
           "low_rank: 4 rank_multi: 2 eta: 0.1 dropout: 0.1 }\n"
           "data { path: \"" +
           (dir_ / "corpus.txt").string() +
           "\" seq_len: 32 batch_size: 4 }\n"
           "optimizer { lr: 3e-3 accumulation_steps: 2 }\nschedule { warmup_steps: 3 }\n"
           "train { steps: 12 eval_every: 6 eval_batches: 2 log_every: 1 threads: 1 }\n";
  }

  // Trains in <dir_>/<name>; on the stand-in device unless cpu. Returns the metrics lines
  // without their timing fields.
  std::vector<nlohmann::json> train(const std::string& name, bool cpu,
                                    std::vector<std::string> overrides = {},
                                    const std::string& resume = "") {
    overrides.push_back("logging.dir=" + (dir_ / name).string());
    if (!cpu) overrides.push_back("train.device=CUDA");
    const LoadedConfig config = LoadedConfig::parse(config_text(), "tiny", overrides);
    Trainer trainer(config, nullptr,
                    [this](const LoadedConfig& c, const ParameterStore<float>& params,
                           AdamW<float>& optimizer, ProcessGroups*) {
                      auto step = std::make_unique<HostStandIn>(c, &uploads_, &grad_downloads_);
                      step->upload(params, optimizer);
                      return step;
                    });
    if (!resume.empty()) trainer.resume(resume);
    trainer.run();
    std::vector<nlohmann::json> out;
    std::ifstream f(dir_ / name / "metrics.jsonl");
    for (std::string line; std::getline(f, line);) {
      nlohmann::json j = nlohmann::json::parse(line);
      for (const char* timing : {"tokens_per_s", "samples_per_s", "elapsed_s"}) j.erase(timing);
      out.push_back(j);
    }
    return out;
  }

  fs::path dir_;
  int uploads_ = 0;
  int grad_downloads_ = 0;  // copies of the device's gradients to the host (histograms only)
};

TEST_F(TrainerOnAStandInDevice, GivesTheCpuRunBitForBit) {
  const auto cpu = train("cpu", /*cpu=*/true);
  EXPECT_EQ(uploads_, 0);
  const auto device = train("device", /*cpu=*/false);
  EXPECT_EQ(uploads_, 1);           // the initial weights
  ASSERT_EQ(cpu.size(), 12u + 3u);  // 12 steps, evaluations at 0, 6 and 12
  EXPECT_EQ(device, cpu);
  EXPECT_TRUE(testing::file_bytes(dir_ / "device" / "model.safetensors") ==
              testing::file_bytes(dir_ / "cpu" / "model.safetensors"))
      << "model.safetensors differ";
}

TEST_F(TrainerOnAStandInDevice, CheckpointsCarryTheDeviceStateAndResumeUploadsIt) {
  const auto whole = train("whole", /*cpu=*/true);
  // Stopped after step 5 on the device; its checkpoint is written from the host copies.
  train("split", /*cpu=*/false, {"checkpoint.stop_at_step=5"});
  ASSERT_TRUE(fs::exists(dir_ / "split" / "checkpoints" / "step_00000005"));
  fs::copy(dir_ / "split", dir_ / "on_cpu", fs::copy_options::recursive);
  // Resumed on the device (the restored state uploaded), and the same checkpoint on the CPU.
  uploads_ = 0;
  const auto resumed = train("split", /*cpu=*/false, {}, "auto");
  EXPECT_EQ(uploads_, 2);  // the initial weights, then the checkpoint's state
  const auto on_cpu = train("on_cpu", /*cpu=*/true, {}, "auto");
  EXPECT_EQ(resumed, whole);
  EXPECT_EQ(on_cpu, whole);
  EXPECT_TRUE(testing::file_bytes(dir_ / "split" / "model.safetensors") ==
              testing::file_bytes(dir_ / "whole" / "model.safetensors"))
      << "model.safetensors differ";
  EXPECT_TRUE(testing::file_bytes(dir_ / "on_cpu" / "model.safetensors") ==
              testing::file_bytes(dir_ / "whole" / "model.safetensors"))
      << "model.safetensors differ";
}

// Histograms read the parameters and gradients on the host: the device's are copied there at
// the steps that write histograms (the first, then 4, 8 and 12 of 12 with histogram_every 4),
// not at every logged step, and a run with TensorBoard off copies no gradients at all.
TEST_F(TrainerOnAStandInDevice, CopiesToTheHostOnlyForHistogramSteps) {
  train("histograms", /*cpu=*/false,
        {"logging.logdir=" + (dir_ / "tb").string(), "logging.histogram_every=4"});
  EXPECT_EQ(grad_downloads_, 4);
  grad_downloads_ = 0;
  train("no_tensorboard", /*cpu=*/false, {"logging.histogram_every=4"});
  EXPECT_EQ(grad_downloads_, 0);
}

}  // namespace
}  // namespace primal
