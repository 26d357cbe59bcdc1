// `primal train` with train.device CUDA (trainer/device_step.h) against the CPU trainer, on a
// tiny LM config (two layers, SOFTMAX and PRIMAL, dropout on) over a generated text:
//   FP32: the loss of each of 20 steps within 1e-5 (relative) of the CPU run's, with and
//         without gradient accumulation, and the validation loss after them likewise;
//   BF16: each step's loss within 2e-2 (relative) of the CPU run's;
//   a run stopped at step 10 on the device (its checkpoint written through the host copies,
//   SPEC §6) and resumed on the device gives steps 11..20 and model.safetensors bit for bit as
//   the run that did not stop.
// Label gpu: SKIPPED, with the CUDA runtime's reason, where no GPU is present.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "configs/config.h"
#include "core/cuda/device.h"
#include "tests/common/scratch_dir.h"
#include "trainer/trainer.h"

namespace primal {
namespace {

namespace fs = std::filesystem;

constexpr int kSteps = 20;

class TrainerOnDevice : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string reason = cuda::no_device_reason();
    if (!reason.empty()) GTEST_SKIP() << reason;
    dir_ = testing::fresh_test_dir("primal_trainer_device_");
    testing::write_prose_corpus(dir_ / "corpus.txt");
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  std::string config_text() const { return testing::tiny_lm_config(dir_ / "corpus.txt", kSteps); }

  struct Run {
    std::vector<double> losses;  // per step, in step order (those this run took)
    double val_loss = 0;
    bool stopped = false;
  };
  // Trains in <dir_>/<name> with the overrides; resume: "" or "auto".
  Run train(const std::string& name, std::vector<std::string> overrides,
            const std::string& resume = "") {
    overrides.push_back("logging.dir=" + (dir_ / name).string());
    const LoadedConfig config = LoadedConfig::parse(config_text(), "tiny", overrides);
    config.validate_layout(1);
    Trainer trainer(config);
    if (!resume.empty()) trainer.resume(resume);
    const EvalResult r = trainer.run();
    Run out;
    out.val_loss = r.loss;
    out.stopped = trainer.stopped();
    std::ifstream f(dir_ / name / "metrics.jsonl");
    for (std::string line; std::getline(f, line);) {
      const nlohmann::json j = nlohmann::json::parse(line);
      if (j.contains("grad_norm")) out.losses.push_back(j["loss"].get<double>());
    }
    return out;
  }
  fs::path dir_;
};

void expect_losses_near(const std::vector<double>& got, const std::vector<double>& want,
                        double tolerance) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << "step " << i + 1;
    EXPECT_LE(std::abs(got[i] - want[i]), tolerance * std::abs(want[i]))
        << "step " << i + 1 << ": device " << got[i] << ", CPU " << want[i];
  }
}

TEST_F(TrainerOnDevice, Fp32LossesOfTwentyStepsMatchTheCpuRun) {
  const Run cpu = train("cpu", {});
  const Run gpu = train("gpu", {"train.device=CUDA"});
  ASSERT_EQ(cpu.losses.size(), size_t(kSteps));
  expect_losses_near(gpu.losses, cpu.losses, 1e-5);
  EXPECT_LE(std::abs(gpu.val_loss - cpu.val_loss), 1e-5 * std::abs(cpu.val_loss));
}

TEST_F(TrainerOnDevice, Fp32WithGradientAccumulationMatchesTheCpuRun) {
  const Run cpu = train("cpu", {"optimizer.accumulation_steps=2"});
  const Run gpu = train("gpu", {"optimizer.accumulation_steps=2", "train.device=CUDA"});
  ASSERT_EQ(cpu.losses.size(), size_t(kSteps));
  expect_losses_near(gpu.losses, cpu.losses, 1e-5);
}

TEST_F(TrainerOnDevice, Bf16LossesStayWithinTwoPercentOfTheCpuRun) {
  const Run cpu = train("cpu", {});
  const Run gpu = train("gpu", {"train.device=CUDA", "train.precision=BF16"});
  ASSERT_EQ(cpu.losses.size(), size_t(kSteps));
  expect_losses_near(gpu.losses, cpu.losses, 2e-2);
}

TEST_F(TrainerOnDevice, CheckpointSavedOnTheDeviceResumesBitwiseOnTheDevice) {
  const Run whole = train("whole", {"train.device=CUDA"});
  const Run first = train("split", {"train.device=CUDA", "checkpoint.stop_at_step=10"});
  ASSERT_TRUE(first.stopped);
  ASSERT_TRUE(fs::exists(dir_ / "split" / "checkpoints" / "step_00000010"));
  const Run rest = train("split", {"train.device=CUDA"}, "auto");
  ASSERT_FALSE(rest.stopped);
  // metrics.jsonl of the resumed run holds the first run's 10 lines and its own 10.
  ASSERT_EQ(rest.losses.size(), size_t(kSteps));
  for (int i = 0; i < kSteps; ++i) {
    EXPECT_EQ(rest.losses[i], whole.losses[i]) << "step " << i + 1;  // bit for bit
  }
  EXPECT_EQ(rest.val_loss, whole.val_loss);
  EXPECT_TRUE(testing::file_bytes(dir_ / "split" / "model.safetensors") ==
              testing::file_bytes(dir_ / "whole" / "model.safetensors"))
      << "model.safetensors differ";
}

}  // namespace
}  // namespace primal
