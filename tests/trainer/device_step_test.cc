// The trainer's device path (train.device CUDA, trainer/device_step.h) without a GPU, on one
// process: on the stand-in of host_stand_in.h the device path must give the CPU path's run bit
// for bit. That proves the plumbing around the GPU (micro-batches and their average, clip,
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
#include "tests/common/metrics_file.h"
#include "tests/common/scratch_dir.h"
#include "tests/trainer/host_stand_in.h"
#include "trainer/trainer.h"

namespace primal {
namespace {

namespace fs = std::filesystem;

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
    Trainer trainer(config, nullptr, testing::host_stand_in(&uploads_, &grad_downloads_));
    if (!resume.empty()) trainer.resume(resume);
    trainer.run();
    return testing::metrics_without_timings(dir_ / name);
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
