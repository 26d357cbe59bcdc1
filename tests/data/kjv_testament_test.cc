#include "data/kjv_testament.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "tests/data/temp_dir.h"

namespace primal {
namespace {

using testing::TempDir;
using testing::write_file;

const std::string kCorpus = std::string(PRIMAL_SOURCE_DIR) + "/data/kjv.txt";
#define REQUIRE_KJV_EXPORT()             \
  if (!std::filesystem::exists(kCorpus)) \
  GTEST_SKIP() << kCorpus << " is missing (scripts/setup.sh exports it)"

// An export in the shape of `bible -p` (data/prepare_kjv.sh): a blank line, a heading, a blank
// line, then numbered verses, some running over two lines. `chapters` chapters of each
// testament, each verse naming its testament, chapter and verse.
std::string export_text(int chapters) {
  std::ostringstream s;
  for (const char* book : {"Genesis", "Matthew"}) {
    for (int c = 1; c <= chapters; ++c) {
      s << "\n" << book << " " << c << "\n\n";
      for (int v = 1; v <= 40; ++v) {
        s << "  " << v << " " << book << " chapter " << c << " verse " << v
          << " runs on\nto its second line.\n";
      }
    }
  }
  return s.str();
}

TEST(KjvTestament, RemovesHeadingsAndVerseNumbers) {
  TempDir dir;
  write_file(dir.file("kjv.txt"), export_text(60));
  KjvTestament d(dir.file("kjv.txt"), 64, 1);
  const std::string& old = d.text(0);
  const std::string start =
      "Genesis chapter 1 verse 1 runs on to its second line.\nGenesis chapter 1 verse 2 runs on";
  EXPECT_EQ(old.substr(0, start.size()), start);
  EXPECT_EQ(old.find("Matthew"), std::string::npos);
  EXPECT_EQ(old.find("Genesis 1\n"), std::string::npos);
  EXPECT_EQ(d.text(1).find("Genesis"), std::string::npos);
  EXPECT_EQ(d.text(1).substr(0, 26), "Matthew chapter 1 verse 1 ");
  // 60 chapters x 40 verses x 54 or 55 bytes (+1 newline) per testament.
  EXPECT_GT(old.size(), 60u * 40 * 54);
}

TEST(KjvTestament, RefusesAnotherFileAndWindowsThatDoNotFit) {
  TempDir dir;
  auto error_of = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  write_file(dir.file("genesis.txt"), "\nGenesis 1\n\n  1 In the beginning\n");
  std::string msg = error_of([&] { KjvTestament(dir.file("genesis.txt"), 64, 1); });
  EXPECT_NE(msg.find(dir.file("genesis.txt")), std::string::npos) << msg;
  EXPECT_NE(msg.find("no heading 'Matthew 1'"), std::string::npos) << msg;
  write_file(dir.file("short.txt"), export_text(3));
  msg = error_of([&] { KjvTestament(dir.file("short.txt"), 64, 1); });
  EXPECT_NE(msg.find("too short"), std::string::npos) << msg;
  write_file(dir.file("kjv.txt"), export_text(60));
  msg = error_of([&] { KjvTestament(dir.file("kjv.txt"), 16385, 1); });
  EXPECT_NE(msg.find("does not fit the 16384-byte blocks"), std::string::npos) << msg;
  msg = error_of([&] { KjvTestament(dir.file("missing.txt"), 64, 1); });
  EXPECT_NE(msg.find("cannot be read"), std::string::npos) << msg;
}

// Every window lies in one block of its own split, and no block belongs to two splits, so no
// byte of the corpus is in windows of two splits; the blocks do not depend on the seed.
TEST(KjvTestament, SplitsAreDisjointBlocksTheSameForEverySeed) {
  REQUIRE_KJV_EXPORT();
  const KjvTestament d(kCorpus, 4096, 1), other(kCorpus, 4096, 2);
  // The Old Testament is about 3.2 MB of verse text, the New about 1 MB.
  EXPECT_GT(d.text(0).size(), 3'000'000u);
  EXPECT_GT(d.text(1).size(), 900'000u);
  for (int label = 0; label < 2; ++label) {
    std::set<int64_t> seen;
    for (DataSplit s : {DataSplit::kTrain, DataSplit::kVal, DataSplit::kTest}) {
      EXPECT_EQ(d.blocks(s, label), other.blocks(s, label));
      EXPECT_FALSE(d.blocks(s, label).empty());
      for (int64_t b : d.blocks(s, label)) EXPECT_TRUE(seen.insert(b).second) << "block " << b;
    }
  }
  auto block_split = [&](const KjvTestament::Window& w) {
    const int64_t block = w.begin / KjvTestament::kBlockBytes;
    EXPECT_EQ((w.begin + d.window_bytes() - 1) / KjvTestament::kBlockBytes, block)
        << "a window crosses a block boundary";
    for (DataSplit s : {DataSplit::kTrain, DataSplit::kVal, DataSplit::kTest}) {
      for (int64_t b : d.blocks(s, w.label)) {
        if (b == block) return s;
      }
    }
    ADD_FAILURE() << "block " << block << " is in no split";
    return DataSplit::kTrain;
  };
  for (int64_t k = 0; k < 4000; ++k) EXPECT_EQ(block_split(d.train_window(k)), DataSplit::kTrain);
  for (DataSplit s : {DataSplit::kVal, DataSplit::kTest}) {
    for (int64_t i = 0; i < d.eval_size(s); ++i) {
      EXPECT_EQ(block_split(d.eval_window(s, i)), s);
      EXPECT_EQ(d.eval_window(s, i).begin, other.eval_window(s, i).begin);
    }
  }
}

TEST(KjvTestament, LabelsAreBalancedAndBatchesDeterministic) {
  REQUIRE_KJV_EXPORT();
  const KjvTestament d(kCorpus, 512, 7, 100), same(kCorpus, 512, 7, 100),
      other(kCorpus, 512, 8, 100);
  Batch full, slice, again, reseeded;
  d.train_batch(5, 0, 16, 16, full);
  ASSERT_EQ(full.B, 16);
  ASSERT_EQ(full.N, 512);
  ASSERT_EQ(full.tokens.size(), 16u * 512);
  EXPECT_EQ(full.lengths, std::vector<int32_t>(16, 512));
  int ones = 0;
  for (int32_t t : full.targets) ones += t;
  EXPECT_EQ(ones, 8);
  // The bytes are the window of the testament the label names.
  for (int i = 0; i < 16; ++i) {
    const KjvTestament::Window w = d.train_window(5 * 16 + i);
    EXPECT_EQ(full.targets[size_t(i)], w.label);
    for (int t = 0; t < 512; ++t) {
      ASSERT_EQ(full.tokens[size_t(i) * 512 + t],
                int32_t(static_cast<unsigned char>(d.text(w.label)[size_t(w.begin + t)])));
    }
  }
  // A data-parallel rank's slice is those rows of the full batch; the same seed repeats it,
  // another seed draws other windows.
  d.train_batch(5, 4, 8, 16, slice);
  EXPECT_TRUE(std::equal(slice.tokens.begin(), slice.tokens.end(), full.tokens.begin() + 4 * 512));
  same.train_batch(5, 0, 16, 16, again);
  EXPECT_EQ(again.tokens, full.tokens);
  other.train_batch(5, 0, 16, 16, reseeded);
  EXPECT_NE(reseeded.tokens, full.tokens);
  EXPECT_EQ(reseeded.targets, full.targets);
  // Evaluation: 100 windows per split, 50 of each testament.
  EXPECT_EQ(d.eval_size(DataSplit::kTest), 100);
  d.eval_batch(DataSplit::kTest, 0, 100, full);
  ones = 0;
  for (int32_t t : full.targets) ones += t;
  EXPECT_EQ(ones, 50);
}

}  // namespace
}  // namespace primal
