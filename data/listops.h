// ListOps (Long Range Arena, Tay et al. 2021; Nangia & Bowman 2018): nested prefix
// expressions over the digits 0-9 with the operators MAX, MIN, MED (median) and SM (sum mod
// 10); the label is the expression's value, 10 classes. Generated to LRA's `listops.py`:
//   node at depth d < 10: an operator with probability 1/4, else a uniform digit
//   (depth 10 is always a digit); an operator has 2..10 arguments (uniform) and a uniform
//   operator; the root is at depth 1; token length = digits + 2 per operator ("[OP" and "]");
//   trees are drawn until min_len < length < max_len (LRA: 500, 2000; strict, as there).
// Sample i of a split is a pure function of (seed, split, i), generated on demand: nothing
// is stored, and every rank can produce any sample. (LRA also drops duplicate trees; at
// these lengths a duplicate is practically impossible, and removing one would make a sample
// depend on all the others.)
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/dataset.h"

namespace primal {

// One token each: padding, the ten digits, the four operators, the closing bracket.
enum ListOpsToken : int32_t {
  kListOpsPad = 0,
  kListOpsDigit0 = 1,  // digit d is token 1 + d
  kListOpsMax = 11,
  kListOpsMin = 12,
  kListOpsMed = 13,
  kListOpsSumMod = 14,
  kListOpsClose = 15,
};
constexpr int kListOpsVocab = 16;
constexpr int kListOpsClasses = 10;
constexpr int kListOpsMaxDepth = 10;
constexpr int kListOpsMaxArgs = 10;

// "<pad>", "0".."9", "[MAX", "[MIN", "[MED", "[SM", "]"; "<bad>" outside the vocabulary.
std::string_view listops_token_name(int32_t token);
// The tokens as LRA writes them (without its parentheses), separated by spaces.
std::string listops_detokenize(const int32_t* tokens, int length);

class ListOps : public Dataset {
 public:
  // Throws primal::Error when no length fits strictly between min_len and max_len (a tree
  // has 1 or at least 4 tokens) or a split size is not positive.
  ListOps(int max_len, uint64_t seed, DataOrder order, int64_t train_size = 96000,
          int64_t val_size = 2000, int64_t test_size = 2000, int min_len = 500);

  // Sample `index` of `split`: its tokens (unpadded) and its label.
  int sample(DataSplit split, int64_t index, std::vector<int32_t>& tokens) const;

  // Tokens [B, max_len] padded with kListOpsPad, lengths [B], targets [B] = the value.
  // Training sample k = step * global_batch + g is train sample k mod train_size (SEQUENTIAL)
  // or that position of epoch k / train_size's keyed permutation (RANDOM).
  void train_batch(int64_t step, int64_t first, int count, int global_batch,
                   Batch& batch) const override;
  int64_t eval_size(DataSplit split) const override;
  void eval_batch(DataSplit split, int64_t first, int count, Batch& batch) const override;

  int max_len() const { return max_len_; }
  int min_len() const { return min_len_; }
  int64_t train_index(int64_t k) const;

 private:
  // Writes sample `index` of `split` to out[0, length) (out has max_len_ slots); returns
  // the label.
  int generate(DataSplit split, int64_t index, int32_t* out, int& length) const;
  void fill(DataSplit split, int64_t index, int i, Batch& batch) const;

  int max_len_, min_len_;
  uint64_t seed_;
  DataOrder order_;
  int64_t sizes_[3];
};

}  // namespace primal
