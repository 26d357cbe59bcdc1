#include "data/kjv_testament.h"

#include <cctype>
#include <fstream>
#include <string_view>

#include "core/error.h"
#include "core/random.h"
#include "data/order.h"

namespace primal {
namespace {

constexpr const char* kNewTestamentHeading = "Matthew 1";

// "  3 And God said" -> "And God said"; a line without a verse number is returned whole.
std::string_view without_verse_number(std::string_view line) {
  size_t i = 0;
  while (i < line.size() && line[i] == ' ') ++i;
  const size_t digits = i;
  while (i < line.size() && std::isdigit(static_cast<unsigned char>(line[i]))) ++i;
  if (i == digits || i == line.size() || line[i] != ' ') return line;
  return line.substr(i + 1);
}

}  // namespace

KjvTestament::KjvTestament(const std::string& path, int window_bytes, uint64_t seed,
                           int64_t eval_size)
    : window_(window_bytes), seed_(seed), eval_size_(eval_size) {
  if (window_bytes < 1 || window_bytes > kBlockBytes) {
    throw Error(path, "a window of " + std::to_string(window_bytes) + " bytes does not fit the " +
                          std::to_string(kBlockBytes) + "-byte blocks of the splits");
  }
  if (eval_size <= 0) throw Error(path, "the evaluation splits need a positive size");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, "cannot be read");
  // A heading is a line that follows a blank line (or opens the file); a verse's continuation
  // lines never do.
  int label = 0;
  bool after_blank = true, found_new_testament = false;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) {
      after_blank = true;
      continue;
    }
    if (after_blank && line[0] != ' ') {
      if (line == kNewTestamentHeading) {
        label = 1;
        found_new_testament = true;
      }
      after_blank = false;
      continue;
    }
    after_blank = false;
    const std::string_view verse = without_verse_number(line);
    std::string& out = text_[size_t(label)];
    // A verse starts a line; its continuation lines join it with a space.
    if (!out.empty()) out += verse.data() == line.data() ? ' ' : '\n';
    out += verse;
  }
  if (!found_new_testament) {
    throw Error(path, std::string("has no heading '") + kNewTestamentHeading +
                          "': not the KJV export of data/prepare_kjv.sh");
  }
  const char* split_names[] = {"train", "val", "test"};
  for (int l = 0; l < kClasses; ++l) {
    const int64_t count = int64_t(text_[size_t(l)].size()) / kBlockBytes;
    for (int64_t b = 0; b < count; ++b) {
      const DataSplit s = b % 10 == 0   ? DataSplit::kTest
                          : b % 10 == 1 ? DataSplit::kVal
                                        : DataSplit::kTrain;
      blocks_[size_t(s)][size_t(l)].push_back(b);
    }
    for (int s = 0; s < 3; ++s) {
      if (blocks_[size_t(s)][size_t(l)].empty()) {
        throw Error(path, std::string("too short: the ") + (l ? "New" : "Old") +
                              " Testament has no " + split_names[s] + " block of " +
                              std::to_string(kBlockBytes) + " bytes");
      }
    }
  }
}

const std::vector<int64_t>& KjvTestament::blocks(DataSplit split, int label) const {
  return blocks_[size_t(split)][size_t(label)];
}

KjvTestament::Window KjvTestament::window_in(DataSplit split, int label, uint64_t pick,
                                             const CounterRng& rng, uint64_t counter) const {
  const std::vector<int64_t>& b = blocks(split, label);
  const uint64_t starts = uint64_t(kBlockBytes - window_ + 1);
  return {label, b[pick % b.size()] * kBlockBytes + int64_t(uniform_below(rng, counter, starts))};
}

KjvTestament::Window KjvTestament::train_window(int64_t k) const {
  const int label = int(k % 2);
  const CounterRng rng(seed_, data_stream("kjv_testament.window", uint64_t(k)));
  return window_in(DataSplit::kTrain, label,
                   uniform_below(rng, 0, blocks(DataSplit::kTrain, label).size()), rng, 1);
}

KjvTestament::Window KjvTestament::eval_window(DataSplit split, int64_t index) const {
  const char* domain = split == DataSplit::kVal ? "kjv_testament.val" : "kjv_testament.test";
  return window_in(split, int(index % 2), uint64_t(index / 2),
                   CounterRng(0, data_stream(domain, uint64_t(index))), 0);
}

void KjvTestament::fill(const Window& w, int i, Batch& batch) const {
  const unsigned char* bytes =
      reinterpret_cast<const unsigned char*>(text_[size_t(w.label)].data()) + w.begin;
  int32_t* out = batch.tokens.data() + size_t(i) * window_;
  for (int t = 0; t < window_; ++t) out[t] = bytes[t];
  batch.targets[size_t(i)] = w.label;
}

void KjvTestament::train_batch(int64_t step, int64_t first, int count, int global_batch,
                               Batch& batch) const {
  check_train_slice(step, first, count, global_batch);
  batch.start_classifier_tokens(count, window_);
  batch.sample_offset = first;
  for (int i = 0; i < count; ++i) fill(train_window(step * global_batch + first + i), i, batch);
}

int64_t KjvTestament::eval_size(DataSplit split) const {
  return split == DataSplit::kTrain ? 0 : eval_size_;
}

void KjvTestament::eval_batch(DataSplit split, int64_t first, int count, Batch& batch) const {
  check_eval_slice(first, count, eval_size(split));
  batch.start_classifier_tokens(count, window_);
  batch.sample_offset = first;
  for (int i = 0; i < count; ++i) fill(eval_window(split, first + i), i, batch);
}

}  // namespace primal
