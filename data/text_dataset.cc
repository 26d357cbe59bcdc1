#include "data/text_dataset.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "data/order.h"

namespace primal {
namespace {

std::vector<uint8_t> read_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(path, "is a directory, not a text file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, std::string("cannot open text file (") + std::strerror(errno) + ")");
  std::vector<uint8_t> bytes;
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) throw Error(path, "cannot determine the size of the text file");
  bytes.resize(size_t(size));
  in.seekg(0, std::ios::beg);
  in.read(reinterpret_cast<char*>(bytes.data()), size);
  if (in.gcount() != size) throw Error(path, "read error: the text file ended early");
  return bytes;
}

}  // namespace

TextDataset::TextDataset(const std::string& path, std::vector<uint8_t> bytes, int seq_len,
                         uint64_t seed, DataOrder order)
    : path_(path), seq_len_(seq_len), seed_(seed), order_(order), bytes_(std::move(bytes)) {
  if (seq_len <= 0) throw Error(path, "seq_len must be positive, got " + std::to_string(seq_len));
}

TextDataset::TextDataset(const std::string& path, int seq_len, uint64_t seed, DataOrder order,
                         double val_fraction, double test_fraction)
    : TextDataset(path, read_file(path), seq_len, seed, order) {
  if (!(val_fraction >= 0 && test_fraction >= 0 && val_fraction + test_fraction < 1)) {
    throw Error(path, "bad split fractions: val " + std::to_string(val_fraction) + ", test " +
                          std::to_string(test_fraction) + " (need >= 0 and a sum below 1)");
  }
  const int64_t n = int64_t(bytes_.size());
  const int64_t n_val = int64_t(std::floor(double(n) * val_fraction));
  const int64_t n_test = int64_t(std::floor(double(n) * test_fraction));
  train_ = {0, n - n_val - n_test};
  val_ = {train_.size, n_val};
  test_ = {train_.size + n_val, n_test};
  const int64_t window = int64_t(seq_len) + 1;
  auto require = [&](const char* name, const Range& r, bool wanted) {
    if (wanted && r.size < window) {
      throw Error(path, std::string("the ") + name + " split has " + std::to_string(r.size) +
                            " bytes (of " + std::to_string(n) +
                            " in the file), too short for one window of seq_len + 1 = " +
                            std::to_string(window) + " bytes");
    }
  };
  require("train", train_, true);
  require("val", val_, val_fraction > 0);
  require("test", test_, test_fraction > 0);
}

TextDataset TextDataset::whole_file(const std::string& path, int seq_len) {
  TextDataset d(path, read_file(path), seq_len, 0, DataOrder::kSequential);
  d.test_ = {0, int64_t(d.bytes_.size())};
  if (d.test_.size < int64_t(seq_len) + 1) {
    throw Error(path, "the file has " + std::to_string(d.test_.size) +
                          " bytes, too short for one window of seq_len + 1 = " +
                          std::to_string(int64_t(seq_len) + 1) + " bytes");
  }
  return d;
}

TextDataset::Range TextDataset::range(DataSplit split) const {
  switch (split) {
    case DataSplit::kTrain:
      return train_;
    case DataSplit::kVal:
      return val_;
    case DataSplit::kTest:
      return test_;
  }
  return {};
}

void TextDataset::start_batch(int count, Batch& batch) const {
  batch.B = count;
  batch.N = seq_len_;
  batch.tokens.resize(size_t(count) * seq_len_);
  batch.targets.resize(size_t(count) * seq_len_);
  batch.patches.clear();
  batch.lengths.clear();
}

void TextDataset::fill_window(int64_t start, int i, Batch& batch) const {
  const uint8_t* w = bytes_.data() + start;
  int32_t* tok = batch.tokens.data() + size_t(i) * seq_len_;
  int32_t* tgt = batch.targets.data() + size_t(i) * seq_len_;
  for (int t = 0; t < seq_len_; ++t) {
    tok[t] = w[t];
    tgt[t] = w[t + 1];
  }
}

void TextDataset::train_batch(int64_t step, int64_t first, int count, int global_batch,
                              Batch& batch) const {
  check_train_slice(step, first, count, global_batch);
  if (train_.size < int64_t(seq_len_) + 1) throw Error(path_, "no training split to sample from");
  const int64_t window = int64_t(seq_len_) + 1;
  start_batch(count, batch);
  batch.sample_offset = first;
  const CounterRng rng(seed_, data_stream("text.window", uint64_t(step)));
  const int64_t n_windows = train_.size / window;
  for (int i = 0; i < count; ++i) {
    const int64_t g = first + i;
    int64_t start;
    if (order_ == DataOrder::kRandom) {
      // Any start in [0, train_len - (N+1)]: train_len - N choices.
      start = int64_t(uniform_below(rng, uint64_t(g), uint64_t(train_.size - seq_len_)));
    } else {
      start = ((step * global_batch + g) % n_windows) * window;
    }
    fill_window(train_.begin + start, i, batch);
  }
}

int64_t TextDataset::eval_size(DataSplit split) const {
  return range(split).size / (int64_t(seq_len_) + 1);
}

void TextDataset::eval_batch(DataSplit split, int64_t first, int count, Batch& batch) const {
  check_eval_slice(first, count, eval_size(split));
  const Range r = range(split);
  start_batch(count, batch);
  batch.sample_offset = first;
  for (int i = 0; i < count; ++i) fill_window(r.begin + (first + i) * (seq_len_ + 1), i, batch);
}

}  // namespace primal
