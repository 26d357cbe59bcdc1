#include "data/listops.h"

#include <algorithm>

#include "core/error.h"
#include "core/random.h"
#include "data/order.h"

namespace primal {
namespace {

// Draws 32-bit words in order from a counter-based stream: word j is word j % 4 of the
// Philox block at counter j / 4. A tree is a pure function of the stream.
class WordStream {
 public:
  WordStream(uint64_t seed, uint64_t stream) : rng_(seed, stream) {}
  uint32_t next() {
    if (used_ == 4) {
      block_ = rng_.block(counter_++);
      used_ = 0;
    }
    return block_[used_++];
  }
  // Uniform in [0, n) as floor(word * n / 2^32): bias below n / 2^32, immaterial here.
  uint32_t below(uint32_t n) { return uint32_t((uint64_t(next()) * n) >> 32); }

 private:
  CounterRng rng_;
  uint64_t counter_ = 0;
  PhiloxBlock block_{};
  int used_ = 4;
};

// One attempt at a tree (LRA's generate_tree), written straight into out. Stops early once
// the tree cannot end below `limit` tokens: it would be rejected anyway, and the rejected
// tree's remaining draws would only shift the stream, which is ours to define.
class TreeWriter {
 public:
  TreeWriter(WordStream& words, int32_t* out, int limit)
      : words_(words), out_(out), limit_(limit) {}

  // The value of a subtree at `depth`, or -1 when the tree got too long.
  int tree(int depth) {
    // LRA: r = random() (depth < max_depth), operator iff r <= 1/4; 2^30 / 2^32 = 1/4.
    if (depth < kListOpsMaxDepth && words_.next() < (1u << 30)) {
      const int args = 2 + int(words_.below(kListOpsMaxArgs - 1));
      const int op = int(words_.below(4));
      if (!emit(kListOpsMax + op)) return -1;
      int values[kListOpsMaxArgs];
      for (int a = 0; a < args; ++a) {
        values[a] = tree(depth + 1);
        if (values[a] < 0) return -1;
      }
      if (!emit(kListOpsClose)) return -1;
      return apply(kListOpsMax + op, values, args);
    }
    const int digit = int(words_.below(10));
    if (!emit(kListOpsDigit0 + digit)) return -1;
    return digit;
  }
  int length() const { return length_; }

 private:
  bool emit(int32_t token) {
    if (length_ + 1 >= limit_) return false;
    out_[length_++] = token;
    return true;
  }
  // LRA's to_value: MED is int(np.median), which for an even count truncates the mean of
  // the two middle values.
  static int apply(int op, int* v, int n) {
    switch (op) {
      case kListOpsMax:
        return *std::max_element(v, v + n);
      case kListOpsMin:
        return *std::min_element(v, v + n);
      case kListOpsMed:
        std::sort(v, v + n);
        return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
      default: {
        int sum = 0;
        for (int i = 0; i < n; ++i) sum += v[i];
        return sum % 10;
      }
    }
  }

  WordStream& words_;
  int32_t* out_;
  int limit_;
  int length_ = 0;
};

const char* split_domain(DataSplit split) {
  switch (split) {
    case DataSplit::kTrain:
      return "listops.train";
    case DataSplit::kVal:
      return "listops.val";
    case DataSplit::kTest:
      return "listops.test";
  }
  return "";
}

// Attempts per sample before giving up: at LRA's setting about one in ten trees is kept.
constexpr int64_t kMaxAttempts = 10'000'000;

}  // namespace

std::string_view listops_token_name(int32_t token) {
  static constexpr std::string_view kNames[kListOpsVocab] = {
      "<pad>", "0", "1", "2",    "3",    "4",    "5",   "6",
      "7",     "8", "9", "[MAX", "[MIN", "[MED", "[SM", "]"};
  return token >= 0 && token < kListOpsVocab ? kNames[token] : "<bad>";
}

std::string listops_detokenize(const int32_t* tokens, int length) {
  std::string s;
  for (int i = 0; i < length; ++i) {
    if (i) s += ' ';
    s += listops_token_name(tokens[i]);
  }
  return s;
}

ListOps::ListOps(int max_len, uint64_t seed, DataOrder order, int64_t train_size, int64_t val_size,
                 int64_t test_size, int min_len)
    : max_len_(max_len),
      min_len_(min_len),
      seed_(seed),
      order_(order),
      sizes_{train_size, val_size, test_size} {
  // Tree lengths are 1, 4, 5, 6, ...: some must lie strictly inside (min_len, max_len).
  const bool single_digit_fits = min_len < 1 && max_len > 1;
  const bool tree_fits = std::max(int64_t(min_len) + 1, int64_t(4)) < max_len;  // any min_len
  if (!single_digit_fits && !tree_fits) {
    throw Error("listops", "no expression length lies strictly between min_len " +
                               std::to_string(min_len) + " and max_len " + std::to_string(max_len));
  }
  if (train_size <= 0 || val_size <= 0 || test_size <= 0) {
    throw Error("listops", "split sizes must be positive (train " + std::to_string(train_size) +
                               ", val " + std::to_string(val_size) + ", test " +
                               std::to_string(test_size) + ")");
  }
}

int ListOps::generate(DataSplit split, int64_t index, int32_t* out, int& length) const {
  WordStream words(seed_, data_stream(split_domain(split), uint64_t(index)));
  for (int64_t attempt = 0; attempt < kMaxAttempts; ++attempt) {
    TreeWriter writer(words, out, max_len_);
    const int value = writer.tree(1);
    if (value >= 0 && writer.length() > min_len_) {
      length = writer.length();
      return value;
    }
  }
  throw Error("listops", "no expression with min_len " + std::to_string(min_len_) +
                             " < length < max_len " + std::to_string(max_len_) + " in " +
                             std::to_string(kMaxAttempts) + " attempts");
}

int ListOps::sample(DataSplit split, int64_t index, std::vector<int32_t>& tokens) const {
  check_eval_slice(index, 1, eval_size(split));
  tokens.resize(size_t(max_len_));
  int length = 0;
  const int label = generate(split, index, tokens.data(), length);
  tokens.resize(size_t(length));
  return label;
}

int64_t ListOps::train_index(int64_t k) const {
  return int64_t(epoch_sample(order_, seed_, "listops.epoch", uint64_t(k), uint64_t(sizes_[0])));
}

int64_t ListOps::eval_size(DataSplit split) const {
  return sizes_[int(split)];
}

void ListOps::fill(DataSplit split, int64_t index, int i, Batch& batch) const {
  int32_t* row = batch.tokens.data() + size_t(i) * max_len_;
  int length = 0;
  batch.targets[size_t(i)] = generate(split, index, row, length);
  std::fill(row + length, row + max_len_, int32_t{kListOpsPad});
  batch.lengths[size_t(i)] = length;
}

void ListOps::train_batch(int64_t step, int64_t first, int count, int global_batch,
                          Batch& batch) const {
  check_train_slice(step, first, count, global_batch);
  batch.start_classifier_tokens(count, max_len_);
  batch.sample_offset = first;
  for (int i = 0; i < count; ++i) {
    fill(DataSplit::kTrain, train_index(step * global_batch + first + i), i, batch);
  }
}

void ListOps::eval_batch(DataSplit split, int64_t first, int count, Batch& batch) const {
  check_eval_slice(first, count, eval_size(split));
  batch.start_classifier_tokens(count, max_len_);
  batch.sample_offset = first;
  for (int i = 0; i < count; ++i) fill(split, first + i, i, batch);
}

}  // namespace primal
