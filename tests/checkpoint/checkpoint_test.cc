// The checkpoint format without MPI: shards written as the TP ranks of one layout write them
// and read back under others (values and AdamW moments, bit for bit), the errors of damaged
// and foreign checkpoints, `latest`, pruning, and a background save equal to a blocking one.
#include "trainer/checkpoint.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "trainer/checkpointer.h"
#include "trainer/safetensors.h"
#include "trainer/trainer.h"

namespace primal {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            ("primal_checkpoint_test_" + std::to_string(getpid()) + "_" + info->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// Every kind of sharding the model uses (SPEC §5), with shapes every TP in {1, 2, 4} divides.
// `width` changes the shapes: a store of "another model".
std::unique_ptr<ParameterStore<float>> make_store(TensorParallelRank tp, int width = 8) {
  auto s = std::make_unique<ParameterStore<float>>(tp);
  s->add("embed.tok.weight", {16, width}, Split::kReplicated, Init::kNormal);
  s->add("layers.0.attn.qkv.weight", {3 * width, width}, Sharding{Split::kColumn, 3},
         Init::kNormal);
  s->add("layers.0.attn.qkv.bias", {3 * width}, Sharding{Split::kColumn, 3}, Init::kNormal);
  s->add("layers.0.attn.we", {4, 2, 3}, Split::kHeads, Init::kOrthogonalRows);
  s->add("layers.0.attn.concat.weight", {2, 6}, Sharding{Split::kReplicated, 1, true},
         Init::kNormal);
  s->add("layers.0.attn.proj.weight", {width, width}, Split::kRow, Init::kNormal);
  s->add("layers.0.mlp.fc1.weight", {2 * width, width}, Split::kColumn, Init::kNormal);
  s->add("norm.weight", {width}, Split::kReplicated, Init::kUniform);
  s->finalize(7);
  return s;
}

// Moments that differ per element and per kind: a function of the full index, so any slice
// can be checked against what it must hold.
float moment(int kind, int param, int64_t full_index) {
  return float(kind * 1000 + param * 100) + 0.001f * float(full_index);
}
void fill_moments(ParameterStore<float>& s, std::vector<float>& m, std::vector<float>& v) {
  m.assign(size_t(s.numel()), 0);
  v.assign(size_t(s.numel()), 0);
  int64_t local = 0;
  int index = 0;
  for (const auto& p : s.all()) {
    int64_t i = local;
    for (auto [from, length] : shard_runs(p.shape, p.sharding, s.tp())) {
      for (int64_t j = 0; j < length; ++j, ++i) {
        m[i] = moment(1, index, from + j);
        v[i] = moment(2, index, from + j);
      }
    }
    local += p.local_shape.numel();
    ++index;
  }
}

checkpoint::TrainingState state_at(int64_t step) {
  checkpoint::TrainingState s;
  s.set_step(step);
  s.set_adamw_steps(step);
  s.set_data_cursor(step);
  return s;
}

// Saves a checkpoint at `step` as the ranks of a tp x dp layout would: DP rank d of TP rank t
// writes part d of t's shard (dp = 1: the whole shard). With only_part, each writer's source
// holds nothing but the ranges of its part (the rest NaN), as a background save's snapshot.
void save_as_layout(const std::string& root, int tp, int64_t step, int keep = 0, int width = 8,
                    int dp = 1, bool only_part = false) {
  const std::string tmp = begin_checkpoint(root, step);
  std::vector<WrittenShard> shards;
  std::unique_ptr<ParameterStore<float>> any;
  for (int t = 0; t < tp; ++t) {
    for (int d = 0; d < dp; ++d) {
      auto s = make_store({t, tp}, width);
      std::vector<float> m, v;
      fill_moments(*s, m, v);
      std::vector<float> values(s->values().data(), s->values().data() + s->numel());
      if (only_part) {
        const float nan = std::numeric_limits<float>::quiet_NaN();
        std::vector<float> pv(values.size(), nan), pm(m.size(), nan), pw(v.size(), nan);
        for (const auto& [begin, end] : shard_part_ranges(*s, d, dp)) {
          std::copy(values.begin() + begin, values.begin() + end, pv.begin() + begin);
          std::copy(m.begin() + begin, m.begin() + end, pm.begin() + begin);
          std::copy(v.begin() + begin, v.begin() + end, pw.begin() + begin);
        }
        values = pv, m = pm, v = pw;
      }
      shards.push_back(write_shard(tmp, *s, {values.data(), m.data(), v.data()}, step, d, dp));
      any = std::move(s);
    }
  }
  commit_checkpoint(root, tmp,
                    build_manifest(*any, shards, std::max(dp, 2), state_at(step), "model {}", dp),
                    keep);
}

// Loads step_dir as every rank of TP 1, 2 and 4 and expects what each must hold: the values
// and the moments that fill_moments gives the store of width `width`.
void expect_loads_under_every_layout(const std::string& step_dir, const checkpoint::Manifest& m,
                                     int width, const std::string& what) {
  for (int tp : {1, 2, 4}) {
    for (int t = 0; t < tp; ++t) {
      auto expected = make_store({t, tp}, width);  // init is layout-independent (SPEC §3.5)
      std::vector<float> em, ev;
      fill_moments(*expected, em, ev);
      auto loaded = make_store({t, tp}, width);
      loaded->values().zero();
      std::vector<float> lm(em.size(), -1), lv(ev.size(), -1);
      load_shards(step_dir, m, *loaded, lm.data(), lv.data());
      ASSERT_EQ(0, std::memcmp(loaded->values().data(), expected->values().data(),
                               size_t(expected->numel()) * sizeof(float)))
          << what << ", loaded as rank " << t << " of " << tp;
      EXPECT_EQ(lm, em) << "exp_avg, " << what << ", rank " << t << " of " << tp;
      EXPECT_EQ(lv, ev) << "exp_avg_sq, " << what << ", rank " << t << " of " << tp;
    }
  }
}

TEST(Checkpoint, SavedUnderOneLayoutLoadsBitwiseUnderEveryOther) {
  TempDir dir;
  for (int saved : {1, 2, 4}) {
    const std::string root = dir / ("tp" + std::to_string(saved));
    save_as_layout(root, saved, 5);
    const std::string step_dir = resolve_checkpoint(root);
    EXPECT_EQ(step_dir, root + "/step_00000005");
    const checkpoint::Manifest m = read_manifest(step_dir);
    EXPECT_EQ(m.layout().tp(), saved);
    EXPECT_EQ(m.files_size(), saved);
    expect_loads_under_every_layout(step_dir, m, 8, "saved tp " + std::to_string(saved));
  }
}

// Under data parallelism every DP rank writes its part of its TP rank's shard: the manifest
// names each file's writer, the parts split the bytes about evenly, each writer needs only its
// part's ranges, and the checkpoint loads under every layout bit for bit as a DP = 1 save.
TEST(Checkpoint, DataParallelRanksEachWriteAPartAndItLoadsUnderEveryLayout) {
  TempDir dir;
  for (int dp : {2, 3}) {
    const std::string root = dir / ("tp2dp" + std::to_string(dp));
    save_as_layout(root, 2, 5, 0, 32, dp, /*only_part=*/true);
    const std::string step_dir = resolve_checkpoint(root);
    const checkpoint::Manifest m = read_manifest(step_dir);
    ASSERT_EQ(m.files_size(), 2 * dp);
    verify_shard_files(step_dir, m);
    for (int t = 0; t < 2; ++t) {
      int64_t smallest = INT64_MAX, largest = 0;
      for (int d = 0; d < dp; ++d) {
        const checkpoint::ShardFile& f = m.files(t * dp + d);
        EXPECT_EQ(f.name(), shard_file_name(t, 2, d, dp));
        EXPECT_EQ(f.tp_rank(), t);
        EXPECT_EQ(f.dp_rank(), d) << f.name();
        smallest = std::min(smallest, f.bytes());
        largest = std::max(largest, f.bytes());
      }
      EXPECT_LT(largest, 4 * smallest) << "TP rank " << t << "'s parts are far from even";
    }
    expect_loads_under_every_layout(step_dir, m, 32, "saved tp 2 x dp " + std::to_string(dp));
  }
}

TEST(Checkpoint, ReplicatedTensorsAreWrittenOnceShardedOnesByEveryRank) {
  TempDir dir;
  save_as_layout(dir / "ck", 4, 1);
  const checkpoint::Manifest m = read_manifest(dir / "ck/step_00000001");
  for (const auto& t : m.tensors()) {
    const bool replicated = t.split() == checkpoint::Tensor::REPLICATED;
    EXPECT_EQ(t.shards_size(), replicated ? 1 : 4) << t.name();
    for (const auto& s : t.shards()) {
      EXPECT_EQ(s.value().bytes(), s.exp_avg().bytes());
      EXPECT_EQ(s.value().bytes(), s.exp_avg_sq().bytes());
    }
  }
  // A rank reads only the files its slice overlaps: rank 1 of 4 under the same layout never
  // opens shard 0's file for its sharded tensors (a damaged shard 3 does not concern it).
  spit(dir / "ck/step_00000001/shard_3_of_4.bin", "x");
  auto s = make_store({1, 4});
  // Replicated tensors live in shard 0, sharded ones in shard 1: shard 3 is not read.
  EXPECT_NO_THROW(load_checkpoint_weights(dir / "ck", *s));
}

// Runs f, which must throw CheckpointError naming `file`; returns the message.
template <typename F>
std::string expect_error_naming(F f, const std::string& file) {
  try {
    f();
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no CheckpointError naming " << file;
  return "";
}

class Damaged : public ::testing::Test {
 protected:
  void SetUp() override {
    save_as_layout(dir_ / "ck", 2, 10);
    step_ = dir_ / "ck/step_00000010";
    shard_ = step_ + "/shard_1_of_2.bin";
    manifest_ = step_ + "/manifest.pb";
    store_ = make_store({0, 1});
    before_.assign(store_->values().data(), store_->values().data() + store_->numel());
    store_->values().zero();
  }
  // The store is untouched when the load fails.
  void expect_store_untouched() {
    for (int64_t i = 0; i < store_->numel(); ++i) ASSERT_EQ(store_->values()[i], 0.0f);
  }
  void load() { load_checkpoint_weights(dir_ / "ck", *store_); }

  TempDir dir_;
  std::string step_, shard_, manifest_;
  std::unique_ptr<ParameterStore<float>> store_;
  std::vector<float> before_;
};

TEST_F(Damaged, TruncatedShardNamesTheFile) {
  const std::string bytes = slurp(shard_);
  spit(shard_, bytes.substr(0, bytes.size() - 10));
  const std::string msg = expect_error_naming([&] { load(); }, shard_);
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  expect_store_untouched();
}

TEST_F(Damaged, FlippedByteIsAChecksumMismatchNamingTheFileAndTensor) {
  std::string bytes = slurp(shard_);
  bytes[bytes.size() / 3] ^= 0x10;  // inside the values of some sharded tensor
  spit(shard_, bytes);
  auto moments = make_store({0, 1});
  std::vector<float> m(size_t(moments->numel())), v(m.size());
  const std::string msg = expect_error_naming(
      [&] { load_shards(step_, read_manifest(step_), *store_, m.data(), v.data()); }, shard_);
  EXPECT_NE(msg.find("checksum mismatch"), std::string::npos) << msg;
  expect_store_untouched();
  EXPECT_THROW(verify_shard_files(step_, read_manifest(step_)), CheckpointError);
}

TEST_F(Damaged, MissingManifestNamesIt) {
  fs::remove(manifest_);
  const std::string msg = expect_error_naming([&] { load(); }, manifest_);
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
}

TEST_F(Damaged, WrongFormatVersionNamesTheManifestAndBothVersions) {
  checkpoint::Manifest m = read_manifest(step_);
  m.set_format_version(99);
  spit(manifest_, m.SerializeAsString());
  const std::string msg = expect_error_naming([&] { load(); }, manifest_);
  EXPECT_NE(msg.find("format version 99"), std::string::npos) << msg;
  EXPECT_NE(msg.find("reads version 1"), std::string::npos) << msg;
}

TEST_F(Damaged, AnotherModelsShapeNamesTheTensorAndBothShapes) {
  auto wider = make_store({0, 1}, 12);
  const std::string msg =
      expect_error_naming([&] { load_checkpoint_weights(dir_ / "ck", *wider); }, manifest_);
  EXPECT_NE(msg.find("embed.tok.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[16, 8]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[16, 12]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("another model"), std::string::npos) << msg;
}

TEST_F(Damaged, AShardFromAnotherCheckpointIsCaughtByItsHeader) {
  save_as_layout(dir_ / "other", 2, 20);
  fs::copy_file(dir_ / "other/step_00000020/shard_1_of_2.bin", shard_,
                fs::copy_options::overwrite_existing);
  expect_error_naming([&] { load(); }, shard_);
}

// Found by tests/fuzz/checkpoint_fuzz: export sized its tensors from the manifest alone, so a
// manifest claiming a [2^40, 2^20] tensor beside intact shard files allocated 2^60 floats.
TEST_F(Damaged, ExportRefusesShapesTheShardFilesCannotHold) {
  checkpoint::Manifest m = read_manifest(step_);
  m.mutable_tensors(0)->set_shape(0, int64_t(1) << 40);
  m.mutable_tensors(0)->set_shape(1, int64_t(1) << 20);
  spit(manifest_, m.SerializeAsString());
  const std::string msg = expect_error_naming(
      [&] { export_checkpoint(dir_ / "ck", dir_ / "model.safetensors"); }, manifest_);
  EXPECT_NE(msg.find("embed.tok.weight' has shape [1099511627776, 1048576]"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("cannot hold"), std::string::npos) << msg;
  m.mutable_tensors(0)->set_shape(0, -16);  // a negative dimension, likewise
  spit(manifest_, m.SerializeAsString());
  expect_error_naming([&] { export_checkpoint(dir_ / "ck", dir_ / "model.safetensors"); },
                      manifest_);
  EXPECT_FALSE(fs::exists(dir_ / "model.safetensors"));
}

// Found by tests/fuzz/checkpoint_fuzz: a manifest's name "layers.x..." made the layer index's
// std::stoi throw std::invalid_argument, which is no primal::Error.
TEST_F(Damaged, ExportOfANameWithoutItsLayerIndexNamesTheManifest) {
  checkpoint::Manifest m = read_manifest(step_);
  for (const char* name : {"layers.x.attn.we", "layers.99999999999.attn.we", "layers.0"}) {
    m.mutable_tensors(3)->set_name(name);
    spit(manifest_, m.SerializeAsString());
    const std::string msg = expect_error_naming(
        [&] { export_checkpoint(dir_ / "ck", dir_ / "model.safetensors"); }, manifest_);
    EXPECT_NE(msg.find(std::string("'") + name + "'"), std::string::npos) << msg;
  }
}

// A checkpoint that format version 1 wrote (fixtures/format_v1_tp2: a TP = 2 job's step 3 of a
// two-layer LM, and the model.safetensors that job exported of it), kept so that every later
// change of the format shows here: its shards' CRCs hold, and it loads on one process and as
// each rank of TP = 2 to those weights bit for bit, with its AdamW moments.
TEST(CheckpointFormat, AVersionOneCheckpointStillLoads) {
  const std::string step_dir = PRIMAL_SOURCE_DIR "/tests/checkpoint/fixtures/format_v1_tp2";
  const checkpoint::Manifest m = read_manifest(step_dir);
  EXPECT_EQ(m.format_version(), 1u);
  EXPECT_EQ(m.step(), 3);
  EXPECT_EQ(m.layout().tp(), 2);
  verify_shard_files(step_dir, m);
  const LoadedConfig config = load_checkpoint_config(step_dir, {}, /*require_data=*/false);
  Transformer<float> exported(config.model());
  load_safetensors(step_dir + "/model.safetensors", exported.params());
  Transformer<float> one(config.model());
  one.params().values().zero();
  load_checkpoint_weights(step_dir, one.params());
  ASSERT_EQ(0, std::memcmp(one.params().values().data(), exported.params().values().data(),
                           size_t(one.params().numel()) * sizeof(float)));
  for (int t = 0; t < 2; ++t) {
    ShardLayout tp(t, 2);
    Transformer<float> shard(config.model(), &tp);
    std::vector<float> m1(size_t(shard.params().numel()), -1), m2 = m1;
    load_shards(step_dir, m, shard.params(), m1.data(), m2.data());
    for (const auto& p : shard.params().all()) {
      const auto& full = exported.params().all();
      const auto it =
          std::find_if(full.begin(), full.end(), [&](const auto& q) { return q.name == p.name; });
      ASSERT_NE(it, full.end()) << p.name;
      int64_t at = 0;
      for (const auto& [offset, length] : shard_runs(p.shape, p.sharding, {t, 2})) {
        ASSERT_EQ(0, std::memcmp(p.value.data() + at, it->value.data() + offset,
                                 size_t(length) * sizeof(float)))
            << p.name << ", rank " << t << " of 2";
        at += length;
      }
    }
    for (size_t i = 0; i < m2.size(); ++i) ASSERT_GE(m2[i], 0.f) << "exp_avg_sq " << i;
  }
}

TEST(Checkpoint, LatestIsWrittenLastAndCandidatesGoNewestFirst) {
  TempDir dir;
  const std::string root = dir / "ck";
  EXPECT_TRUE(checkpoint_candidates(root).empty());  // no directory yet
  for (int64_t step : {5, 10, 15}) save_as_layout(root, 1, step);
  EXPECT_EQ(slurp(root + "/latest"), "step_00000015\n");
  EXPECT_EQ(checkpoint_candidates(root),
            (std::vector<std::string>{root + "/step_00000015", root + "/step_00000010",
                                      root + "/step_00000005"}));
  // A newer directory than `latest` (a run that was rolled back) is not a candidate.
  spit(root + "/latest", "step_00000010\n");
  EXPECT_EQ(checkpoint_candidates(root),
            (std::vector<std::string>{root + "/step_00000010", root + "/step_00000005"}));
  // A save that died before its rename leaves only a temporary directory: never a candidate,
  // and the next save clears it.
  fs::create_directories(root + "/.step_00000020.tmp");
  EXPECT_EQ(checkpoint_candidates(root).size(), 2u);
  save_as_layout(root, 1, 25);
  EXPECT_FALSE(fs::exists(root + "/.step_00000020.tmp"));
}

TEST(Checkpoint, KeepsTheNewestKAndMovesAnExistingStepAsideInsteadOfDeletingIt) {
  TempDir dir;
  const std::string root = dir / "ck";
  for (int64_t step : {1, 2, 3, 4}) save_as_layout(root, 1, step, /*keep=*/2);
  EXPECT_FALSE(fs::exists(root + "/step_00000001"));
  EXPECT_FALSE(fs::exists(root + "/step_00000002"));
  EXPECT_TRUE(fs::exists(root + "/step_00000003"));
  EXPECT_TRUE(fs::exists(root + "/step_00000004"));
  const std::string old_manifest = slurp(root + "/step_00000004/manifest.pb");
  save_as_layout(root, 2, 4, /*keep=*/2);  // the same step again, under another layout
  EXPECT_EQ(slurp(root + "/step_00000004.replaced-1/manifest.pb"), old_manifest);
  EXPECT_EQ(read_manifest(root + "/step_00000004").layout().tp(), 2);
  // Pruning never counts or deletes the moved-aside directory.
  EXPECT_TRUE(fs::exists(root + "/step_00000003"));
}

TEST(Checkpoint, ResolvesAStepDirectoryOrARootAndRejectsAnythingElse) {
  TempDir dir;
  save_as_layout(dir / "ck", 1, 3);
  EXPECT_EQ(resolve_checkpoint(dir / "ck"), dir / "ck/step_00000003");
  EXPECT_EQ(resolve_checkpoint(dir / "ck/step_00000003"), dir / "ck/step_00000003");
  expect_error_naming([&] { resolve_checkpoint(dir / "nothing"); }, dir / "nothing");
  fs::create_directories(dir / "empty");
  auto store = make_store({0, 1});
  expect_error_naming([&] { load_checkpoint_weights(dir / "empty", *store); },
                      dir / "empty/manifest.pb");
}

// ---- With the Trainer (one process)

std::string corpus(const TempDir& dir) {
  std::ofstream f(dir / "corpus.txt");
  for (int i = 0; i < 300; ++i)
    f << "In the beginning God created the heaven and the earth. " << i % 37 << "\n";
  return dir / "corpus.txt";
}

LoadedConfig tiny_config(const TempDir& dir, const std::string& run, bool async, int64_t steps) {
  std::ostringstream text;
  text << "model { width: 16 heads: 2 mlp_width: 32 max_len: 16 layers: [SOFTMAX, PRIMAL] "
          "low_rank: 3 rank_multi: 2 dropout: 0.1 }\n"
       << "data { path: \"" << corpus(dir) << "\" seq_len: 16 batch_size: 4 }\n"
       << "schedule { warmup_steps: 2 }\n"
       << "train { steps: " << steps
       << " eval_every: 0 eval_batches: 1 log_every: 100 threads: 1 }\n"
       << "checkpoint { every: 3 keep: 0 async_save: " << (async ? "true" : "false") << " }\n"
       << "logging { dir: \"" << (dir / run) << "\" }\n";
  return LoadedConfig::parse(text.str(), "tiny", {});
}

TEST(Checkpointer, BackgroundSaveWritesTheSameShardsAsABlockingOne) {
  TempDir dir;
  std::vector<std::string> shards[2];
  for (int async : {0, 1}) {
    const LoadedConfig config = tiny_config(dir, async ? "async" : "sync", async, 10);
    Trainer trainer(config);
    trainer.run();
    const std::string root = dir / (std::string(async ? "async" : "sync") + "/checkpoints");
    for (int64_t step : {3, 6, 9, 10}) {
      shards[async].push_back(slurp(root + "/" + checkpoint_step_name(step) + "/shard_0_of_1.bin"));
    }
  }
  ASSERT_EQ(shards[0].size(), 4u);
  for (size_t i = 0; i < shards[0].size(); ++i) {
    EXPECT_FALSE(shards[0][i].empty());
    EXPECT_EQ(shards[0][i], shards[1][i]) << "checkpoint " << i;
  }
}

TEST(Checkpointer, ResumeRestoresParametersMomentsAndStepCount) {
  TempDir dir;
  const LoadedConfig config = tiny_config(dir, "a", false, 6);
  Trainer first(config);
  first.run();
  Trainer second(config);
  second.resume("auto");
  EXPECT_EQ(second.start_step(), 6);
  auto& a = first.model().params();
  auto& b = second.model().params();
  const size_t bytes = size_t(a.numel()) * sizeof(float);
  ASSERT_EQ(0, std::memcmp(a.values().data(), b.values().data(), bytes));
  EXPECT_EQ(0, std::memcmp(first.optimizer().exp_avg().data(), second.optimizer().exp_avg().data(),
                           bytes));
  EXPECT_EQ(0, std::memcmp(first.optimizer().exp_avg_sq().data(),
                           second.optimizer().exp_avg_sq().data(), bytes));
  EXPECT_EQ(second.optimizer().steps(), 6);
  // A step directory exactly, under a fresh trainer.
  Trainer third(config);
  third.resume(dir / "a/checkpoints/step_00000003");
  EXPECT_EQ(third.start_step(), 3);
  EXPECT_THROW(third.resume(dir / "a/checkpoints/step_00000004"), CheckpointError);
}

// A file size limit (RLIMIT_FSIZE; SIGXFSZ ignored, so write() fails with EFBIG) for as long
// as it lives: a disk fault without root or mounts (tests/fault has the real ones).
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    getrlimit(RLIMIT_FSIZE, &saved_);
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit = saved_;
    limit.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &limit);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit saved_{};
  void (*old_handler_)(int) = nullptr;
};

TEST(Checkpointer, AFailedSaveNamesTheFileRemovesItsTemporaryDirectoryAndKeepsLatest) {
  for (bool async : {false, true}) {
    TempDir dir;
    const std::string root = dir / "a/checkpoints";
    Trainer(tiny_config(dir, "a", async, 3)).run();
    const std::string shard = root + "/step_00000003/shard_0_of_1.bin";
    const auto shard_bytes = fs::file_size(shard);
    {
      const LoadedConfig config = tiny_config(dir, "a", async, 6);
      Trainer trainer(config);
      trainer.resume("auto");
      FileSizeLimit limit(shard_bytes / 2);
      try {
        trainer.run();
        ADD_FAILURE() << "the save of step 6 did not fail (async " << async << ")";
      } catch (const CheckpointSaveError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("checkpoint of step 6 failed: " + root +
                            "/.step_00000006.tmp/shard_0_of_1.bin: write failed: File too large"),
                  std::string::npos)
            << what;
      }
    }
    EXPECT_FALSE(fs::exists(root + "/.step_00000006.tmp")) << "async " << async;
    EXPECT_FALSE(fs::exists(root + "/step_00000006")) << "async " << async;
    EXPECT_EQ(slurp(root + "/latest"), "step_00000003\n");
    const LoadedConfig config = tiny_config(dir, "a", async, 6);  // the Trainer keeps a reference
    Trainer again(config);
    again.resume("auto");
    EXPECT_EQ(again.start_step(), 3);
    EXPECT_EQ(slurp(shard).size(), shard_bytes);
  }
}

}  // namespace
}  // namespace primal
