// Telemetry's event files, read back with the C++ record reader: every scalar at the steps it
// was given with the value it was given, histograms only every logging.histogram_every steps.
#include "trainer/telemetry.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>
#include <tuple>

#include "core/error.h"
#include "model/transformer.h"
#include "trainer/tensorboard/record.h"

namespace primal {
namespace {

namespace fs = std::filesystem;

class TelemetryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("primal_telemetry_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ofstream(dir_ / "corpus.txt") << std::string(4000, 'a');
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A small LM: layers 0 and 2 PRIMAL, layer 1 SOFTMAX.
  LoadedConfig config(const std::string& logging, std::vector<std::string> overrides = {}) {
    const std::string path = (dir_ / "tiny_lm.pbtxt").string();
    std::ofstream(path)
        << "model {\n  width: 16\n  heads: 2\n  mlp_width: 24\n  max_len: 32\n"
           "  low_rank: 3\n  rank_multi: 2\n  layers: [PRIMAL, SOFTMAX, PRIMAL]\n}\n"
           "data {\n  path: \""
        << (dir_ / "corpus.txt").string()
        << "\"\n  seq_len: 32\n  batch_size: 4\n}\n"
           "train {\n  steps: 10\n}\nschedule {\n  warmup_steps: 2\n}\n"
           "logging {\n"
        << logging << "}\n";
    return LoadedConfig::load(path, overrides);
  }

  fs::path dir_;
};

struct Read {
  std::map<std::pair<std::string, int64_t>, float> scalars;
  std::map<std::pair<std::string, int64_t>, tensorboard::HistogramProto> histograms;
  std::vector<std::string> order;  // tags in file order
};

Read read_events(const std::string& path) {
  Read r;
  const std::vector<std::string> records = tensorboard::read_records(path);
  EXPECT_GE(records.size(), 1u);
  for (size_t i = 0; i < records.size(); ++i) {
    tensorboard::Event e;
    EXPECT_TRUE(e.ParseFromString(records[i]));
    if (i == 0) {
      EXPECT_EQ(e.file_version(), "brain.Event:2");
      continue;
    }
    for (const auto& v : e.summary().value()) {
      r.order.push_back(v.tag());
      if (v.has_histo()) {
        EXPECT_TRUE(r.histograms.emplace(std::pair(v.tag(), e.step()), v.histo()).second)
            << v.tag() << " twice at " << e.step();
      } else {
        EXPECT_TRUE(r.scalars.emplace(std::pair(v.tag(), e.step()), v.simple_value()).second)
            << v.tag() << " twice at " << e.step();
      }
    }
  }
  return r;
}

std::vector<int64_t> steps_of(const Read& r, const std::string& tag, bool histogram = false) {
  std::vector<int64_t> steps;
  if (histogram) {
    for (const auto& [key, value] : r.histograms)
      if (key.first == tag) steps.push_back(key.second);
  } else {
    for (const auto& [key, value] : r.scalars)
      if (key.first == tag) steps.push_back(key.second);
  }
  return steps;
}

TEST_F(TelemetryTest, WritesEveryScalarAtItsStepAndHistogramsEveryKSteps) {
  const LoadedConfig c = config("  logdir: \"" + (dir_ / "tb").string() +
                                "\"\n  peak_gflops: 50\n  histogram_every: 4\n");
  Transformer<float> model(c.model());
  model.params().grads().zero();
  for (int64_t i = 0; i < model.params().numel(); ++i)
    model.params().grads()[i] = 1e-3f * float(i % 7);
  Telemetry t(c, 0, 2, {.run_name = "run_a"});
  ASSERT_TRUE(t.enabled());
  EXPECT_EQ(t.run_dir(), (dir_ / "tb" / "run_a").string());
  EXPECT_EQ(fs::path(t.event_file()).parent_path(), dir_ / "tb" / "run_a");
  EXPECT_DOUBLE_EQ(t.peak_flops(), 2 * 50e9);  // two processes
  EXPECT_EQ(t.flops_per_step(), model_gemm_flops(c.model(), 4, 32).total());

  // Steps 2, 4, 6 as a trainer with log_every 2 reports them; evaluations at 0 and 6.
  const double terms[3][2] = {{0.5, 0.25}, {0.125, 0.0625}, {3e-5, 7e-7}};
  EvalResult ev0{.loss = 5.5, .ce = 5.4, .ksvd = 2, .perplexity = 221.4};
  t.on_eval(0, "val", ev0);
  for (int k = 0; k < 3; ++k) {
    const int64_t step = 2 * (k + 1);
    StepMetrics m{.loss = 4.0 - k,
                  .ce = 3.9 - k,
                  .ksvd = 1.0 / (k + 1),
                  .ksvd_terms = std::span<const double>(terms[k], 2),
                  .lr = 1e-3 * (k + 1),
                  .grad_norm = 0.7 + k,
                  .step_seconds = 0.25 * (k + 1)};
    t.on_step(step, m, &model.params());
  }
  EvalResult ev6{.loss = 2.5, .ce = 2.4, .ksvd = 0.5, .perplexity = 11.0};
  t.on_eval(6, "val", ev6);
  const std::string path = t.event_file();
  t.close();
  EXPECT_FALSE(t.enabled());

  const Read r = read_events(path);
  // Step-0 facts of the run.
  EXPECT_EQ(r.scalars.at({"perf/peak_gflops", 0}), float(100.0));
  EXPECT_EQ(r.scalars.at({"perf/model_gflop_per_step", 0}), float(t.flops_per_step() * 1e-9));
  for (int k = 0; k < 3; ++k) {
    const int64_t step = 2 * (k + 1);
    EXPECT_EQ(r.scalars.at({"train/loss", step}), float(4.0 - k));
    EXPECT_EQ(r.scalars.at({"train/ce", step}), float(3.9 - k));
    EXPECT_EQ(r.scalars.at({"train/ksvd", step}), float(1.0 / (k + 1)));
    EXPECT_EQ(r.scalars.at({"train/ksvd_J/layer_0", step}), float(terms[k][0]));
    EXPECT_EQ(r.scalars.at({"train/ksvd_J/layer_2", step}), float(terms[k][1]));
    EXPECT_EQ(r.scalars.at({"train/lr", step}), float(1e-3 * (k + 1)));
    EXPECT_EQ(r.scalars.at({"train/grad_norm", step}), float(0.7 + k));
    const double seconds = 0.25 * (k + 1);
    EXPECT_EQ(r.scalars.at({"perf/step_seconds", step}), float(seconds));
    EXPECT_EQ(r.scalars.at({"perf/tokens_per_s", step}), float(4 * 32 / seconds));
    EXPECT_EQ(r.scalars.at({"perf/mfu", step}),
              float(double(t.flops_per_step()) / (seconds * 100e9)));
  }
  EXPECT_EQ(steps_of(r, "train/loss"), (std::vector<int64_t>{2, 4, 6}));
  EXPECT_TRUE(steps_of(r, "train/ksvd_J/layer_1").empty());  // SOFTMAX: no J
  EXPECT_TRUE(steps_of(r, "perf/samples_per_s").empty());    // an LM counts tokens
  EXPECT_EQ(steps_of(r, "val/loss"), (std::vector<int64_t>{0, 6}));
  EXPECT_EQ(r.scalars.at({"val/ce", 6}), float(2.4));
  EXPECT_EQ(r.scalars.at({"val/ksvd", 0}), float(2.0));
  EXPECT_EQ(r.scalars.at({"val/perplexity", 6}), float(11.0));
  EXPECT_EQ(r.scalars.count({"val/accuracy", 6}), 0u);

  // Histograms at the first call and then at the first call at or past each multiple of 4.
  for (const char* tag :
       {"hist/lambda/layer_0", "hist/lambda/layer_2", "hist/param_norms", "hist/grad_norms"}) {
    EXPECT_EQ(steps_of(r, tag, true), (std::vector<int64_t>{2, 4})) << tag;
  }
  EXPECT_TRUE(steps_of(r, "hist/lambda/layer_1", true).empty());
  // Lambda [H, s] = [2, 3]: its six values, min and max.
  const Parameter<float>* lambda = model.params().find("layers.2.attn.lambda");
  const tensorboard::HistogramProto& h = r.histograms.at({"hist/lambda/layer_2", 4});
  EXPECT_EQ(h.num(), 6);
  double sum = 0, lo = 1e9, hi = -1e9;
  for (int i = 0; i < 6; ++i) {
    sum += lambda->value[i];
    lo = std::min(lo, double(lambda->value[i]));
    hi = std::max(hi, double(lambda->value[i]));
  }
  EXPECT_EQ(h.sum(), sum);
  EXPECT_EQ(h.min(), lo);
  EXPECT_EQ(h.max(), hi);
  // One norm per tensor; the group norms add up to the total.
  const auto& pn = r.histograms.at({"hist/param_norms", 2});
  EXPECT_EQ(pn.num(), double(model.params().all().size()));
  double total_sq = 0, groups_sq = 0;
  for (int64_t i = 0; i < model.params().numel(); ++i) {
    total_sq += double(model.params().values()[i]) * model.params().values()[i];
  }
  EXPECT_NEAR(pn.sum_squares(), total_sq, 1e-9 * total_sq);
  for (const char* g : {"layer_0", "layer_1", "layer_2", "embed", "norm"}) {
    const float v = r.scalars.at({std::string("norms/param/") + g, 4});
    groups_sq += double(v) * v;
    EXPECT_GT(r.scalars.at({std::string("norms/grad/") + g, 4}), 0.0f) << g;
  }
  EXPECT_NEAR(groups_sq, total_sq, 1e-6 * total_sq);
  // Layer 1's group: ln1, ln2, attn.qkv, attn.proj, mlp.fc1, mlp.fc2, weights and biases.
  double layer1 = 0;
  for (const auto& p : model.params().all()) {
    if (p.name.rfind("layers.1.", 0) != 0) continue;
    for (int64_t i = 0; i < p.value.numel(); ++i) layer1 += double(p.value[i]) * p.value[i];
  }
  EXPECT_EQ(r.scalars.at({"norms/param/layer_1", 4}), float(std::sqrt(layer1)));
}

TEST_F(TelemetryTest, ClassifierReportsSamplesPerSecondAndAccuracy) {
  const std::string path = (dir_ / "cls.pbtxt").string();
  std::ofstream(path) << "model {\n  head: CLASSIFIER\n  input: PATCHES\n  patch_size: 7\n"
                         "  width: 16\n  heads: 2\n  mlp_width: 24\n  max_len: 17\n"
                         "  low_rank: 4\n  layers: [PRIMAL]\n  pooling: CLS\n}\n"
                         "data {\n  kind: FASHION_MNIST\n  path: \""
                      << dir_.string()
                      << "\"\n  batch_size: 8\n}\n"
                         "train {\n  steps: 10\n}\nschedule {\n  warmup_steps: 2\n}\n"
                         "logging {\n  logdir: \""
                      << (dir_ / "tb").string() << "\"\n  peak_gflops: 10\n}\n";
  const LoadedConfig c = LoadedConfig::load(path, {});
  Telemetry t(c, 0, 1, {.run_name = "cls"});
  // 16 patches of 7 x 7 per 28 x 28 image.
  EXPECT_EQ(positions_per_sample(c.proto()), 16);
  EXPECT_EQ(t.flops_per_step(), model_gemm_flops(c.model(), 8, 16).total());
  t.on_step(1, {.loss = 2.0, .step_seconds = 0.5});
  EvalResult ev{.loss = 1.5, .ce = 1.5, .ksvd = 0, .accuracy = 0.625};
  t.on_eval(1, "test", ev);
  const std::string file = t.event_file();
  t.close();
  const Read r = read_events(file);
  EXPECT_EQ(r.scalars.at({"perf/samples_per_s", 1}), float(8 / 0.5));
  EXPECT_EQ(r.scalars.at({"test/accuracy", 1}), float(0.625));
  EXPECT_EQ(r.scalars.count({"test/perplexity", 1}), 0u);
  EXPECT_EQ(r.scalars.count({"perf/tokens_per_s", 1}), 0u);
}

TEST_F(TelemetryTest, DisabledWithoutLogdirAndOffWorldRankZero) {
  Telemetry none(config("  peak_gflops: 1\n"), 0, 1);
  EXPECT_FALSE(none.enabled());
  none.on_step(1, {.loss = 1});
  none.on_eval(1, "val", EvalResult{});
  const LoadedConfig c = config("  logdir: \"" + (dir_ / "tb").string() + "\"\n  peak_gflops: 1\n");
  Telemetry rank1(c, 1, 2);
  EXPECT_FALSE(rank1.enabled());
  rank1.on_step(1, {.loss = 1});
  EXPECT_FALSE(fs::exists(dir_ / "tb"));
}

TEST_F(TelemetryTest, EachRunGetsItsOwnDirectory) {
  const LoadedConfig c = config("  logdir: \"" + (dir_ / "tb").string() + "\"\n  peak_gflops: 1\n");
  Telemetry a(c, 0, 1, {.run_name = "same"});
  Telemetry b(c, 0, 1, {.run_name = "same"});
  Telemetry stamped(c, 0, 1);
  EXPECT_EQ(a.run_dir(), (dir_ / "tb" / "same").string());
  EXPECT_EQ(b.run_dir(), (dir_ / "tb" / "same-2").string());
  // <config stem>-YYYYmmdd-HHMMSS
  const std::string name = fs::path(stamped.run_dir()).filename().string();
  EXPECT_EQ(name.rfind("tiny_lm-", 0), 0u) << name;
  EXPECT_EQ(name.size(), std::string("tiny_lm-20250101-120000").size()) << name;
  // A resumed run (another process, in practice) writes a second event file into its
  // directory; event file names carry the second and the pid, hence the wait.
  const std::string first = a.event_file();
  a.close();
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  Telemetry resumed(c, 0, 1, {.run_name = "same", .resume = true});
  EXPECT_EQ(resumed.run_dir(), (dir_ / "tb" / "same").string());
  EXPECT_NE(resumed.event_file(), first);
  EXPECT_EQ(fs::path(resumed.event_file()).parent_path(), dir_ / "tb" / "same");
}

TEST_F(TelemetryTest, NegativePeakOrHistogramPeriodIsAnErrorNamingTheField) {
  const std::string logdir = "  logdir: \"" + (dir_ / "tb").string() + "\"\n";
  try {
    Telemetry t(config(logdir + "  peak_gflops: -5\n"), 0, 1);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tiny_lm.pbtxt:"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("logging.peak_gflops"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Telemetry(config(logdir, {"logging.histogram_every=-1"}), 0, 1), Error);
}

}  // namespace
}  // namespace primal
