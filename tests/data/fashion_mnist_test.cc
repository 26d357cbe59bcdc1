#include "data/fashion_mnist.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <zlib.h>

#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "tests/data/temp_dir.h"

namespace primal {
namespace {

using testing::TempDir;
using testing::write_file;

const std::string kDebian = FashionMnist::kDebianDir;

bool have_debian_files() {
  return std::filesystem::exists(kDebian + "/train-images-idx3-ubyte.gz") &&
         std::filesystem::exists(kDebian + "/t10k-labels-idx1-ubyte.gz");
}
#define REQUIRE_DEBIAN_FASHION_MNIST() \
  if (!have_debian_files())            \
  GTEST_SKIP() << kDebian << " is missing (Debian package dataset-fashion-mnist)"

// The real dataset, read once for all tests that use it.
const FashionMnist& debian_dataset() {
  static const auto d = std::make_unique<FashionMnist>(kDebian, 7, 1234, DataOrder::kRandom);
  return *d;
}

void put_be32(std::string& s, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) s += char((v >> shift) & 0xFF);
}

std::string gzip(const std::string& bytes) {
  uLongf size = compressBound(uLong(bytes.size())) + 64;
  std::string out(size, '\0');
  z_stream z{};
  // windowBits 15 + 16: a gzip wrapper rather than zlib's.
  EXPECT_EQ(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = uInt(bytes.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = uInt(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

std::string idx_images(uint32_t magic, uint32_t count, uint32_t rows, uint32_t cols,
                       const std::vector<uint8_t>& pixels) {
  std::string s;
  put_be32(s, magic);
  put_be32(s, count);
  put_be32(s, rows);
  put_be32(s, cols);
  s.append(pixels.begin(), pixels.end());
  return s;
}

std::string idx_labels(uint32_t magic, uint32_t count, const std::vector<uint8_t>& labels) {
  std::string s;
  put_be32(s, magic);
  put_be32(s, count);
  s.append(labels.begin(), labels.end());
  return s;
}

// A tiny Fashion-MNIST-shaped directory: `n_train` and `n_test` images of 6 x 6, pixel
// (r, c) of image i is (36 i + 6 r + c) mod 256 (test images offset by 100), label i mod 10.
void write_tiny_dataset(const TempDir& dir, uint32_t n_train, uint32_t n_test) {
  for (const bool train : {true, false}) {
    const uint32_t n = train ? n_train : n_test;
    std::vector<uint8_t> pixels, labels;
    for (uint32_t i = 0; i < n; ++i) {
      for (int p = 0; p < 36; ++p) pixels.push_back(uint8_t(36 * i + p + (train ? 0 : 100)));
      labels.push_back(uint8_t(i % 10));
    }
    const std::string stem = dir.file(train ? "train" : "t10k");
    write_file(stem + "-images-idx3-ubyte.gz", gzip(idx_images(0x803, n, 6, 6, pixels)));
    write_file(stem + "-labels-idx1-ubyte.gz", gzip(idx_labels(0x801, n, labels)));
  }
}

template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_HAS(msg, part) EXPECT_NE((msg).find(part), std::string::npos) << (msg)

TEST(IdxReader, RealFashionMnistHasTheDocumentedShapeAndLabels) {
  REQUIRE_DEBIAN_FASHION_MNIST();
  const IdxImages test = read_idx_images(kDebian + "/t10k-images-idx3-ubyte.gz");
  EXPECT_EQ(test.count, 10000);
  EXPECT_EQ(test.rows, 28);
  EXPECT_EQ(test.cols, 28);
  ASSERT_EQ(test.pixels.size(), 10000u * 784);
  // Checked against Python's gzip module: the first image's pixel sum and row 14's start.
  int64_t sum = 0;
  for (int p = 0; p < 784; ++p) sum += test.pixels[size_t(p)];
  EXPECT_EQ(sum, 33456);
  EXPECT_EQ(test.pixels[14 * 28 + 12], 0x62);
  const std::vector<uint8_t> train_labels =
      read_idx_labels(kDebian + "/train-labels-idx1-ubyte.gz");
  const std::vector<uint8_t> test_labels = read_idx_labels(kDebian + "/t10k-labels-idx1-ubyte.gz");
  ASSERT_EQ(train_labels.size(), 60000u);
  ASSERT_EQ(test_labels.size(), 10000u);
  EXPECT_EQ(std::vector<uint8_t>(train_labels.begin(), train_labels.begin() + 10),
            (std::vector<uint8_t>{9, 0, 0, 3, 0, 2, 7, 2, 5, 5}));
  EXPECT_EQ(std::vector<uint8_t>(test_labels.begin(), test_labels.begin() + 10),
            (std::vector<uint8_t>{9, 2, 1, 1, 6, 1, 4, 6, 5, 7}));

  const FashionMnist& d = debian_dataset();
  EXPECT_EQ(d.eval_size(DataSplit::kTrain), 55000);
  EXPECT_EQ(d.eval_size(DataSplit::kVal), 5000);
  EXPECT_EQ(d.eval_size(DataSplit::kTest), 10000);
  // The validation split is the last 5,000 training images.
  Batch val;
  d.eval_batch(DataSplit::kVal, 4999, 1, val);
  EXPECT_EQ(val.targets[0], train_labels[59999]);
}

TEST(IdxReader, BadFilesAreErrorsNamingTheFileAndTheProblem) {
  TempDir dir;
  const std::vector<uint8_t> pixels(5 * 4 * 4, 7);

  const std::string missing = dir.file("missing.gz");
  std::string msg = error_of([&] { read_idx_images(missing); });
  EXPECT_HAS(msg, missing);
  EXPECT_HAS(msg, "cannot open");

  const std::string magic = dir.file("magic.gz");
  write_file(magic, gzip(idx_images(0x801, 5, 4, 4, pixels)));
  msg = error_of([&] { read_idx_images(magic); });
  EXPECT_HAS(msg, magic);
  EXPECT_HAS(msg, "bad IDX magic number 0x00000801 (expected 0x00000803");
  msg = error_of([&] { read_idx_labels(magic); });  // images header read as labels
  EXPECT_HAS(msg, "extra data after");

  const std::string truncated = dir.file("truncated.gz");  // header says 6 images, data has 5
  write_file(truncated, gzip(idx_images(0x803, 6, 4, 4, pixels)));
  msg = error_of([&] { read_idx_images(truncated); });
  EXPECT_HAS(msg, truncated);
  EXPECT_HAS(msg,
             "truncated: expected 96 bytes of pixel data (6 images of 4 x 4) but the data "
             "ends after 80");

  const std::string longer = dir.file("longer.gz");  // header says 4 images, data has 5
  write_file(longer, gzip(idx_images(0x803, 4, 4, 4, pixels)));
  msg = error_of([&] { read_idx_images(longer); });
  EXPECT_HAS(msg, longer);
  EXPECT_HAS(msg, "extra data after the 4 images");

  const std::string garbage = dir.file("garbage.gz");
  write_file(garbage, std::string("this is not gzip data at all, just text\n"));
  msg = error_of([&] { read_idx_images(garbage); });
  EXPECT_HAS(msg, garbage);
  EXPECT_HAS(msg, "not a gzip file");

  // A valid gzip stream cut in the middle (incompressible pixels keep the stream long).
  std::vector<uint8_t> noisy(50 * 28 * 28);
  for (size_t i = 0; i < noisy.size(); ++i) noisy[i] = uint8_t((i * 2654435761u) >> 13);
  const std::string whole = gzip(idx_images(0x803, 50, 28, 28, noisy));
  const std::string cut = dir.file("cut.gz");
  write_file(cut, whole.substr(0, whole.size() / 2));
  msg = error_of([&] { read_idx_images(cut); });
  EXPECT_HAS(msg, cut);
  EXPECT_HAS(msg, "truncated");

  // A corrupted deflate stream: flip bytes in the middle (the header stays valid).
  std::string flipped = whole;
  for (size_t i = flipped.size() / 3; i < flipped.size() / 3 + 16; ++i) flipped[i] ^= 0x5A;
  const std::string corrupt = dir.file("corrupt.gz");
  write_file(corrupt, flipped);
  msg = error_of([&] { read_idx_images(corrupt); });
  EXPECT_HAS(msg, corrupt);
  EXPECT_HAS(msg, "corrupt gzip data");

  // A wrong CRC-32 in the gzip trailer (the last 8 bytes: CRC, then length).
  std::string bad_crc = whole;
  bad_crc[bad_crc.size() - 8] ^= 1;
  const std::string crc = dir.file("crc.gz");
  write_file(crc, bad_crc);
  msg = error_of([&] { read_idx_images(crc); });
  EXPECT_HAS(msg, crc + ": corrupt gzip data (incorrect data check)");

  const std::string empty = dir.file("empty.gz");
  write_file(empty, "");
  EXPECT_EQ(error_of([&] { read_idx_images(empty); }), empty + ": empty file");

  const std::string zero = dir.file("zero.gz");
  write_file(zero, gzip(idx_images(0x803, 0, 28, 28, {})));
  msg = error_of([&] { read_idx_images(zero); });
  EXPECT_HAS(msg, "implausible IDX image dimensions 0 x 28 x 28");
}

// The process's peak resident memory so far, in MiB.
double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024;  // KiB on Linux
}

// Found by tests/fuzz/idx_fuzz: the readers allocated what a header claims (up to 16 GiB of
// pixels, 2 GiB of labels) before reading any data. Now memory follows the data that is there.
TEST(IdxReader, AHeaderClaimingGigabytesAllocatesOnlyWhatTheFileHolds) {
  TempDir dir;
  const std::string images = dir.file("images.gz"), labels = dir.file("labels.gz");
  write_file(images, gzip(idx_images(0x803, 1024, 1024, 1024, std::vector<uint8_t>(10, 1))));
  write_file(labels, gzip(idx_labels(0x801, 1u << 31, std::vector<uint8_t>(10, 1))));
  const double before = peak_rss_mib();
  std::string msg = error_of([&] { read_idx_images(images); });
  EXPECT_HAS(msg, "truncated: expected 1073741824 bytes of pixel data");
  EXPECT_HAS(msg, "but the data ends after 10");
  msg = error_of([&] { read_idx_labels(labels); });
  EXPECT_HAS(msg, "truncated: expected 2147483648 bytes of label data");
  EXPECT_LT(peak_rss_mib() - before, 64) << "the peak grew from " << before << " MiB";
}

TEST(FashionMnist, DatasetErrorsNameTheFile) {
  TempDir dir;
  write_tiny_dataset(dir, 12, 4);
  // Label count differs from the image count.
  const std::string labels = dir.file("t10k-labels-idx1-ubyte.gz");
  write_file(labels, gzip(idx_labels(0x801, 3, {1, 2, 3})));
  std::string msg = error_of([&] { FashionMnist(dir.path(), 2, 1, DataOrder::kRandom, 2); });
  EXPECT_HAS(msg, labels);
  EXPECT_HAS(msg, "holds 3 labels but");
  EXPECT_HAS(msg, "holds 4 images");
  // A label outside the 10 classes.
  write_file(labels, gzip(idx_labels(0x801, 4, {1, 2, 10, 3})));
  msg = error_of([&] { FashionMnist(dir.path(), 2, 1, DataOrder::kRandom, 2); });
  EXPECT_HAS(msg, labels);
  EXPECT_HAS(msg, "label 2 is 10");
  write_file(labels, gzip(idx_labels(0x801, 4, {1, 2, 9, 3})));
  // Patch size must divide the image; the validation split must leave training images.
  msg = error_of([&] { FashionMnist(dir.path(), 4, 1, DataOrder::kRandom, 2); });
  EXPECT_HAS(msg, "patch size 4 does not divide the 6 x 6 images");
  msg = error_of([&] { FashionMnist(dir.path(), 3, 1, DataOrder::kRandom, 12); });
  EXPECT_HAS(msg, "cannot hold out 12 validation images from 12");
  EXPECT_NO_THROW(FashionMnist(dir.path(), 3, 1, DataOrder::kRandom, 2));
  // A missing file.
  std::filesystem::remove(dir.file("train-images-idx3-ubyte.gz"));
  msg = error_of([&] { FashionMnist(dir.path(), 2, 1, DataOrder::kRandom, 2); });
  EXPECT_HAS(msg, dir.file("train-images-idx3-ubyte.gz"));
}

// Pixel values encode positions, so the patch layout can be read off: patch (i, j) of an
// image holds rows 2i..2i+1, columns 2j..2j+1, row-major, patches in row-major order.
TEST(FashionMnist, PatchesAreRowMajorPatchesOfRowMajorPixels) {
  TempDir dir;
  write_tiny_dataset(dir, 5, 3);
  FashionMnist d(dir.path(), 2, 1, DataOrder::kSequential, 2);
  EXPECT_EQ(d.num_patches(), 9);
  EXPECT_EQ(d.patch_dim(), 4);
  Batch b;
  d.eval_batch(DataSplit::kTest, 1, 2, b);
  ASSERT_EQ(b.B, 2);
  ASSERT_EQ(b.N, 9);
  ASSERT_EQ(b.patches.size(), 2u * 9 * 4);
  EXPECT_TRUE(b.tokens.empty());
  EXPECT_TRUE(b.lengths.empty());
  EXPECT_EQ(b.sample_offset, 1);
  EXPECT_EQ(b.targets, (std::vector<int32_t>{1, 2}));
  for (int s = 0; s < 2; ++s) {
    const int image = 1 + s;
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 3; ++j) {
        for (int y = 0; y < 2; ++y) {
          for (int x = 0; x < 2; ++x) {
            const int pixel = 36 * image + 6 * (2 * i + y) + 2 * j + x + 100;
            EXPECT_FLOAT_EQ(b.patches[((size_t(s) * 9 + 3 * i + j) * 4) + 2 * y + x],
                            float(pixel) / 255.0f);
          }
        }
      }
    }
  }
  // Splits: train = the first 3 training images, val = the last 2; SEQUENTIAL wraps.
  d.eval_batch(DataSplit::kVal, 0, 2, b);
  EXPECT_EQ(b.targets, (std::vector<int32_t>{3, 4}));
  EXPECT_FLOAT_EQ(b.patches[0], float(36 * 3) / 255.0f);
  d.train_batch(1, 0, 2, 2, b);  // samples 2, 3 -> train images 2, 0
  EXPECT_EQ(b.targets, (std::vector<int32_t>{2, 0}));
  EXPECT_FLOAT_EQ(b.patches[0], float(36 * 2) / 255.0f);

  // 3 x 3 patches of the same image: patch 1 starts at column 3 of row 0.
  std::vector<uint8_t> image(36);
  for (int p = 0; p < 36; ++p) image[size_t(p)] = uint8_t(p);
  std::vector<float> out(4 * 9);
  cut_patches(image.data(), 6, 6, 3, out.data());
  const int patch1[9] = {3, 4, 5, 9, 10, 11, 15, 16, 17};
  for (int k = 0; k < 9; ++k) EXPECT_FLOAT_EQ(out[9 + size_t(k)], float(patch1[k]) / 255.0f);
}

TEST(FashionMnist, RealBatchesAreScaledPatchesOfTheImages) {
  REQUIRE_DEBIAN_FASHION_MNIST();
  const FashionMnist& d = debian_dataset();
  Batch b;
  d.eval_batch(DataSplit::kTest, 0, 4, b);
  ASSERT_EQ(b.N, 16);
  ASSERT_EQ(b.patches.size(), 4u * 16 * 49);
  EXPECT_EQ(b.targets, (std::vector<int32_t>{9, 2, 1, 1}));
  // Row 14, columns 7..13 of test image 0 are row 0 of patch (2, 1) = patch 9.
  const uint8_t row14[7] = {0x04, 0x01, 0x00, 0x00, 0x00, 0x62, 0x88};
  for (int x = 0; x < 7; ++x) EXPECT_FLOAT_EQ(b.patches[9 * 49 + size_t(x)], row14[x] / 255.0f);
  double sum = 0;
  for (size_t k = 0; k < 16 * 49; ++k) sum += b.patches[k];
  EXPECT_NEAR(sum, 33456 / 255.0, 1e-3);
  for (float v : b.patches) {
    ASSERT_GE(v, 0.0f);
    ASSERT_LE(v, 1.0f);
  }
}

// The LRA-Image form: one token per pixel, its raw intensity, in row-major order; the same
// images and labels as the patch form, in the same order.
TEST(FashionMnist, PixelFormGivesOneTokenPerPixel) {
  REQUIRE_DEBIAN_FASHION_MNIST();
  const FashionMnist pixels(kDebian, 7, 1234, DataOrder::kRandom, FashionMnist::kValSize,
                            FashionMnist::Form::kPixels);
  const FashionMnist& patches = debian_dataset();
  EXPECT_EQ(pixels.positions(), 784);
  Batch b, p;
  pixels.eval_batch(DataSplit::kTest, 0, 4, b);
  ASSERT_EQ(b.N, 784);
  ASSERT_EQ(b.tokens.size(), 4u * 784);
  EXPECT_TRUE(b.patches.empty());
  EXPECT_EQ(b.targets, (std::vector<int32_t>{9, 2, 1, 1}));
  // Row 14, columns 7..13 of test image 0.
  const uint8_t row14[7] = {0x04, 0x01, 0x00, 0x00, 0x00, 0x62, 0x88};
  for (int x = 0; x < 7; ++x) EXPECT_EQ(b.tokens[14 * 28 + 7 + size_t(x)], row14[x]);
  int64_t sum = 0;
  for (int t = 0; t < 784; ++t) sum += b.tokens[size_t(t)];
  EXPECT_EQ(sum, 33456);
  // Training batches: the same images as the patch form's (pixel k of patch (i, j) is at row
  // 7i + k / 7, column 7j + k % 7).
  pixels.train_batch(3, 1, 2, 8, b);
  patches.train_batch(3, 1, 2, 8, p);
  EXPECT_EQ(b.targets, p.targets);
  for (int s = 0; s < 2; ++s) {
    for (int patch = 0; patch < 16; ++patch) {
      for (int k = 0; k < 49; ++k) {
        const int row = 7 * (patch / 4) + k / 7, col = 7 * (patch % 4) + k % 7;
        ASSERT_FLOAT_EQ(p.patches[(size_t(s) * 16 + patch) * 49 + k],
                        float(b.tokens[size_t(s) * 784 + row * 28 + col]) / 255.0f);
      }
    }
  }
}

// RANDOM order visits every training image exactly once per epoch, in a different order each
// epoch and for each seed, and a batch does not depend on how it is sliced.
TEST(FashionMnist, RandomOrderIsAPermutationOfTheTrainSplitPerEpoch) {
  REQUIRE_DEBIAN_FASHION_MNIST();
  const FashionMnist& d = debian_dataset();
  const int64_t n = 55000;
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    std::vector<int> seen(n, 0);
    int64_t fixed = 0;
    for (int64_t k = 0; k < n; ++k) {
      const int64_t i = d.train_index(epoch * n + k);
      ASSERT_GE(i, 0);
      ASSERT_LT(i, n);
      ++seen[size_t(i)];
      fixed += i == k;
    }
    EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), n) << "epoch " << epoch;
    EXPECT_LT(fixed, 10);
  }
  int64_t same = 0;
  for (int64_t k = 0; k < 1000; ++k) same += d.train_index(k) == d.train_index(n + k);
  EXPECT_LT(same, 5);

  Batch whole, lo, hi;
  d.train_batch(3, 0, 6, 6, whole);
  d.train_batch(3, 0, 2, 6, lo);
  d.train_batch(3, 2, 4, 6, hi);
  std::vector<float> concat = lo.patches;
  concat.insert(concat.end(), hi.patches.begin(), hi.patches.end());
  EXPECT_EQ(whole.patches, concat);
  EXPECT_EQ(hi.sample_offset, 2);
  EXPECT_EQ(hi.targets[0], whole.targets[2]);
}

TEST(FashionMnist, SequentialOrderWalksTheTrainSplit) {
  TempDir dir;
  write_tiny_dataset(dir, 12, 2);
  FashionMnist seq(dir.path(), 3, 1, DataOrder::kSequential, 2);
  FashionMnist rnd(dir.path(), 3, 1, DataOrder::kRandom, 2);
  FashionMnist rnd2(dir.path(), 3, 2, DataOrder::kRandom, 2);
  std::set<int64_t> epoch;
  bool differs = false;
  for (int64_t k = 0; k < 25; ++k) EXPECT_EQ(seq.train_index(k), k % 10);
  for (int64_t k = 10; k < 20; ++k) {
    epoch.insert(rnd.train_index(k));
    differs |= rnd.train_index(k) != rnd2.train_index(k);
  }
  EXPECT_EQ(epoch.size(), 10u);
  EXPECT_EQ(*epoch.rbegin(), 9);
  EXPECT_TRUE(differs);
}

}  // namespace
}  // namespace primal
