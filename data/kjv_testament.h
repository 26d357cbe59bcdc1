// Byte-level text classification in the shape of LRA-Text (long byte windows, two balanced
// classes): which testament of the King James Bible a window of N bytes comes from. The corpus
// is Debian's bible-kjv-text, exported by data/prepare_kjv.sh (data/kjv.txt).
//
// The export's chapter headings ("Genesis 1", each after a blank line) and verse numbers
// ("  3 And God said") would give the answer away by name, so they are removed: what is left
// is the running text of the verses, one verse per line, each testament on its own (everything
// before the heading "Matthew 1" is the Old Testament).
//
// Splits by place, never by window: each testament's text is cut into blocks of kBlockBytes
// (the last partial block dropped); block b is test when b % 10 == 0, val when b % 10 == 1,
// train otherwise. Every window lies inside one block, so no byte of a test window is in a
// train or val window, and the splits do not depend on the seed.
//
// Labels: 0 Old Testament, 1 New Testament. Sample i of any split (and global training sample
// k) has label i % 2 (k % 2): exactly balanced (the Old Testament is 3.3x larger; without
// this, always answering "Old" would score 77%).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/random.h"
#include "data/dataset.h"

namespace primal {

class KjvTestament : public Dataset {
 public:
  static constexpr int kClasses = 2;
  static constexpr int kVocab = 256;
  static constexpr int64_t kBlockBytes = 16384;

  // Reads the export and checks it: the heading "Matthew 1" must be there, and every split of
  // both testaments must hold a block. Throws primal::Error naming the file, or for a window
  // (window_bytes) outside [1, kBlockBytes] or a non-positive eval_size.
  KjvTestament(const std::string& path, int window_bytes, uint64_t seed, int64_t eval_size = 2000);

  // Training sample k = step * global_batch + g: label k % 2; its block uniform among that
  // testament's train blocks (counter 0) and its start uniform in the block (counter 1) of
  // CounterRng(seed, data_stream("kjv_testament.window", k)).
  void train_batch(int64_t step, int64_t first, int count, int global_batch,
                   Batch& batch) const override;
  // eval_size windows per split, fixed by (split, index) alone (seed-independent, like the
  // blocks): sample i is block (i / 2) mod blocks of testament i % 2, at a start drawn by
  // CounterRng(0, data_stream("kjv_testament.<split>", i)).
  int64_t eval_size(DataSplit split) const override;
  void eval_batch(DataSplit split, int64_t first, int count, Batch& batch) const override;

  // Where a sample's window lies: its testament and its byte range in that testament's text.
  struct Window {
    int label = 0;
    int64_t begin = 0;
  };
  Window train_window(int64_t k) const;
  Window eval_window(DataSplit split, int64_t index) const;
  // The blocks of a split in one testament (block b covers [b, b + 1) * kBlockBytes).
  const std::vector<int64_t>& blocks(DataSplit split, int label) const;
  // One testament's text, headings and verse numbers removed.
  const std::string& text(int label) const { return text_[size_t(label)]; }
  int window_bytes() const { return window_; }

 private:
  // The window in block `pick` (mod their count) of a split's blocks of one testament, starting
  // at a byte drawn from rng at counter.
  Window window_in(DataSplit split, int label, uint64_t pick, const CounterRng& rng,
                   uint64_t counter) const;
  void fill(const Window& w, int i, Batch& batch) const;

  int window_;
  uint64_t seed_;
  int64_t eval_size_;
  std::array<std::string, kClasses> text_;
  // blocks_[split][label]
  std::array<std::array<std::vector<int64_t>, kClasses>, 3> blocks_;
};

}  // namespace primal
