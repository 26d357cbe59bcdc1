// `primal train` with train.device CUDA under tensor parallelism: TP = 2 (np 2) and TP = 2 x
// DP = 2 (np 4), the ranks sharing one GPU through parallel.device_transport STAGED_MPI (NCCL
// refuses two ranks on one device; the model's code is the same under NCCL), on the tiny LM of
// tests/common/scratch_dir.h (SOFTMAX and PRIMAL layers, dropout on) for 20 steps, against the
// one-process CPU run that every rank trains on its own:
//   FP32: each step's loss within 1e-5 (relative), and every final tensor of model.safetensors
//         within 1e-5 of its largest magnitude;
//   BF16: each step's loss within 2e-2 (relative), as the one-GPU BF16 test;
//   a checkpoint saved at step 10 by the device job resumes on the CPU under (1, 1) and under
//   the job's layout, and a CPU checkpoint resumes on the device job, each to within 1e-5 of
//   the uninterrupted CPU run.
// AdamW's eps is 1e-2 here, as in trainer_device_dp_test.cc (rounding-level gradients). Labels
// gpu;mpi: SKIPPED, with the CUDA runtime's reason, where no GPU is present on any rank.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "comm/process_groups.h"
#include "configs/config.h"
#include "core/cuda/device.h"
#include "tests/common/scratch_dir.h"
#include "tests/mpi/mpi_test_env.h"
#include "trainer/safetensors.h"
#include "trainer/trainer.h"

namespace primal {
namespace {

namespace fs = std::filesystem;

constexpr int kSteps = 20;
constexpr int kTp = 2;

class TrainerTensorParallelOnDevice : public ::testing::Test {
 protected:
  void SetUp() override {
    MpiCommunicator& w = testing::world();
    if (w.size() % kTp != 0) GTEST_SKIP() << "needs a multiple of " << kTp << " ranks";
    double missing = cuda::no_device_reason().empty() ? 0 : 1;
    w.all_reduce(&missing, 1, ReduceOp::kSum);
    if (missing > 0) {
      const std::string reason = cuda::no_device_reason();
      GTEST_SKIP() << (reason.empty() ? "another rank has no GPU" : reason);
    }
    dir_ = testing::shared_test_dir("primal_trainer_device_tp_", "corpus.txt");
  }
  void TearDown() override {
    if (!dir_.empty()) testing::remove_shared_test_dir(dir_);
  }

  struct Run {
    std::vector<double> losses;  // per step taken (world rank 0 of a parallel run)
    bool stopped = false;
  };

  // Trains in <dir_>/<name>: on this process alone (parallel false: every rank its own
  // <name>.rank<R>) or over the world with TP = 2 (collective).
  Run train(const std::string& name, std::vector<std::string> overrides, bool parallel,
            const std::string& resume = "") {
    MpiCommunicator& w = testing::world();
    const fs::path dir = dir_ / (parallel ? name : name + ".rank" + std::to_string(w.rank()));
    overrides.push_back("optimizer.eps=1e-2");
    overrides.push_back("logging.dir=" + dir.string());
    overrides.push_back("parallel.device_transport=STAGED_MPI");
    if (parallel) overrides.push_back("parallel.tp=" + std::to_string(kTp));
    const LoadedConfig config = LoadedConfig::parse(
        testing::tiny_lm_config(dir_ / "corpus.txt", kSteps), "tiny", overrides);
    config.validate_layout(parallel ? w.size() : 1);
    ProcessGroups groups;
    if (parallel) groups = make_process_groups(w, kTp);
    Run out;
    {
      Trainer trainer(config, parallel ? &groups : nullptr);
      if (!resume.empty()) trainer.resume(resume);
      trainer.run();
      out.stopped = trainer.stopped();
    }
    if (!parallel || w.rank() == 0) {
      std::ifstream f(dir / "metrics.jsonl");
      for (std::string line; std::getline(f, line);) {
        const nlohmann::json j = nlohmann::json::parse(line);
        if (j.contains("grad_norm")) out.losses.push_back(j["loss"].get<double>());
      }
    }
    return out;
  }
  fs::path rank_dir(const std::string& name) const {
    return dir_ / (name + ".rank" + std::to_string(testing::world().rank()));
  }

  // The losses (where got has them) within tolerance of want's.
  static void expect_losses_near(const Run& got, const Run& want, double tolerance,
                                 const char* what) {
    if (got.losses.empty()) return;
    ASSERT_EQ(got.losses.size(), want.losses.size()) << what;
    for (size_t i = 0; i < got.losses.size(); ++i) {
      ASSERT_TRUE(std::isfinite(got.losses[i])) << what << ": step " << i + 1;
      EXPECT_LE(std::abs(got.losses[i] - want.losses[i]), tolerance * std::abs(want.losses[i]))
          << what << ": step " << i + 1 << ": " << got.losses[i] << ", CPU " << want.losses[i];
    }
  }

  // Every tensor of two model.safetensors (whole tensors: rank 0 gathers them) within 1e-5 of
  // the largest magnitude of want's.
  void expect_models_near(const fs::path& got, const fs::path& want, const char* what) const {
    const LoadedConfig config =
        LoadedConfig::parse(testing::tiny_lm_config(dir_ / "corpus.txt", kSteps), "tiny", {});
    Transformer<float> a(config.model()), b(config.model());
    load_safetensors((got / "model.safetensors").string(), a.params());
    load_safetensors((want / "model.safetensors").string(), b.params());
    for (size_t t = 0; t < a.params().all().size(); ++t) {
      const auto& pa = a.params().all()[t];
      const auto& pb = b.params().all()[t];
      double err = 0, scale = 0;
      for (int64_t i = 0; i < pa.value.numel(); ++i) {
        err = std::max(err, std::abs(double(pa.value[i]) - double(pb.value[i])));
        scale = std::max(scale, std::abs(double(pb.value[i])));
      }
      EXPECT_LE(scale == 0 ? err : err / scale, 1e-5) << what << ": " << pa.name;
    }
  }

  fs::path dir_;
};

TEST_F(TrainerTensorParallelOnDevice, Fp32MatchesTheOneProcessCpuRun) {
  const Run cpu = train("cpu", {}, /*parallel=*/false);
  const Run gpu = train("gpu", {"train.device=CUDA"}, /*parallel=*/true);
  ASSERT_EQ(cpu.losses.size(), size_t(kSteps));
  expect_losses_near(gpu, cpu, 1e-5, "device TP job against the CPU");
  if (testing::world().rank() == 0) {
    expect_models_near(dir_ / "gpu", rank_dir("cpu"), "device TP job against the CPU");
  }
}

TEST_F(TrainerTensorParallelOnDevice, Fp32WithGradientAccumulationMatchesTheOneProcessCpuRun) {
  const Run cpu = train("cpu", {"optimizer.accumulation_steps=2"}, /*parallel=*/false);
  const Run gpu =
      train("gpu", {"optimizer.accumulation_steps=2", "train.device=CUDA"}, /*parallel=*/true);
  expect_losses_near(gpu, cpu, 1e-5, "device TP job against the CPU");
  if (testing::world().rank() == 0) {
    expect_models_near(dir_ / "gpu", rank_dir("cpu"), "device TP job against the CPU");
  }
}

TEST_F(TrainerTensorParallelOnDevice, Bf16StaysWithinTwoPercentOfTheCpuRun) {
  const Run cpu = train("cpu", {}, /*parallel=*/false);
  const Run gpu = train("gpu", {"train.device=CUDA", "train.precision=BF16"}, /*parallel=*/true);
  expect_losses_near(gpu, cpu, 2e-2, "BF16 device TP job against the CPU");
}

TEST_F(TrainerTensorParallelOnDevice, CheckpointsCrossBetweenTheDeviceJobAndTheCpu) {
  MpiCommunicator& w = testing::world();
  const Run whole = train("whole", {}, /*parallel=*/false);
  ASSERT_EQ(whole.losses.size(), size_t(kSteps));
  // Saved by the device job at step 10 ...
  const Run first =
      train("device", {"train.device=CUDA", "checkpoint.stop_at_step=10"}, /*parallel=*/true);
  ASSERT_TRUE(first.stopped);
  if (w.rank() == 0) fs::copy(dir_ / "device", dir_ / "on_cpu", fs::copy_options::recursive);
  w.barrier();
  fs::copy(dir_ / "device", rank_dir("on_one_cpu"), fs::copy_options::recursive);
  // ... resumed on one CPU process and on the CPU under the job's layout,
  const Run one = train("on_one_cpu", {}, /*parallel=*/false, "auto");
  const Run layout = train("on_cpu", {}, /*parallel=*/true, "auto");
  // and a CPU job's checkpoint resumed on the device job.
  train("cpu_first", {"checkpoint.stop_at_step=10"}, /*parallel=*/true);
  const Run back = train("cpu_first", {"train.device=CUDA"}, /*parallel=*/true, "auto");
  // (metrics.jsonl of a resumed run holds the first run's 10 lines and its own 10)
  expect_losses_near(one, whole, 1e-5, "resumed on one CPU process");
  expect_losses_near(layout, whole, 1e-5, "resumed on the CPU under the job's layout");
  expect_losses_near(back, whole, 1e-5, "a CPU checkpoint resumed on the device job");
  expect_models_near(rank_dir("on_one_cpu"), rank_dir("whole"), "resumed on one CPU process");
  if (w.rank() == 0) {
    expect_models_near(dir_ / "on_cpu", rank_dir("whole"), "resumed on the CPU (layout)");
    expect_models_near(dir_ / "cpu_first", rank_dir("whole"), "resumed on the device job");
  }
}

}  // namespace
}  // namespace primal
