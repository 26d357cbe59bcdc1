// The trainer's device path (train.device CUDA) without a GPU under tensor and data
// parallelism: the stand-in of host_stand_in.h under mpirun, TP = 2 (np 2) and TP = 2 x DP = 2
// (np 4), against the CPU run of the same layout, bit for bit: the per-step metrics (rank 0),
// every rank's final shard and model.safetensors; and a checkpoint saved by the stand-in job
// resumes on the stand-in and on the CPU to the uninterrupted run's bits. tests/gpu's
// TrainerTensorParallelOnDevice runs the same layouts with the real device model.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "comm/process_groups.h"
#include "configs/config.h"
#include "tests/common/metrics_file.h"
#include "tests/common/scratch_dir.h"
#include "tests/mpi/mpi_test_env.h"
#include "tests/trainer/host_stand_in.h"
#include "trainer/trainer.h"

namespace primal {
namespace {

namespace fs = std::filesystem;

constexpr int kTp = 2;

class StandInDeviceUnderTensorParallelism : public ::testing::Test {
 protected:
  void SetUp() override {
    MpiCommunicator& w = testing::world();
    if (w.size() % kTp != 0) GTEST_SKIP() << "needs a multiple of " << kTp << " ranks";
    dir_ = testing::shared_test_dir("primal_device_step_mpi_", "corpus.txt");
    groups_ = make_process_groups(w, kTp);
  }
  void TearDown() override {
    if (!dir_.empty()) testing::remove_shared_test_dir(dir_);
  }

  struct Run {
    std::vector<nlohmann::json> metrics;  // rank 0's lines without their timing fields
    std::vector<float> shard;             // this rank's final parameter values
  };

  // 12 steps of 2 accumulated micro-batches, dropout on, an evaluation at 6 and 12; on the
  // stand-in device unless cpu.
  Run train(const std::string& name, bool cpu, std::vector<std::string> overrides = {},
            const std::string& resume = "") {
    overrides.push_back("logging.dir=" + (dir_ / name).string());
    overrides.push_back("parallel.tp=" + std::to_string(kTp));
    overrides.push_back("optimizer.accumulation_steps=2");
    overrides.push_back("train.eval_every=6");
    if (!cpu) overrides.push_back("train.device=CUDA");
    const LoadedConfig config =
        LoadedConfig::parse(testing::tiny_lm_config(dir_ / "corpus.txt", 12), "tiny", overrides);
    Run out;
    {
      Trainer trainer(config, &groups_, testing::host_stand_in(&uploads_, &grad_downloads_));
      if (!resume.empty()) trainer.resume(resume);
      trainer.run();
      const auto& all = trainer.model().params().all();
      out.shard.assign(all.front().value.data(),
                       all.front().value.data() + trainer.model().params().numel());
    }
    if (testing::world().rank() == 0) out.metrics = testing::metrics_without_timings(dir_ / name);
    return out;
  }

  void expect_same_model(const std::string& a, const std::string& b) {
    if (testing::world().rank() != 0) return;
    EXPECT_TRUE(testing::file_bytes(dir_ / a / "model.safetensors") ==
                testing::file_bytes(dir_ / b / "model.safetensors"))
        << a << " and " << b << ": model.safetensors differ";
  }

  fs::path dir_;
  ProcessGroups groups_;
  int uploads_ = 0;
  int grad_downloads_ = 0;
};

TEST_F(StandInDeviceUnderTensorParallelism, GivesTheCpuRunOfTheSameLayoutBitForBit) {
  const Run cpu = train("cpu", /*cpu=*/true);
  const Run device = train("device", /*cpu=*/false);
  EXPECT_EQ(uploads_, 1);  // this rank's shard of the initial weights
  if (testing::world().rank() == 0) {
    ASSERT_EQ(cpu.metrics.size(), 12u + 3u);  // 12 steps, evaluations at 0, 6 and 12
    EXPECT_EQ(device.metrics, cpu.metrics);
  }
  EXPECT_EQ(device.shard, cpu.shard) << "rank " << testing::world().rank();
  expect_same_model("device", "cpu");
}

TEST_F(StandInDeviceUnderTensorParallelism, ItsCheckpointResumesOnItAndOnTheCpu) {
  const Run whole = train("whole", /*cpu=*/true);
  train("split", /*cpu=*/false, {"checkpoint.stop_at_step=5"});
  if (testing::world().rank() == 0) {
    ASSERT_TRUE(fs::exists(dir_ / "split" / "checkpoints" / "step_00000005"));
    fs::copy(dir_ / "split", dir_ / "on_cpu", fs::copy_options::recursive);
  }
  testing::world().barrier();
  const Run resumed = train("split", /*cpu=*/false, {}, "auto");
  const Run on_cpu = train("on_cpu", /*cpu=*/true, {}, "auto");
  EXPECT_EQ(resumed.shard, whole.shard) << "rank " << testing::world().rank();
  EXPECT_EQ(on_cpu.shard, whole.shard) << "rank " << testing::world().rank();
  if (testing::world().rank() == 0) {
    EXPECT_EQ(resumed.metrics, whole.metrics);
    EXPECT_EQ(on_cpu.metrics, whole.metrics);
  }
  expect_same_model("split", "whole");
  expect_same_model("on_cpu", "whole");
}

}  // namespace
}  // namespace primal
