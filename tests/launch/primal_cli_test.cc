// The primal binary as a user runs it: a tiny training run on a real text file, twice
// (identical metrics, bitwise), evaluation of its weights, and bad input (one line on
// stderr, exit 2, nothing written).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/common/metrics_file.h"
#include "tests/common/scratch_dir.h"

#ifdef PRIMAL_CUDA_BACKEND
#include "core/cuda/device.h"
#endif

namespace {

namespace fs = std::filesystem;

struct Result {
  int code;
  std::string out, err;
};

// Runs the primal binary with args (shell-quoted by the caller); captures stdout and stderr.
Result run(const std::string& args, const fs::path& dir) {
  const fs::path out = dir / "stdout.txt", err = dir / "stderr.txt";
  const std::string cmd =
      std::string(PRIMAL_BINARY) + " " + args + " >" + out.string() + " 2>" + err.string();
  const int status = std::system(cmd.c_str());
  auto slurp = [](const fs::path& p) {
    std::ifstream f(p);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  };
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
}

class PrimalCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = primal::testing::fresh_test_dir("primal_cli_");
    primal::testing::write_prose_corpus(dir_ / "corpus.txt");
    std::ofstream(dir_ / "tiny.pbtxt")
        << "model { width: 32 heads: 2 mlp_width: 64 max_len: 32 layers: [SOFTMAX, PRIMAL] "
           "low_rank: 4 rank_multi: 2 eta: 0.1 dropout: 0.1 }\n"
           "data { path: \""
        << (dir_ / "corpus.txt").string()
        << "\" seq_len: 32 batch_size: 4 }\n"
           "optimizer { lr: 3e-3 }\nschedule { warmup_steps: 3 }\n"
           "train { steps: 12 eval_every: 6 eval_batches: 4 log_every: 2 threads: 1 }\n";
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string config() const { return (dir_ / "tiny.pbtxt").string(); }
  std::string run_dir(const std::string& name) const { return (dir_ / name).string(); }

  // The metrics lines without their timing fields.
  std::vector<nlohmann::json> losses(const std::string& run) const {
    return primal::testing::metrics_without_timings(run);
  }

  fs::path dir_;
};

TEST_F(PrimalCli, SameConfigAndSeedGiveBitwiseIdenticalMetrics) {
  for (const char* name : {"a", "b"}) {
    Result r = run("train --config " + config() + " --set logging.dir=" + run_dir(name), dir_);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("step     12/12"), std::string::npos) << r.out;
  }
  const auto a = losses(run_dir("a")), b = losses(run_dir("b"));
  ASSERT_EQ(a.size(), 6u + 3u);  // 6 logged steps, evaluations at 0, 6 and 12
  for (size_t i = 0; i < a.size(); ++i) {
    // JSON numbers are printed with round-trip precision: equal text means equal bits.
    EXPECT_EQ(a[i].dump(), b[i].dump()) << "line " << i;
  }
  // The loss falls on this repetitive text.
  EXPECT_LT(a.back()["ce"].get<double>(), a.front()["ce"].get<double>() - 1.0);
  // Another seed gives another run.
  Result r = run(
      "train --config " + config() + " --set train.seed=2 --set logging.dir=" + run_dir("c"), dir_);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(losses(run_dir("c"))[1].dump(), a[1].dump());
}

TEST_F(PrimalCli, EvalOfTheSavedWeightsReproducesTheFinalValidation) {
  // The final evaluation of training covers the whole val split, as `primal eval` does.
  const std::string common = " --config " + config() + " --set train.eval_batches=0" +
                             " --set logging.dir=" + run_dir("a");
  Result r = run("train" + common, dir_);
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json final_val = losses(run_dir("a")).back();
  ASSERT_EQ(final_val["split"], "val");
  Result e = run("eval" + common, dir_);
  ASSERT_EQ(e.code, 0) << e.err;
  const nlohmann::json j = nlohmann::json::parse(e.out);
  EXPECT_EQ(j["split"], "val");
  EXPECT_EQ(j["ce"].get<double>(), final_val["ce"].get<double>());
  EXPECT_EQ(j["samples"], final_val["samples"]);
  EXPECT_DOUBLE_EQ(j["perplexity"].get<double>(), std::exp(j["ce"].get<double>()));
  // A text file, evaluated as SPEC §7 says: consecutive whole windows of N+1 bytes.
  Result t = run("eval" + common + " --data " + (dir_ / "corpus.txt").string(), dir_);
  ASSERT_EQ(t.code, 0) << t.err;
  const auto bytes = fs::file_size(dir_ / "corpus.txt");
  EXPECT_EQ(nlohmann::json::parse(t.out)["samples"].get<int64_t>(), int64_t(bytes / 33));
}

// What a new user tries first: a config's own warmup (3 here) longer than a short run is capped
// at the run, and says so; and `primal import` of a run's weights needs none of its data.
TEST_F(PrimalCli, AShortRunCapsTheWarmupAndImportNeedsNoData) {
  Result r = run("train --config " + config() + " --set train.steps=2 --set train.eval_every=0" +
                     " --set logging.dir=" + run_dir("short"),
                 dir_);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("primal train: schedule.warmup_steps 3 capped at train.steps 2"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("step      2/2"), std::string::npos) << r.out;
  const std::string weights = run_dir("short") + "/model.safetensors";
  ASSERT_TRUE(fs::exists(weights));
  Result i = run("import " + weights + " --config " + config() +
                     " --set data.path=/nonexistent/corpus.txt --out " + run_dir("imported"),
                 dir_);
  ASSERT_EQ(i.code, 0) << i.err;
  EXPECT_TRUE(fs::exists(fs::path(run_dir("imported")) / "latest")) << i.out;
}

TEST_F(PrimalCli, BadInputIsOneLineExitTwoAndNothingWritten) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"train --config " + config() + " --set model.heads=3", "model.heads: 3 does not divide"},
      {"train --config " + config() + " --set data.path=/nonexistent/x.txt",
       "data.path: '/nonexistent/x.txt' does not exist"},
      {"train --config /nonexistent.pbtxt", "/nonexistent.pbtxt: cannot read the config file"},
      {"train --config " + config() + " --set optimizer.lrr=1", "unknown field 'lrr'"},
      {"train", "--config is required"},
      {"eval --config " + config() + " --weights " + (dir_ / "absent.safetensors").string(),
       "absent.safetensors: cannot open"},
      {"frobnicate", "subcommand"},
  };
  for (const auto& [args, expected] : cases) {
    Result r = run(args + " --set logging.dir=" + run_dir("never"), dir_);
    if (args == "frobnicate" || args == "train") r = run(args, dir_);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.err;
    EXPECT_NE(r.err.find(expected), std::string::npos) << args << "\n" << r.err;
    EXPECT_LE(std::count(r.err.begin(), r.err.end(), '\n'), 2) << r.err;
    EXPECT_FALSE(fs::exists(run_dir("never"))) << args;
  }
}

TEST_F(PrimalCli, NonFiniteLossStopsWithExitFourOrIsSkipped) {
  Result r = run(
      "train --config " + config() +
          " --set optimizer.lr=1e30 --set optimizer.grad_clip=0 --set logging.dir=" + run_dir("a"),
      dir_);
  EXPECT_EQ(r.code, 4) << r.out << r.err;
  EXPECT_NE(r.err.find("lower optimizer.lr"), std::string::npos) << r.err;
  Result s = run("train --config " + config() +
                     " --set optimizer.lr=1e30 --set optimizer.grad_clip=0 --set "
                     "train.on_nonfinite=SKIP --set logging.dir=" +
                     run_dir("b"),
                 dir_);
  EXPECT_EQ(s.code, 0) << s.err;
  EXPECT_NE(s.out.find("SKIPPED"), std::string::npos) << s.out;
}

// Every file under dir with its bytes.
std::map<std::string, std::string> files_under(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream f(e.path(), std::ios::binary);
    std::stringstream s;
    s << f.rdbuf();
    out[e.path().string()] = s.str();
  }
  return out;
}

// train.device CUDA where it cannot run: in a build without the backend, or (the runtime's
// reason) on a machine without a GPU. One line, exit 2, before anything is written: a run
// directory with a checkpoint to resume stays byte for byte as it was.
TEST_F(PrimalCli, CudaDeviceThatCannotRunIsOneLineExitTwoAndNothingChanged) {
#ifdef PRIMAL_CUDA_BACKEND
  const std::string reason = primal::cuda::no_device_reason();
  if (reason.empty())
    GTEST_SKIP() << "a GPU is present: tests/gpu/trainer_device_test trains on it";
  const std::string expected = "primal: error: --set train.device: CUDA: " + reason + "\n";
#else
  const std::string expected =
      "primal: error: --set train.device: CUDA: this build has no CUDA backend (built with "
      "PRIMAL_CUDA=OFF)";
#endif
  const std::string dir = run_dir("run");
  const Result first = run(
      "train --config " + config() + " --set checkpoint.stop_at_step=6 --set logging.dir=" + dir,
      dir_);
  ASSERT_EQ(first.code, 75) << first.out << first.err;
  const auto before = files_under(dir);
  ASSERT_FALSE(before.empty());
  for (const char* precision : {"FP32", "BF16"}) {
    const Result r = run("train --config " + config() +
                             " --set train.device=CUDA --set train.precision=" + precision +
                             " --resume auto --set logging.dir=" + dir,
                         dir_);
    EXPECT_EQ(r.code, 2) << r.out << r.err;
    EXPECT_EQ(r.err.rfind(expected, 0), 0u) << "expected: " << expected << "\ngot: " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_TRUE(files_under(dir) == before) << "files changed by the " << precision << " run";
  }
}

}  // namespace
