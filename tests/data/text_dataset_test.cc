#include "data/text_dataset.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "core/random.h"
#include "tests/data/temp_dir.h"

namespace primal {
namespace {

using testing::TempDir;
using testing::write_file;

// Bytes from Philox: every window of a few bytes is unique, so a window can be located.
std::string random_bytes(size_t n, uint64_t seed) {
  CounterRng rng(seed, 7);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = char(rng.block(i)[0] & 0xFF);
  return s;
}

// Where window (tokens, targets) of sample i starts in `bytes`, or -1; checks targets are the
// inputs shifted by one byte.
int64_t locate(const Batch& b, int i, const std::string& bytes) {
  const int N = b.N;
  std::string window(size_t(N) + 1, '\0');
  for (int t = 0; t < N; ++t) window[size_t(t)] = char(b.tokens[size_t(i) * N + t]);
  window[size_t(N)] = char(b.targets[size_t(i) * N + N - 1]);
  for (int t = 0; t + 1 < N; ++t) {
    if (b.targets[size_t(i) * N + t] != b.tokens[size_t(i) * N + t + 1]) return -1;
  }
  const size_t at = bytes.find(window);
  return at == std::string::npos ? -1 : int64_t(at);
}

TEST(TextDataset, SplitsAreContiguousFractionsOfTheFile) {
  TempDir dir;
  write_file(dir.file("t.txt"), random_bytes(1000, 1));
  TextDataset d(dir.file("t.txt"), 9, 1, DataOrder::kRandom, 0.1, 0.2);
  EXPECT_EQ(d.range(DataSplit::kTrain).begin, 0);
  EXPECT_EQ(d.range(DataSplit::kTrain).size, 700);
  EXPECT_EQ(d.range(DataSplit::kVal).begin, 700);
  EXPECT_EQ(d.range(DataSplit::kVal).size, 100);
  EXPECT_EQ(d.range(DataSplit::kTest).begin, 800);
  EXPECT_EQ(d.range(DataSplit::kTest).size, 200);
  EXPECT_EQ(d.eval_size(DataSplit::kTrain), 70);
  EXPECT_EQ(d.eval_size(DataSplit::kVal), 10);
  EXPECT_EQ(d.eval_size(DataSplit::kTest), 20);
  // Default fractions 5% / 5% of 1003 bytes: floor(50.15) = 50 each.
  write_file(dir.file("u.txt"), random_bytes(1003, 2));
  TextDataset u(dir.file("u.txt"), 9, 1, DataOrder::kRandom);
  EXPECT_EQ(u.range(DataSplit::kTrain).size, 903);
  EXPECT_EQ(u.range(DataSplit::kVal).size, 50);
  EXPECT_EQ(u.range(DataSplit::kTest).size, 50);
  EXPECT_EQ(u.eval_size(DataSplit::kVal), 5);
}

TEST(TextDataset, SequentialBatchesAreConsecutiveWindowsThatWrap) {
  TempDir dir;
  const std::string bytes = random_bytes(1000, 3);
  write_file(dir.file("t.txt"), bytes);
  // Train: 700 bytes = 70 whole windows of 10 bytes.
  TextDataset d(dir.file("t.txt"), 9, 1, DataOrder::kSequential, 0.1, 0.2);
  Batch b;
  d.train_batch(8, 2, 5, 8, b);  // step 8, B = 8: windows 64..71, slice 2..6 -> 66..70
  ASSERT_EQ(b.B, 5);
  ASSERT_EQ(b.N, 9);
  EXPECT_TRUE(b.lengths.empty());
  EXPECT_EQ(b.sample_offset, 2);
  const int64_t expected_window[5] = {66, 67, 68, 69, 0};
  for (int i = 0; i < 5; ++i) {
    const int64_t start = expected_window[i] * 10;
    for (int t = 0; t < 9; ++t) {
      EXPECT_EQ(b.tokens[size_t(i) * 9 + t], int32_t(uint8_t(bytes[size_t(start + t)])));
      EXPECT_EQ(b.targets[size_t(i) * 9 + t], int32_t(uint8_t(bytes[size_t(start + t + 1)])));
    }
  }
}

TEST(TextDataset, RandomBatchIsAPureFunctionOfSeedStepAndSampleIndex) {
  TempDir dir;
  const std::string bytes = random_bytes(5000, 4);
  write_file(dir.file("t.txt"), bytes);
  TextDataset d(dir.file("t.txt"), 16, 42, DataOrder::kRandom);
  TextDataset again(dir.file("t.txt"), 16, 42, DataOrder::kRandom);
  TextDataset other_seed(dir.file("t.txt"), 16, 43, DataOrder::kRandom);
  Batch whole, lo, hi, same, next_step, reseeded;
  d.train_batch(5, 0, 8, 8, whole);
  d.train_batch(5, 0, 4, 8, lo);
  d.train_batch(5, 4, 4, 8, hi);
  again.train_batch(5, 0, 8, 8, same);
  d.train_batch(6, 0, 8, 8, next_step);
  other_seed.train_batch(5, 0, 8, 8, reseeded);
  std::vector<int32_t> concat = lo.tokens;
  concat.insert(concat.end(), hi.tokens.begin(), hi.tokens.end());
  EXPECT_EQ(whole.tokens, concat);
  std::vector<int32_t> concat_targets = lo.targets;
  concat_targets.insert(concat_targets.end(), hi.targets.begin(), hi.targets.end());
  EXPECT_EQ(whole.targets, concat_targets);
  EXPECT_EQ(hi.sample_offset, 4);
  EXPECT_EQ(whole.tokens, same.tokens);
  EXPECT_NE(whole.tokens, next_step.tokens);
  EXPECT_NE(whole.tokens, reseeded.tokens);
  // Every window lies inside the train split (the first 4500 bytes), and the starts cover
  // [0, 4500 - 17] with a mean near the middle.
  const int64_t last_start = 4500 - 17;
  int64_t lowest = last_start, highest = 0;
  double sum = 0;
  int n = 0;
  Batch b;
  for (int step = 0; step < 100; ++step) {
    d.train_batch(step, 0, 32, 32, b);
    for (int i = 0; i < 32; ++i) {
      const int64_t start = locate(b, i, bytes);
      ASSERT_GE(start, 0);
      ASSERT_LE(start, last_start);
      lowest = std::min(lowest, start);
      highest = std::max(highest, start);
      sum += double(start);
      ++n;
    }
  }
  EXPECT_LT(lowest, 20);
  EXPECT_GT(highest, last_start - 20);
  EXPECT_NEAR(sum / n / last_start, 0.5, 0.03);
}

TEST(TextDataset, EvalWindowsAreConsecutiveAndDropThePartialOne) {
  TempDir dir;
  const std::string bytes = random_bytes(1000, 5);
  write_file(dir.file("t.txt"), bytes);
  TextDataset d(dir.file("t.txt"), 9, 1, DataOrder::kRandom, 0.1, 0.2);
  Batch b;
  d.eval_batch(DataSplit::kTest, 3, 17, b);  // test split: bytes [800, 1000), windows 3..19
  ASSERT_EQ(b.B, 17);
  EXPECT_EQ(b.sample_offset, 3);
  for (int i = 0; i < 17; ++i) EXPECT_EQ(locate(b, i, bytes), 800 + (3 + i) * 10);
  EXPECT_THROW(d.eval_batch(DataSplit::kTest, 19, 2, b), Error);

  // The whole file as the test split: 1000 bytes / 7-byte windows = 142, 6 bytes dropped.
  TextDataset whole = TextDataset::whole_file(dir.file("t.txt"), 6);
  EXPECT_EQ(whole.eval_size(DataSplit::kTest), 142);
  EXPECT_EQ(whole.eval_size(DataSplit::kTrain), 0);
  EXPECT_EQ(whole.eval_size(DataSplit::kVal), 0);
  whole.eval_batch(DataSplit::kTest, 140, 2, b);
  EXPECT_EQ(locate(b, 0, bytes), 980);
  EXPECT_EQ(locate(b, 1, bytes), 987);
  EXPECT_THROW(whole.train_batch(0, 0, 1, 1, b), Error);
}

// The message of the Error that `f` throws ("" if none).
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TextDataset, BadFilesAreErrorsNamingTheFile) {
  TempDir dir;
  const std::string missing = dir.file("missing.txt");
  std::string msg = error_of([&] { TextDataset(missing, 8, 1, DataOrder::kRandom); });
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;
  EXPECT_NE(msg.find("cannot open"), std::string::npos) << msg;
  msg = error_of([&] { TextDataset::whole_file(missing, 8); });
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;

  // 100 bytes: val and test get 5 each, shorter than a 9-byte window.
  const std::string shorter = dir.file("short.txt");
  write_file(shorter, random_bytes(100, 6));
  msg = error_of([&] { TextDataset(shorter, 8, 1, DataOrder::kRandom); });
  EXPECT_NE(msg.find(shorter), std::string::npos) << msg;
  EXPECT_NE(msg.find("val split has 5 bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("too short"), std::string::npos) << msg;
  msg = error_of([&] { TextDataset::whole_file(shorter, 100); });
  EXPECT_NE(msg.find(shorter), std::string::npos) << msg;
  EXPECT_NE(msg.find("too short"), std::string::npos) << msg;
  // Found by tests/fuzz/text_fuzz: the message's seq_len + 1 overflowed an int.
  msg = error_of([&] { TextDataset::whole_file(shorter, INT_MAX); });
  EXPECT_NE(msg.find("seq_len + 1 = 2147483648 bytes"), std::string::npos) << msg;
  msg = error_of([&] { TextDataset(shorter, 8, 1, DataOrder::kRandom, 0.6, 0.5); });
  EXPECT_NE(msg.find("bad split fractions"), std::string::npos) << msg;
  msg = error_of([&] { TextDataset(dir.path(), 8, 1, DataOrder::kRandom); });
  EXPECT_NE(msg.find("is a directory"), std::string::npos) << msg;
}

// data/prepare_kjv.sh exports the King James Bible (SPEC §7: about 4.3 MB) and skips an
// existing file; the corpus then loads with the default splits.
TEST(TextDataset, KjvCorpusExportsAndLoads) {
  if (std::system("command -v bible >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "`bible` (Debian bible-kjv) is not installed";
  }
  TempDir dir;
  const std::string out = dir.file("kjv.txt");
  const std::string script = std::string(PRIMAL_SOURCE_DIR) + "/data/prepare_kjv.sh";
  ASSERT_EQ(std::system(("sh " + script + " " + out + " >/dev/null").c_str()), 0);
  const auto size = std::filesystem::file_size(out);
  EXPECT_GT(size, 4'200'000u);
  EXPECT_LT(size, 4'400'000u);
  const auto written = std::filesystem::last_write_time(out);
  ASSERT_EQ(std::system(("sh " + script + " " + out + " >/dev/null").c_str()), 0);
  EXPECT_EQ(std::filesystem::last_write_time(out), written);

  TextDataset kjv(out, 256, 1, DataOrder::kSequential);
  const std::string start = "\nGenesis 1\n\n  1 In the beginning God created";
  Batch b;
  kjv.train_batch(0, 0, 1, 1, b);
  EXPECT_EQ(std::string(b.tokens.begin(), b.tokens.begin() + int(start.size())), start);
  const std::string& end = "The grace of our Lord Jesus Christ be with you all. Amen.\n";
  const auto& bytes = kjv.bytes();
  EXPECT_EQ(std::string(bytes.end() - int(end.size()), bytes.end()), end);
}

}  // namespace
}  // namespace primal
