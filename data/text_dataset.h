// Byte-level text (vocab 256, SPEC §7): the file's bytes are the tokens. A sample is a window
// of N+1 bytes; the inputs are its first N, the targets its last N (next-byte prediction).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace primal {

class TextDataset : public Dataset {
 public:
  static constexpr int kVocab = 256;

  // Reads the whole file and splits it into contiguous byte ranges: train is the first
  // n - floor(n * val_fraction) - floor(n * test_fraction) bytes, then val, then test.
  // Throws primal::Error naming the file if it cannot be read, or if a split (with a non-zero
  // fraction) is too short for one window of seq_len + 1 bytes.
  TextDataset(const std::string& path, int seq_len, uint64_t seed, DataOrder order,
              double val_fraction = 0.05, double test_fraction = 0.05);
  // The whole file as the test split, nothing to train on (`primal eval --data FILE`).
  static TextDataset whole_file(const std::string& path, int seq_len);

  // RANDOM: the window of global sample g at step k starts at a byte drawn uniformly from
  // [0, train_len - (N+1)] by CounterRng(seed, data_stream("text.window", k)) at counter g.
  // SEQUENTIAL: batch k holds whole windows kB .. kB+B-1 (window w starts at byte w*(N+1)),
  // wrapping modulo the number of whole windows in the train split.
  void train_batch(int64_t step, int64_t first, int count, int global_batch,
                   Batch& batch) const override;
  // Consecutive non-overlapping windows from the start of the split; the last partial one is
  // dropped. sample_offset is the first window's index.
  int64_t eval_size(DataSplit split) const override;
  void eval_batch(DataSplit split, int64_t first, int count, Batch& batch) const override;

  int seq_len() const { return seq_len_; }
  // Byte range [begin, begin + size) of a split within the file.
  struct Range {
    int64_t begin = 0;
    int64_t size = 0;
  };
  Range range(DataSplit split) const;
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  TextDataset(const std::string& path, std::vector<uint8_t> bytes, int seq_len, uint64_t seed,
              DataOrder order);
  // Fills sample i of batch with the window starting at byte `start` of the file.
  void fill_window(int64_t start, int i, Batch& batch) const;
  void start_batch(int count, Batch& batch) const;

  std::string path_;
  int seq_len_;
  uint64_t seed_;
  DataOrder order_;
  std::vector<uint8_t> bytes_;
  Range train_, val_, test_;
};

}  // namespace primal
