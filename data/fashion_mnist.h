// Fashion-MNIST (SPEC §7): gzip'd IDX files, 28x28 grey images, 10 classes. Images are cut
// into P x P patches for a patch-embedding classifier.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace primal {

// IDX (LeCun's MNIST format): a big-endian header, magic 0x00000803 (unsigned bytes, 3 dims)
// for images or 0x00000801 (1 dim) for labels, then one uint32 per dimension, then the data.
struct IdxImages {
  int64_t count = 0;
  int rows = 0;
  int cols = 0;
  std::vector<uint8_t> pixels;  // [count, rows, cols], row-major
};
// Both read a gzip'd IDX file and check it completely (magic, dimensions, exact data length,
// the gzip CRC); anything wrong is a primal::Error naming the file and the problem.
IdxImages read_idx_images(const std::string& path);
std::vector<uint8_t> read_idx_labels(const std::string& path);

// One rows x cols image -> (rows/P)(cols/P) patches of P*P values in [0, 1] (value / 255):
// patches in row-major patch order, each patch flattened row-major. out: [(rows/P)(cols/P), P*P].
void cut_patches(const uint8_t* image, int rows, int cols, int patch, float* out);

class FashionMnist : public Dataset {
 public:
  static constexpr int kClasses = 10;
  static constexpr int64_t kValSize = 5000;  // held out of the 60,000 training images
  static constexpr const char* kDebianDir = "/usr/share/datasets/fashion-mnist";

  // How an image reaches the model: P x P patches (Batch::patches, model.input PATCHES), or
  // one token per pixel, its intensity 0..255, in row-major order (Batch::tokens, model.input
  // TOKENS: the LRA-Image form, 784 positions, no patches).
  enum class Form { kPatches, kPixels };

  // Reads train-{images-idx3,labels-idx1}-ubyte.gz and t10k-*.gz from dir. Splits: train is
  // the first (count - val_size) of train-*, val the last val_size (5,000 of 60,000: the
  // usual 55k/5k), test the 10,000 of t10k-*. Throws primal::Error for a bad file, a patch
  // size that does not divide the image (Form::kPatches; kPixels ignores patch), or labels
  // >= 10.
  FashionMnist(const std::string& dir, int patch, uint64_t seed, DataOrder order,
               int64_t val_size = kValSize, Form form = Form::kPatches);

  // Global sample k = step * global_batch + g is train image train_index(k): SEQUENTIAL
  // k mod n_train; RANDOM position k mod n_train of epoch k / n_train's permutation.
  void train_batch(int64_t step, int64_t first, int count, int global_batch,
                   Batch& batch) const override;
  int64_t eval_size(DataSplit split) const override;
  void eval_batch(DataSplit split, int64_t first, int count, Batch& batch) const override;

  int64_t train_index(int64_t k) const;
  // Input positions per image: the patches, or the pixels.
  int positions() const { return form_ == Form::kPixels ? rows_ * cols_ : num_patches(); }
  int num_patches() const { return (rows_ / patch_) * (cols_ / patch_); }
  int patch_dim() const { return patch_ * patch_; }
  int rows() const { return rows_; }
  int cols() const { return cols_; }

 private:
  // Which images a split is: a range of one of the two files.
  struct Split {
    const std::vector<uint8_t>* pixels;
    const std::vector<uint8_t>* labels;
    int64_t begin;
    int64_t size;
  };
  Split split(DataSplit s) const;
  void start_batch(int count, Batch& batch) const;
  void fill(const Split& s, int64_t index, int i, Batch& batch) const;

  Form form_;
  int patch_;
  uint64_t seed_;
  DataOrder order_;
  int rows_ = 0, cols_ = 0;
  int64_t n_train_ = 0, n_val_ = 0;
  std::vector<uint8_t> train_pixels_, train_labels_, test_pixels_, test_labels_;
};

}  // namespace primal
