// Config parsing, --set overrides, and one clear message for each kind of bad input: the
// message names the file and line (or the --set flag) and the field path.
#include "configs/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace primal {
namespace {

namespace fs = std::filesystem;

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        fs::temp_directory_path() /
        ("primal_config_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
         "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    corpus_ = (dir_ / "corpus.txt").string();
    std::ofstream(corpus_) << std::string(10000, 'a');
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A valid LM config on the test corpus, with extra text appended inside the top level.
  std::string write(const std::string& body, const std::string& name = "run.pbtxt") {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << body;
    return path;
  }
  std::string valid() const {
    return "model {\n  width: 32\n  heads: 4\n  max_len: 64\n  layers: [SOFTMAX, PRIMAL]\n}\n"
           "data {\n  path: \"" +
           corpus_ +
           "\"\n  seq_len: 64\n  batch_size: 4\n}\n"
           "train {\n  steps: 10\n}\nschedule {\n  warmup_steps: 2\n}\n";
  }
  // The message of the Error that loading throws ("" when it loads).
  std::string error_of(const std::string& body, std::vector<std::string> overrides = {}) {
    try {
      LoadedConfig::load(write(body), overrides);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  fs::path dir_;
  std::string corpus_;
};

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

TEST_F(ConfigTest, ValidConfigLoadsWithDefaultsAndOverrides) {
  LoadedConfig c = LoadedConfig::load(
      write(valid()),
      {"optimizer.lr=3e-4", "model.layers=PRIMAL,PRIMAL,SOFTMAX", "data.order=SEQUENTIAL"});
  EXPECT_EQ(c.proto().model().width(), 32);
  EXPECT_EQ(c.proto().optimizer().lr(), 3e-4);
  EXPECT_EQ(c.proto().optimizer().beta2(), 0.999);  // default from the schema
  ASSERT_EQ(c.proto().model().layers_size(), 3);
  EXPECT_EQ(c.proto().data().order(), config::Data::SEQUENTIAL);
  ModelConfig m = c.model();
  EXPECT_EQ(m.layers, (std::vector<AttentionKind>{AttentionKind::kPrimal, AttentionKind::kPrimal,
                                                  AttentionKind::kSoftmax}));
  EXPECT_EQ(m.head_dim(), 8);
  EXPECT_HAS(c.where("model.heads"), "run.pbtxt:3: model.heads");
  EXPECT_HAS(c.where("optimizer.lr"), "--set optimizer.lr");
  EXPECT_HAS(c.where("optimizer.eps"), "optimizer.eps (default)");
}

TEST_F(ConfigTest, ShippedConfigsParse) {
  for (const std::string name :
       {"lm_kjv", "lm_kjv_primalformer", "lm_kjv_transformer", "fashion_mnist_vit", "listops",
        "lra/listops", "lra/image", "lra/pathfinder", "lra/text"}) {
    const std::string path = std::string(PRIMAL_SOURCE_DIR) + "/configs/" + name + ".pbtxt";
    // The data may not be prepared on this machine: point TEXT configs at the test corpus.
    std::vector<std::string> overrides;
    if (name.rfind("lm_", 0) == 0) overrides.push_back("data.path=" + corpus_);
    // A dataset that is not installed or exported here (Fashion-MNIST, the KJV) may be
    // reported missing, and is the only acceptable error.
    for (const std::string layers : {"PRIMAL,PRIMAL", "SOFTMAX,SOFTMAX", "SOFTMAX,PRIMAL"}) {
      if (name.rfind("lra/", 0) == 0) overrides = {"model.layers=" + layers};
      try {
        LoadedConfig::load(path, overrides);
      } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_TRUE((name == "fashion_mnist_vit" || name == "lra/image" || name == "lra/text") &&
                    what.find("does not exist") != std::string::npos)
            << what;
      }
    }
  }
}

struct BadCase {
  const char* name;
  std::string replace_from, replace_to;  // edit of the valid config
  std::vector<std::string> overrides;
  std::vector<std::string> expected;  // substrings of the one message
};

TEST_F(ConfigTest, EachBadInputGetsOneMessageNamingFileLineAndField) {
  const std::vector<BadCase> cases = {
      {"unknown field",
       "  width: 32\n",
       "  width: 32\n  widht: 3\n",
       {},
       {"run.pbtxt:3:", "model.widht:", "no field named \"widht\""}},
      {"wrong type",
       "  width: 32\n",
       "  width: \"wide\"\n",
       {},
       {"run.pbtxt:2:10: model.width:", "Expected integer"}},
      {"syntax error", "  heads: 4\n", "  heads 4 }\n", {}, {"run.pbtxt:"}},
      {"heads do not divide width",
       "  heads: 4\n",
       "  heads: 5\n",
       {},
       {"run.pbtxt:3: model.heads", "does not divide model.width 32"}},
      {"zero width",
       "  width: 32\n",
       "  width: 0\n",
       {},
       {"run.pbtxt:2: model.width", "must be positive"}},
      {"no layers",
       "  layers: [SOFTMAX, PRIMAL]\n",
       "",
       {},
       {"model.layers", "at least one layer"}},
      {"unknown layer kind",
       "[SOFTMAX, PRIMAL]",
       "[SOFTMAX, PERFORMER]",
       {},
       {"run.pbtxt:5:", "model.layers:", "PERFORMER"}},
      {"seq_len above max_len",
       "  seq_len: 64\n",
       "  seq_len: 65\n",
       {},
       {"run.pbtxt:9: data.seq_len", "exceed model.max_len 64"}},
      {"missing data file",
       "corpus.txt",
       "nowhere.txt",
       {},
       {"run.pbtxt:8: data.path", "nowhere.txt' does not exist"}},
      {"dropout out of range",
       "  heads: 4\n",
       "  heads: 4\n  dropout: 1.5\n",
       {},
       {"model.dropout", "[0, 1)"}},
      {"negative lr", "", "", {"optimizer.lr=-1"}, {"--set optimizer.lr", "must be positive"}},
      {"negative warmup",
       "  warmup_steps: 2\n",
       "  warmup_steps: -1\n",
       {},
       {"run.pbtxt:16: schedule.warmup_steps", "must not be negative"}},
      {"accumulation does not divide batch",
       "",
       "",
       {"optimizer.accumulation_steps=3"},
       {"--set optimizer.accumulation_steps", "must divide data.batch_size 4"}},
      {"lm on patches",
       "",
       "",
       {"model.input=PATCHES"},
       {"model.input", "the LM head needs TOKENS"}},
      {"text with a classifier",
       "",
       "",
       {"model.head=CLASSIFIER"},
       {"data.kind", "TEXT trains the LM head"}},
      {"byte text with another vocab",
       "",
       "",
       {"model.vocab=100"},
       {"model.vocab", "needs vocab 256"}},
      {"set: unknown field",
       "",
       "",
       {"optimizer.learning_rate=1"},
       {"--set optimizer.learning_rate", "unknown field 'learning_rate'"}},
      {"set: bad value",
       "",
       "",
       {"model.width=wide"},
       {"--set model.width", "'wide' is not a valid int32"}},
      {"set: no equals sign",
       "",
       "",
       {"model.width"},
       {"--set model.width", "expected FIELD=VALUE"}},
      {"set: message, not field", "", "", {"model=3"}, {"--set model", "is a message"}},
      {"set: bad enum", "", "", {"data.order=SHUFFLED"}, {"--set data.order", "not a valid enum"}},
      {"low rank above sampled tokens",
       "",
       "",
       {"model.head=CLASSIFIER", "data.kind=LISTOPS", "model.low_rank=80", "model.rank_multi=1",
        "data.listops_min_len=10"},
       {"model.low_rank", "exceeds the 64 sampled tokens"}},
      {"pathfinder with ten classes",
       "",
       "",
       {"model.head=CLASSIFIER", "data.kind=PATHFINDER", "model.max_len=1024"},
       {"model.num_classes", "PATHFINDER has 2 classes"}},
      {"pathfinder images longer than max_len",
       "",
       "",
       {"model.head=CLASSIFIER", "data.kind=PATHFINDER", "model.num_classes=2"},
       {"model.max_len", "1024 positions per sample exceed model.max_len 64"}},
      {"testament windows larger than a block",
       "",
       "",
       {"model.head=CLASSIFIER", "data.kind=KJV_TESTAMENT", "model.num_classes=2",
        "model.max_len=20000", "data.seq_len=16385"},
       {"data.seq_len", "16384-byte blocks"}},
      {"pixel tokens with a small vocab",
       "",
       "",
       {"model.head=CLASSIFIER", "data.kind=FASHION_MNIST", "model.vocab=16"},
       {"model.vocab", "one token per pixel"}},
  };
  ASSERT_GE(cases.size(), 15u);
  for (const BadCase& c : cases) {
    std::string body = valid();
    if (!c.replace_from.empty() || !c.replace_to.empty()) {
      const auto at = body.find(c.replace_from);
      ASSERT_NE(at, std::string::npos) << c.name;
      body.replace(at, c.replace_from.size(), c.replace_to);
    }
    const std::string message = error_of(body, c.overrides);
    ASSERT_FALSE(message.empty()) << c.name << ": loaded without error";
    EXPECT_EQ(message.find('\n'), std::string::npos) << c.name << ": " << message;
    for (const std::string& needle : c.expected) {
      EXPECT_NE(message.find(needle), std::string::npos)
          << c.name << ": '" << needle << "' not in: " << message;
    }
  }
}

// The message of the Error that the train-time checks against a job of world_size
// processes throw ("" when there is none).
std::string layout_error_of(const LoadedConfig& config, int world_size) {
  try {
    config.validate_layout(world_size);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST_F(ConfigTest, DeviceAndPrecisionDefaultToCpuFp32AndParseFromFileAndFlags) {
  const LoadedConfig plain = LoadedConfig::load(write(valid()), {});
  EXPECT_EQ(plain.proto().train().device(), config::Train::CPU);
  EXPECT_EQ(plain.proto().train().precision(), config::Train::FP32);
  EXPECT_EQ(layout_error_of(plain, 1), "");
  std::string body = valid();
  body.replace(body.find("  steps: 10\n"), 12, "  steps: 10\n  device: CUDA\n");
  const LoadedConfig cuda = LoadedConfig::load(write(body), {"train.precision=BF16"});
  EXPECT_EQ(cuda.proto().train().device(), config::Train::CUDA);
  EXPECT_EQ(cuda.proto().train().precision(), config::Train::BF16);
}

TEST_F(ConfigTest, Bf16OnTheCpuIsAnErrorNamingTheField) {
  const std::string message = error_of(valid(), {"train.precision=BF16"});
  EXPECT_HAS(message, "--set train.precision");
  EXPECT_HAS(message, "BF16 needs train.device: CUDA");
  std::string body = valid();
  body.replace(body.find("  steps: 10\n"), 12, "  steps: 10\n  precision: BF16\n");
  EXPECT_HAS(error_of(body), "run.pbtxt:14: train.precision");
}

// Where the job runs is checked at train time (validate_layout): a config that names CUDA
// still loads anywhere (eval, export, a checkpoint's manifest).
TEST_F(ConfigTest, CudaDeviceNeedsTheBackendAndNcclForMoreThanOneProcess) {
  const LoadedConfig cuda = LoadedConfig::load(write(valid()), {"train.device=CUDA"});
  if (!built_with_cuda()) {
    const std::string message = layout_error_of(cuda, 1);
    EXPECT_HAS(message, "--set train.device");
    EXPECT_HAS(message, "this build has no CUDA backend (built with PRIMAL_CUDA=OFF)");
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    return;  // the checks below need the backend to get past this one
  }
  EXPECT_EQ(layout_error_of(cuda, 1), "");

  // More than one process on GPUs (data or tensor parallel) needs the NCCL backend.
  const std::string processes = layout_error_of(cuda, 2);
  if (built_with_nccl()) {
    EXPECT_EQ(processes, "");
  } else {
    EXPECT_HAS(processes, "--set train.device");
    EXPECT_HAS(processes, "needs NCCL, and this build has none");
    EXPECT_HAS(processes, "this job has 2 processes");
    EXPECT_EQ(processes.find('\n'), std::string::npos) << processes;
  }

  const LoadedConfig tp2 =
      LoadedConfig::load(write(valid()), {"train.device=CUDA", "parallel.tp=2"});
  const std::string tp = layout_error_of(tp2, 2);
  if (built_with_nccl()) {
    EXPECT_EQ(tp, "");  // tensor parallelism on the device
  } else {
    EXPECT_HAS(tp, "needs NCCL, and this build has none");
  }

  const LoadedConfig logdir = LoadedConfig::load(
      write(valid()), {"train.device=CUDA", "logging.logdir=" + (dir_ / "tb").string()});
  const std::string mfu = layout_error_of(logdir, 1);
  EXPECT_HAS(mfu, "logging.peak_gflops (default)");
  EXPECT_HAS(mfu, "the GPU's peak");
  const LoadedConfig with_peak = LoadedConfig::load(
      write(valid()), {"train.device=CUDA", "logging.logdir=" + (dir_ / "tb").string(),
                       "logging.peak_gflops=989000"});
  EXPECT_EQ(layout_error_of(with_peak, 1), "");
}

TEST_F(ConfigTest, MissingConfigFileIsNamed) {
  try {
    LoadedConfig::load((dir_ / "absent.pbtxt").string(), {});
    FAIL() << "loaded a missing file";
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "absent.pbtxt: cannot read the config file");
  }
}

}  // namespace
}  // namespace primal
