// `primal train` with train.device CUDA on 2 processes, one GPU each: data parallelism over
// NCCL (trainer/device_data_parallel.h), under mpirun -np 2 (labels gpu;mpi). A tiny LM config
// (two layers, SOFTMAX and PRIMAL, dropout on, ksvd_sync GLOBAL) trained for 20 steps on 2
// GPUs (DP = 2) against the same config on one GPU and on the CPU (FP32), which every rank
// runs on its own:
//   each step's loss within 1e-5 (relative) of both, and the final parameters within 1e-5
//   (relative to each tensor's largest magnitude) of both, with and without gradient
//   accumulation (the buckets run on the last micro-batch only).
// AdamW's eps is 1e-2 here (as nccl_buckets_test.cc's step): with a tiny eps an element whose
// gradient is at rounding level moves by about lr whatever its sign, and rounding differences
// between the layouts would then show in the parameters at 1e-3, not 1e-5.
// Every rank checks that it has a GPU of its own; where any rank has none, every rank reports
// SKIPPED with the reason.
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
#include "tests/common/scratch_dir.h"
#include "tests/gpu/nccl_fixture.h"
#include "tests/mpi/mpi_test_env.h"
#include "trainer/trainer.h"

namespace primal {
namespace {

namespace fs = std::filesystem;

constexpr int kSteps = 20;
constexpr double kTolerance = 1e-5;

// NcclFixture's set-up is the skip check (every rank agrees) and leaves an idle NCCL
// communicator over the world; the trainer makes its own over the DP group.
class TrainerDataParallelOnDevice : public testing::NcclFixture {
 protected:
  TrainerDataParallelOnDevice() : NcclFixture("world") {}

  struct Run {
    std::vector<double> losses;              // per step (read on world rank 0 only for DP)
    std::vector<std::vector<float>> params;  // the final host copy, per tensor
    std::vector<std::string> names;
  };

  void SetUp() override {
    MpiCommunicator& w = testing::world();
    if (w.size() < 2) GTEST_SKIP() << "data parallelism needs at least 2 ranks (run under np 2)";
    NcclFixture::SetUp();
    if (IsSkipped()) return;
    dir_ = testing::shared_test_dir("primal_trainer_device_dp_", "corpus.txt");
  }
  void TearDown() override {
    NcclFixture::TearDown();
    if (!dir_.empty()) testing::remove_shared_test_dir(dir_);
  }

  std::string config_text() const { return testing::tiny_lm_config(dir_ / "corpus.txt", kSteps); }

  // Trains in <dir_>/<name>: on this process alone (groups null) or data parallel over the
  // world (collective).
  Run train(const std::string& name, std::vector<std::string> overrides, bool data_parallel) {
    MpiCommunicator& w = testing::world();
    overrides.push_back("optimizer.eps=1e-2");  // see the top of this file
    overrides.push_back("logging.dir=" + (dir_ / name).string());
    const LoadedConfig config = LoadedConfig::parse(config_text(), "tiny", overrides);
    config.validate_layout(data_parallel ? w.size() : 1);
    ProcessGroups groups;
    if (data_parallel) groups = make_process_groups(w, 1);
    Run out;
    {
      Trainer trainer(config, data_parallel ? &groups : nullptr);
      trainer.run();
      for (const auto& p : trainer.model().params().all()) {
        out.names.push_back(p.name);
        out.params.emplace_back(p.value.data(), p.value.data() + p.value.numel());
      }
    }
    if (!data_parallel || w.rank() == 0) {
      std::ifstream f(dir_ / name / "metrics.jsonl");
      for (std::string line; std::getline(f, line);) {
        const nlohmann::json j = nlohmann::json::parse(line);
        if (j.contains("grad_norm")) out.losses.push_back(j["loss"].get<double>());
      }
    }
    return out;
  }

  // got against want: the losses (where got has them) and every parameter tensor.
  static void expect_near(const Run& got, const Run& want, const char* what) {
    if (!got.losses.empty()) {
      ASSERT_EQ(got.losses.size(), want.losses.size()) << what;
      for (size_t i = 0; i < got.losses.size(); ++i) {
        ASSERT_TRUE(std::isfinite(got.losses[i])) << what << ": step " << i + 1;
        EXPECT_LE(std::abs(got.losses[i] - want.losses[i]), kTolerance * std::abs(want.losses[i]))
            << what << ": step " << i + 1 << ": 2 GPUs " << got.losses[i] << ", " << want.losses[i];
      }
    }
    ASSERT_EQ(got.params.size(), want.params.size()) << what;
    for (size_t t = 0; t < got.params.size(); ++t) {
      ASSERT_EQ(got.names[t], want.names[t]);
      ASSERT_EQ(got.params[t].size(), want.params[t].size()) << got.names[t];
      double err = 0, scale = 0;
      for (size_t i = 0; i < got.params[t].size(); ++i) {
        err = std::max(err, std::abs(double(got.params[t][i]) - double(want.params[t][i])));
        scale = std::max(scale, std::abs(double(want.params[t][i])));
      }
      EXPECT_LE(scale == 0 ? err : err / scale, kTolerance) << what << ": " << got.names[t];
    }
  }

  void expect_two_gpus_match_one_and_the_cpu(const std::vector<std::string>& overrides) {
    const int r = testing::world().rank();
    const Run cpu = train("cpu.rank" + std::to_string(r), overrides, /*data_parallel=*/false);
    std::vector<std::string> on_gpu = overrides;
    on_gpu.push_back("train.device=CUDA");
    const Run one = train("gpu.rank" + std::to_string(r), on_gpu, /*data_parallel=*/false);
    const Run two = train("dp", on_gpu, /*data_parallel=*/true);
    ASSERT_EQ(cpu.losses.size(), size_t(kSteps));
    if (r == 0) {
      ASSERT_EQ(two.losses.size(), size_t(kSteps));
    }
    expect_near(two, one, "2 GPUs against 1 GPU");
    expect_near(two, cpu, "2 GPUs against the CPU");
  }

  fs::path dir_;
};

TEST_F(TrainerDataParallelOnDevice, Fp32TwoGpusMatchOneGpuAndTheCpu) {
  expect_two_gpus_match_one_and_the_cpu({});
}

TEST_F(TrainerDataParallelOnDevice, Fp32WithGradientAccumulationMatchesOneGpuAndTheCpu) {
  expect_two_gpus_match_one_and_the_cpu({"optimizer.accumulation_steps=2"});
}

}  // namespace
}  // namespace primal
