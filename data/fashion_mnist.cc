#include "data/fashion_mnist.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "data/order.h"

namespace primal {
namespace {

// A gzip file read with zlib, every failure a primal::Error naming the file.
class GzReader {
 public:
  explicit GzReader(const std::string& path) : path_(path) {
    errno = 0;
    file_ = gzopen(path.c_str(), "rb");
    if (!file_) {
      throw Error(path, std::string("cannot open (") +
                            (errno ? std::strerror(errno) : "out of memory") + ")");
    }
    gzbuffer(file_, 1 << 18);
  }
  ~GzReader() { gzclose(file_); }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;

  // Reads exactly n bytes of `what`, or throws: short data is a truncated file.
  void read(void* dst, size_t n, const std::string& what) { read_part(dst, n, 0, n, what); }
  // The same into out, which grows as the data arrives (doubling, from 1 MiB): a header that
  // claims more than the file holds ends in "truncated" having allocated about what the file
  // holds, not what the header claims.
  void read(std::vector<uint8_t>& out, size_t n, const std::string& what) {
    out.clear();
    while (out.size() < n) {
      const size_t at = out.size(), part = std::min(n - at, std::max(at, size_t{1} << 20));
      out.resize(at + part);
      read_part(out.data() + at, part, at, n, what);
    }
  }
  // Reading past the last byte makes zlib check the gzip trailer (CRC-32 and length), and
  // tells a file longer than its header says from one that is exact.
  void expect_end(const std::string& what) {
    char extra;
    const int got = gzread(file_, &extra, 1);
    if (got < 0) fail();
    if (got > 0) throw Error(path_, "extra data after the " + what + " the header declares");
  }

 private:
  // Bytes [at, at + n) of the `total` bytes of `what` into dst.
  void read_part(void* dst, size_t n, size_t at, size_t total, const std::string& what) {
    size_t done = 0;
    while (done < n) {
      const unsigned chunk = unsigned(std::min<size_t>(n - done, size_t{1} << 30));
      const int got = gzread(file_, static_cast<char*>(dst) + done, chunk);
      if (got < 0) fail();
      if (got == 0) {
        if (total_ + done == 0) throw Error(path_, "empty file");
        throw Error(path_, "truncated: expected " + std::to_string(total) + " bytes of " + what +
                               " but the data ends after " + std::to_string(at + done));
      }
      done += size_t(got);
      // zlib reads a non-gzip file "transparently" as is; we want the .gz we were promised.
      if (gzdirect(file_)) throw Error(path_, "not a gzip file (no gzip header)");
    }
    total_ += n;
  }
  // No "while reading X": zlib decompresses ahead of the reader, so a fault late in the
  // stream can surface on the first read.
  [[noreturn]] void fail() {
    int code = Z_OK;
    std::string msg = gzerror(file_, &code);
    if (code == Z_BUF_ERROR) throw Error(path_, "truncated gzip stream (unexpected end of file)");
    if (code == Z_ERRNO) msg = std::strerror(errno);
    // zlib's message starts with the path, which the Error already names.
    if (msg.rfind(path_ + ": ", 0) == 0) msg.erase(0, path_.size() + 2);
    throw Error(path_, "corrupt gzip data (" + msg + ")");
  }

  std::string path_;
  gzFile file_;
  size_t total_ = 0;  // bytes read so far
};

uint32_t big_endian(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

std::string hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", v);
  return buf;
}

// Reads the magic word and the dims of an IDX header.
std::vector<uint32_t> read_header(GzReader& in, const std::string& path, uint32_t magic, int dims) {
  uint8_t word[4];
  in.read(word, 4, "the IDX magic number");
  const uint32_t got = big_endian(word);
  if (got != magic) {
    throw Error(path, "bad IDX magic number " + hex(got) + " (expected " + hex(magic) + ": " +
                          (dims == 3 ? "unsigned-byte images, 3 dimensions"
                                     : "unsigned-byte labels, 1 dimension") +
                          ")");
  }
  std::vector<uint32_t> sizes(dims);
  for (int d = 0; d < dims; ++d) {
    in.read(word, 4, "the IDX header");
    sizes[d] = big_endian(word);
  }
  return sizes;
}

}  // namespace

IdxImages read_idx_images(const std::string& path) {
  GzReader in(path);
  const std::vector<uint32_t> dims = read_header(in, path, 0x00000803u, 3);
  if (dims[0] == 0 || dims[1] == 0 || dims[2] == 0 || dims[1] > 65536 || dims[2] > 65536 ||
      uint64_t(dims[0]) * dims[1] * dims[2] > (uint64_t{1} << 34)) {
    throw Error(path, "implausible IDX image dimensions " + std::to_string(dims[0]) + " x " +
                          std::to_string(dims[1]) + " x " + std::to_string(dims[2]));
  }
  IdxImages images;
  images.count = dims[0];
  images.rows = int(dims[1]);
  images.cols = int(dims[2]);
  in.read(images.pixels, size_t(images.count) * images.rows * images.cols,
          "pixel data (" + std::to_string(images.count) + " images of " +
              std::to_string(images.rows) + " x " + std::to_string(images.cols) + ")");
  in.expect_end(std::to_string(images.count) + " images");
  return images;
}

std::vector<uint8_t> read_idx_labels(const std::string& path) {
  GzReader in(path);
  const std::vector<uint32_t> dims = read_header(in, path, 0x00000801u, 1);
  if (dims[0] == 0 || dims[0] > (uint32_t{1} << 31)) {
    throw Error(path, "implausible IDX label count " + std::to_string(dims[0]));
  }
  std::vector<uint8_t> labels;
  in.read(labels, dims[0], "label data (" + std::to_string(dims[0]) + " labels)");
  in.expect_end(std::to_string(labels.size()) + " labels");
  return labels;
}

void cut_patches(const uint8_t* image, int rows, int cols, int patch, float* out) {
  const int pr = rows / patch, pc = cols / patch;
  for (int i = 0; i < pr; ++i) {
    for (int j = 0; j < pc; ++j) {
      for (int y = 0; y < patch; ++y) {
        const uint8_t* src = image + size_t(i * patch + y) * cols + size_t(j) * patch;
        for (int x = 0; x < patch; ++x) *out++ = float(src[x]) * (1.0f / 255.0f);
      }
    }
  }
}

FashionMnist::FashionMnist(const std::string& dir, int patch, uint64_t seed, DataOrder order,
                           int64_t val_size, Form form)
    : form_(form), patch_(form == Form::kPixels ? 1 : patch), seed_(seed), order_(order) {
  const std::string base = dir.empty() || dir.back() == '/' ? dir : dir + "/";
  // Loads one images/labels pair and checks the pair agrees.
  auto load = [&](const std::string& stem, std::vector<uint8_t>& pixels,
                  std::vector<uint8_t>& labels) {
    const std::string image_path = base + stem + "-images-idx3-ubyte.gz";
    const std::string label_path = base + stem + "-labels-idx1-ubyte.gz";
    IdxImages images = read_idx_images(image_path);
    labels = read_idx_labels(label_path);
    if (int64_t(labels.size()) != images.count) {
      throw Error(label_path, "holds " + std::to_string(labels.size()) + " labels but " +
                                  image_path + " holds " + std::to_string(images.count) +
                                  " images");
    }
    for (size_t i = 0; i < labels.size(); ++i) {
      if (labels[i] >= kClasses) {
        throw Error(label_path, "label " + std::to_string(i) + " is " + std::to_string(labels[i]) +
                                    ", outside the " + std::to_string(kClasses) + " classes");
      }
    }
    if (rows_ == 0) {
      rows_ = images.rows;
      cols_ = images.cols;
    } else if (images.rows != rows_ || images.cols != cols_) {
      throw Error(image_path, "images are " + std::to_string(images.rows) + " x " +
                                  std::to_string(images.cols) + ", the training images " +
                                  std::to_string(rows_) + " x " + std::to_string(cols_));
    }
    pixels = std::move(images.pixels);
    return image_path;
  };
  const std::string train_path = load("train", train_pixels_, train_labels_);
  load("t10k", test_pixels_, test_labels_);
  if (patch_ <= 0 || rows_ % patch_ != 0 || cols_ % patch_ != 0) {
    throw Error(train_path, "patch size " + std::to_string(patch) + " does not divide the " +
                                std::to_string(rows_) + " x " + std::to_string(cols_) + " images");
  }
  const int64_t count = int64_t(train_labels_.size());
  if (val_size < 0 || val_size >= count) {
    throw Error(train_path, "cannot hold out " + std::to_string(val_size) +
                                " validation images from " + std::to_string(count));
  }
  n_val_ = val_size;
  n_train_ = count - val_size;
}

FashionMnist::Split FashionMnist::split(DataSplit s) const {
  switch (s) {
    case DataSplit::kTrain:
      return {&train_pixels_, &train_labels_, 0, n_train_};
    case DataSplit::kVal:
      return {&train_pixels_, &train_labels_, n_train_, n_val_};
    case DataSplit::kTest:
      return {&test_pixels_, &test_labels_, 0, int64_t(test_labels_.size())};
  }
  return {&train_pixels_, &train_labels_, 0, 0};
}

int64_t FashionMnist::train_index(int64_t k) const {
  return int64_t(
      epoch_sample(order_, seed_, "fashion_mnist.epoch", uint64_t(k), uint64_t(n_train_)));
}

void FashionMnist::start_batch(int count, Batch& batch) const {
  if (form_ == Form::kPixels) return batch.start_classifier_tokens(count, positions());
  batch.B = count;
  batch.N = num_patches();
  batch.patches.resize(size_t(count) * num_patches() * patch_dim());
  batch.targets.resize(size_t(count));
  batch.tokens.clear();
  batch.lengths.clear();
}

void FashionMnist::fill(const Split& s, int64_t index, int i, Batch& batch) const {
  const size_t image = size_t(s.begin + index);
  const size_t per_image = size_t(rows_) * cols_;
  const uint8_t* pixels = s.pixels->data() + image * per_image;
  if (form_ == Form::kPixels) {
    std::copy(pixels, pixels + per_image, batch.tokens.begin() + ptrdiff_t(i * per_image));
  } else {
    cut_patches(pixels, rows_, cols_, patch_,
                batch.patches.data() + size_t(i) * num_patches() * patch_dim());
  }
  batch.targets[size_t(i)] = (*s.labels)[image];
}

void FashionMnist::train_batch(int64_t step, int64_t first, int count, int global_batch,
                               Batch& batch) const {
  check_train_slice(step, first, count, global_batch);
  start_batch(count, batch);
  batch.sample_offset = first;
  const Split s = split(DataSplit::kTrain);
  for (int i = 0; i < count; ++i) fill(s, train_index(step * global_batch + first + i), i, batch);
}

int64_t FashionMnist::eval_size(DataSplit s) const {
  return split(s).size;
}

void FashionMnist::eval_batch(DataSplit split_id, int64_t first, int count, Batch& batch) const {
  const Split s = split(split_id);
  check_eval_slice(first, count, s.size);
  start_batch(count, batch);
  batch.sample_offset = first;
  for (int i = 0; i < count; ++i) fill(s, first + i, i, batch);
}

}  // namespace primal
