#include "data/pathfinder.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/random.h"
#include "tests/data/temp_dir.h"

namespace primal {
namespace {

using Image = std::vector<uint8_t>;
constexpr int kSide = Pathfinder::kSide;

Image draw(const Pathfinder& d, DataSplit split, int64_t index, int* label = nullptr) {
  Image image(Pathfinder::kPixels);
  const int l = d.sample(split, index, image.data());
  if (label) *label = l;
  return image;
}

// An independent reading of an image, from the definition only: lit pixels are the non-zero
// ones; a marker is a lit pixel whose whole 3x3 neighbourhood is lit (a 1-pixel dash never
// is); two lit pixels are joined when their Chebyshev distance is at most `radius`.
struct Reading {
  explicit Reading(const Image& image) : lit(image.size()) {
    for (size_t p = 0; p < image.size(); ++p) lit[p] = image[p] != 0;
    for (int y = 1; y + 1 < kSide; ++y) {
      for (int x = 1; x + 1 < kSide; ++x) {
        bool full = true;
        for (int dy = -1; dy <= 1; ++dy) {
          for (int dx = -1; dx <= 1; ++dx) full &= bool(lit[(y + dy) * kSide + x + dx]);
        }
        if (full) markers.push_back(y * kSide + x);
      }
    }
  }
  // Component labels of the lit pixels (-1: background) under neighbourhood `radius`.
  std::vector<int> components(int radius, int& count) const {
    std::vector<int> comp(lit.size(), -1);
    count = 0;
    for (int seed = 0; seed < int(lit.size()); ++seed) {
      if (!lit[seed] || comp[seed] >= 0) continue;
      std::vector<int> stack = {seed};
      comp[seed] = count;
      while (!stack.empty()) {
        const int p = stack.back();
        stack.pop_back();
        const int px = p % kSide, py = p / kSide;
        for (int y = std::max(py - radius, 0); y <= std::min(py + radius, kSide - 1); ++y) {
          for (int x = std::max(px - radius, 0); x <= std::min(px + radius, kSide - 1); ++x) {
            const int q = y * kSide + x;
            if (lit[q] && comp[q] < 0) {
              comp[q] = count;
              stack.push_back(q);
            }
          }
        }
      }
      ++count;
    }
    return comp;
  }
  std::vector<char> lit;
  std::vector<int> markers;  // centres of fully lit 3x3 squares
};

uint64_t hash_image(const Image& image) {
  return fnv1a(std::string_view(reinterpret_cast<const char*>(image.data()), image.size()));
}

TEST(Pathfinder, LabelsAreBalancedInEverySplit) {
  const Pathfinder d(3, DataOrder::kRandom, 4000, 2000, 2000);
  for (DataSplit split : {DataSplit::kTrain, DataSplit::kVal, DataSplit::kTest}) {
    Batch b;
    d.eval_batch(split, 0, 1000, b);
    int positives = 0;
    for (int32_t label : b.targets) {
      ASSERT_TRUE(label == 0 || label == 1) << label;
      positives += label;
    }
    EXPECT_EQ(positives, 500);  // pairs (2m, 2m+1) have opposite labels
    d.eval_batch(split, 1, 999, b);
    positives = 0;
    for (int32_t label : b.targets) positives += label;
    EXPECT_NEAR(positives / 999.0, 0.5, 0.02);
  }
  // Training batches in RANDOM order: within 2% too.
  Batch b;
  int positives = 0;
  for (int step = 0; step < 8; ++step) {
    d.train_batch(step, 0, 128, 128, b);
    for (int32_t label : b.targets) positives += label;
  }
  EXPECT_NEAR(positives / 1024.0, 0.5, 0.02);
}

// The label is what a flood fill over the image says: the markers are joined under the
// radius-2 neighbourhood exactly when the label is 1. Also: two markers, intensities only 0
// and 255, every path separated (kTargetPaths + kDistractors components), and dashes with
// real gaps (8-connected, a marker never reaches the other one).
TEST(Pathfinder, IndependentFloodFillAgreesWithTheLabel) {
  const Pathfinder d(17, DataOrder::kRandom, 1000, 1000, 1000);
  int positives = 0;
  for (int64_t i = 0; i < 1000; ++i) {
    int label = -1;
    const Image image = draw(d, DataSplit::kVal, i, &label);
    for (uint8_t v : image) ASSERT_TRUE(v == 0 || v == 255) << int(v);
    const Reading r(image);
    ASSERT_EQ(r.markers.size(), 2u) << "sample " << i;
    int paths = 0, pieces = 0;
    const std::vector<int> comp = r.components(2, paths);
    const std::vector<int> eight = r.components(1, pieces);
    EXPECT_EQ(paths, Pathfinder::kTargetPaths + Pathfinder::kDistractors) << "sample " << i;
    EXPECT_GT(pieces, paths) << "sample " << i;
    const int a = r.markers[0], b = r.markers[1];
    ASSERT_EQ(comp[a] == comp[b], label == 1) << "sample " << i;
    EXPECT_NE(eight[a], eight[b]) << "sample " << i;
    positives += label;
  }
  EXPECT_EQ(positives, 500);
}

TEST(Pathfinder, SamplesArePureFunctionsOfSeedSplitAndIndex) {
  const Pathfinder d(11, DataOrder::kRandom), again(11, DataOrder::kRandom),
      other(12, DataOrder::kRandom);
  int differ_seed = 0;
  for (int64_t i = 0; i < 200; ++i) {
    int la = -1, lb = -1;
    const Image a = draw(d, DataSplit::kTest, i * 97, &la);
    EXPECT_EQ(a, draw(again, DataSplit::kTest, i * 97, &lb));
    EXPECT_EQ(la, lb);
    differ_seed += a != draw(other, DataSplit::kTest, i * 97);
  }
  EXPECT_EQ(differ_seed, 200);
}

// No image occurs twice, within a split or across the three (3,000 each, by hash).
TEST(Pathfinder, SplitsAreDisjoint) {
  const Pathfinder d(5, DataOrder::kSequential, 3000, 3000, 3000);
  std::set<uint64_t> seen;
  for (DataSplit split : {DataSplit::kTrain, DataSplit::kVal, DataSplit::kTest}) {
    Batch b;
    d.eval_batch(split, 0, 3000, b);
    for (int i = 0; i < 3000; ++i) {
      const auto row = b.tokens.begin() + ptrdiff_t(i) * Pathfinder::kPixels;
      const Image image(row, row + Pathfinder::kPixels);
      EXPECT_TRUE(seen.insert(hash_image(image)).second) << "split " << int(split) << " " << i;
    }
  }
  EXPECT_EQ(seen.size(), 9000u);
}

TEST(Pathfinder, TrainBatchSlicesMatchTheWholeBatch) {
  for (DataOrder order : {DataOrder::kRandom, DataOrder::kSequential}) {
    const Pathfinder d(9, order, 50, 10, 10);
    Batch whole, lo, hi;
    d.train_batch(3, 0, 16, 16, whole);  // samples 48..63: crosses into epoch 1
    ASSERT_EQ(whole.B, 16);
    ASSERT_EQ(whole.N, Pathfinder::kPixels);
    ASSERT_EQ(whole.tokens.size(), 16u * Pathfinder::kPixels);
    EXPECT_TRUE(whole.patches.empty());
    EXPECT_EQ(whole.lengths, std::vector<int32_t>(16, Pathfinder::kPixels));
    d.train_batch(3, 0, 5, 16, lo);
    d.train_batch(3, 5, 11, 16, hi);
    std::vector<int32_t> tokens = lo.tokens, targets = lo.targets;
    tokens.insert(tokens.end(), hi.tokens.begin(), hi.tokens.end());
    targets.insert(targets.end(), hi.targets.begin(), hi.targets.end());
    EXPECT_EQ(whole.tokens, tokens);
    EXPECT_EQ(whole.targets, targets);
    EXPECT_EQ(hi.sample_offset, 5);
    for (int32_t t : whole.tokens) ASSERT_TRUE(t >= 0 && t < Pathfinder::kVocab);

    // Row g is train sample train_index(step * global_batch + g), as sample() draws it.
    int label = -1;
    const Image image = draw(d, DataSplit::kTrain, d.train_index(3 * 16 + 7), &label);
    EXPECT_EQ(whole.targets[7], label);
    EXPECT_TRUE(std::equal(image.begin(), image.end(), whole.tokens.begin() + 7 * 1024));

    // Each epoch visits every train sample once; SEQUENTIAL in order.
    std::set<int64_t> epoch;
    for (int64_t k = 50; k < 100; ++k) epoch.insert(d.train_index(k));
    EXPECT_EQ(epoch.size(), 50u);
    if (order == DataOrder::kSequential) {
      EXPECT_EQ(d.train_index(57), 7);
    }

    // A warm batch keeps its buffers.
    const int32_t* data = whole.tokens.data();
    d.train_batch(4, 0, 16, 16, whole);
    EXPECT_EQ(whole.tokens.data(), data);
  }
}

TEST(Pathfinder, BadSizesAndIndicesAreErrors) {
  EXPECT_THROW(Pathfinder(1, DataOrder::kRandom, 0, 10, 10), Error);
  EXPECT_THROW(Pathfinder(1, DataOrder::kRandom, 10, -1, 10), Error);
  EXPECT_THROW(Pathfinder(1, DataOrder::kRandom, 10, 10, 0), Error);
  const Pathfinder d(1, DataOrder::kRandom, 10, 10, 10);
  EXPECT_EQ(d.eval_size(DataSplit::kTrain), 10);
  const Pathfinder lra(1, DataOrder::kRandom);
  EXPECT_EQ(lra.eval_size(DataSplit::kTrain), 160000);
  EXPECT_EQ(lra.eval_size(DataSplit::kVal), 20000);
  EXPECT_EQ(lra.eval_size(DataSplit::kTest), 20000);
  Image image(Pathfinder::kPixels);
  EXPECT_THROW(d.sample(DataSplit::kVal, 10, image.data()), Error);
  EXPECT_THROW(d.sample(DataSplit::kVal, -1, image.data()), Error);
  Batch b;
  EXPECT_THROW(d.eval_batch(DataSplit::kTest, 5, 6, b), Error);
  EXPECT_THROW(d.train_batch(0, 4, 5, 8, b), Error);
}

// Writes samples as binary PGM (P5) and reads them back. With PRIMAL_PATHFINDER_PGM_DIR set
// the files are kept there to look at.
TEST(Pathfinder, SamplesWriteAsPgm) {
  const testing::TempDir tmp;
  const char* keep = std::getenv("PRIMAL_PATHFINDER_PGM_DIR");
  const std::string dir = keep ? keep : tmp.path();
  const Pathfinder d(1, DataOrder::kRandom);
  for (int64_t i = 0; i < 8; ++i) {
    int label = -1;
    const Image image = draw(d, DataSplit::kTest, i, &label);
    const std::string path =
        dir + "/sample" + std::to_string(i) + "_label" + std::to_string(label) + ".pgm";
    const std::string header = "P5\n32 32\n255\n";
    testing::write_file(path,
                        header + std::string(reinterpret_cast<const char*>(image.data()), 1024));
    std::ifstream in(path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_EQ(bytes.size(), header.size() + 1024);
    EXPECT_EQ(bytes.substr(header.size()),
              std::string(reinterpret_cast<const char*>(image.data()), 1024));
  }
}

}  // namespace
}  // namespace primal
