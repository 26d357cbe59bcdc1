#include "data/listops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <climits>
#include <map>
#include <numeric>
#include <vector>

#include "core/error.h"

namespace primal {
namespace {

// An independent evaluator: recursive descent over the token ids, written from the LRA
// definition (MAX, MIN, MED = int(np.median), SM = sum mod 10), not from the generator.
// It also checks the shape: 2..10 arguments per operator, depth <= 10, nothing left over.
class Evaluator {
 public:
  explicit Evaluator(const std::vector<int32_t>& t) : t_(t) {}
  // The value of the whole sequence, or -1 if it is not one well-formed expression.
  int run() {
    const int v = expr(1);
    return pos_ == t_.size() ? v : -1;
  }
  std::array<int, 4> op_counts{};

 private:
  int expr(int depth) {
    if (pos_ >= t_.size() || depth > 10) return -1;
    const int32_t tok = t_[pos_++];
    if (tok >= 1 && tok <= 10) return tok - 1;  // a digit
    if (tok < 11 || tok > 14) return -1;
    ++op_counts[size_t(tok - 11)];
    std::vector<int> args;
    while (pos_ < t_.size() && t_[pos_] != 15) {
      const int v = expr(depth + 1);
      if (v < 0) return -1;
      args.push_back(v);
    }
    if (pos_ >= t_.size() || args.size() < 2 || args.size() > 10) return -1;
    ++pos_;  // ']'
    std::sort(args.begin(), args.end());
    const size_t n = args.size();
    switch (tok) {
      case 11:
        return args.back();  // [MAX
      case 12:
        return args.front();  // [MIN
      case 13:
        return n % 2 ? args[n / 2] : (args[n / 2 - 1] + args[n / 2]) / 2;  // [MED
      default:
        return std::accumulate(args.begin(), args.end(), 0) % 10;  // [SM
    }
  }
  const std::vector<int32_t>& t_;
  size_t pos_ = 0;
};

TEST(ListOps, VocabularyNamesTheLraTokens) {
  EXPECT_EQ(kListOpsVocab, 16);
  EXPECT_EQ(listops_token_name(kListOpsPad), "<pad>");
  EXPECT_EQ(listops_token_name(kListOpsDigit0 + 7), "7");
  EXPECT_EQ(listops_token_name(kListOpsMax), "[MAX");
  EXPECT_EQ(listops_token_name(kListOpsMin), "[MIN");
  EXPECT_EQ(listops_token_name(kListOpsMed), "[MED");
  EXPECT_EQ(listops_token_name(kListOpsSumMod), "[SM");
  EXPECT_EQ(listops_token_name(kListOpsClose), "]");
  EXPECT_EQ(listops_token_name(16), "<bad>");
  const std::vector<int32_t> t = {kListOpsSumMod, 3, kListOpsMed,  1, 10, 5,
                                  kListOpsClose,  8, kListOpsClose};
  EXPECT_EQ(listops_detokenize(t.data(), int(t.size())), "[SM 2 [MED 0 9 4 ] 7 ]");
  EXPECT_EQ(Evaluator(t).run(), (2 + 4 + 7) % 10);  // MED(0, 9, 4) = 4
}

// Padded batches: lengths strictly inside (min_len, max_len), tokens in the vocabulary,
// padding after the length, and every label equal to the independent evaluator's value.
TEST(ListOps, LabelsMatchAnIndependentEvaluator) {
  const int min_len = 20, max_len = 120;
  ListOps d(max_len, 7, DataOrder::kRandom, 1000, 400, 400, min_len);
  Batch b;
  d.eval_batch(DataSplit::kVal, 0, 400, b);
  ASSERT_EQ(b.B, 400);
  ASSERT_EQ(b.N, max_len);
  ASSERT_EQ(b.lengths.size(), 400u);
  ASSERT_EQ(b.targets.size(), 400u);
  EXPECT_TRUE(b.patches.empty());
  std::array<int, 4> ops{};
  for (int i = 0; i < 400; ++i) {
    const int len = b.lengths[size_t(i)];
    ASSERT_GT(len, min_len);
    ASSERT_LT(len, max_len);
    const auto row = b.tokens.begin() + ptrdiff_t(i) * max_len;
    std::vector<int32_t> tokens(row, row + len);
    for (int32_t t : tokens) ASSERT_TRUE(t > kListOpsPad && t < kListOpsVocab) << t;
    for (int k = len; k < max_len; ++k) ASSERT_EQ(row[k], kListOpsPad);
    Evaluator e(tokens);
    ASSERT_EQ(e.run(), b.targets[size_t(i)]) << listops_detokenize(tokens.data(), len);
    for (int k = 0; k < 4; ++k) ops[size_t(k)] += e.op_counts[size_t(k)];
  }
  // The four operators are equally likely.
  const int total = std::accumulate(ops.begin(), ops.end(), 0);
  for (int k = 0; k < 4; ++k) EXPECT_NEAR(ops[size_t(k)] / double(total), 0.25, 0.03);
}

TEST(ListOps, SamplesArePureFunctionsOfSeedSplitAndIndex) {
  ListOps d(100, 11, DataOrder::kRandom, 500, 50, 50, 10);
  ListOps again(100, 11, DataOrder::kRandom, 500, 50, 50, 10);
  ListOps other(100, 12, DataOrder::kRandom, 500, 50, 50, 10);
  std::vector<int32_t> a, b, c;
  int differ_seed = 0, differ_split = 0;
  for (int64_t i = 0; i < 50; ++i) {
    const int la = d.sample(DataSplit::kTest, i, a);
    const int lb = again.sample(DataSplit::kTest, i, b);
    EXPECT_EQ(a, b);
    EXPECT_EQ(la, lb);
    other.sample(DataSplit::kTest, i, c);
    differ_seed += a != c;
    d.sample(DataSplit::kVal, i, c);
    differ_split += a != c;
  }
  EXPECT_EQ(differ_seed, 50);
  EXPECT_EQ(differ_split, 50);

  // A training batch is the same however it is sliced, and matches sample().
  Batch whole, lo, hi;
  d.train_batch(4, 0, 8, 8, whole);
  d.train_batch(4, 0, 3, 8, lo);
  d.train_batch(4, 3, 5, 8, hi);
  std::vector<int32_t> concat = lo.tokens;
  concat.insert(concat.end(), hi.tokens.begin(), hi.tokens.end());
  EXPECT_EQ(whole.tokens, concat);
  EXPECT_EQ(hi.sample_offset, 3);
  EXPECT_EQ(hi.lengths[0], whole.lengths[3]);
  const int label = d.sample(DataSplit::kTrain, d.train_index(4 * 8 + 5), a);
  EXPECT_EQ(whole.targets[5], label);
  EXPECT_EQ(whole.lengths[5], int(a.size()));
  EXPECT_TRUE(std::equal(a.begin(), a.end(), whole.tokens.begin() + 5 * 100));
}

// No expression is in two splits (compared whole, over every sample of small splits at
// lengths 10..100, where a repeat would be far likelier than at LRA's 500..2000), and the
// same seed gives the same splits.
TEST(ListOps, SplitsAreDisjointAndTheSameForTheSameSeed) {
  const ListOps d(100, 5, DataOrder::kRandom, 3000, 1000, 1000, 10);
  const ListOps again(100, 5, DataOrder::kRandom, 3000, 1000, 1000, 10);
  std::map<std::vector<int32_t>, DataSplit> owner;
  std::vector<int32_t> tokens, repeat;
  int within_split_repeats = 0;
  for (DataSplit split : {DataSplit::kTrain, DataSplit::kVal, DataSplit::kTest}) {
    for (int64_t i = 0; i < d.eval_size(split); ++i) {
      d.sample(split, i, tokens);
      again.sample(split, i, repeat);
      ASSERT_EQ(tokens, repeat);
      const auto [at, inserted] = owner.emplace(tokens, split);
      if (!inserted) {
        ASSERT_EQ(at->second, split) << "sample " << i << " of one split is also in another: "
                                     << listops_detokenize(tokens.data(), int(tokens.size()));
        ++within_split_repeats;
      }
    }
  }
  EXPECT_LT(within_split_repeats, 5);
}

// LRA's own setting: 500 < length < 2000, depth 10, 10 arguments.
TEST(ListOps, LraSettingGivesLongValidExpressions) {
  ListOps d(2000, 1, DataOrder::kRandom);
  EXPECT_EQ(d.eval_size(DataSplit::kTrain), 96000);
  EXPECT_EQ(d.eval_size(DataSplit::kVal), 2000);
  EXPECT_EQ(d.eval_size(DataSplit::kTest), 2000);
  Batch b;
  d.eval_batch(DataSplit::kTest, 100, 8, b);
  ASSERT_EQ(b.N, 2000);
  for (int i = 0; i < 8; ++i) {
    const int len = b.lengths[size_t(i)];
    EXPECT_GT(len, 500);
    EXPECT_LT(len, 2000);
    std::vector<int32_t> tokens(b.tokens.begin() + i * 2000, b.tokens.begin() + i * 2000 + len);
    EXPECT_EQ(Evaluator(tokens).run(), b.targets[size_t(i)]);
  }
}

TEST(ListOps, EveryClassAppearsIn2000Samples) {
  ListOps d(200, 3, DataOrder::kSequential, 2000, 10, 10, 40);
  std::array<int, 10> counts{};
  Batch b;
  for (int64_t first = 0; first < 2000; first += 250) {
    d.eval_batch(DataSplit::kTrain, first, 250, b);
    for (int32_t label : b.targets) {
      ASSERT_GE(label, 0);
      ASSERT_LT(label, 10);
      ++counts[size_t(label)];
    }
  }
  for (int k = 0; k < 10; ++k) EXPECT_GT(counts[size_t(k)], 20) << "class " << k;
  EXPECT_LT(*std::max_element(counts.begin(), counts.end()), 1000);
}

TEST(ListOps, ImpossibleLengthRangesAreErrors) {
  EXPECT_THROW(ListOps(100, 1, DataOrder::kRandom, 10, 10, 10, 100), Error);
  EXPECT_THROW(ListOps(100, 1, DataOrder::kRandom, 10, 10, 10, 200), Error);
  EXPECT_THROW(ListOps(4, 1, DataOrder::kRandom, 10, 10, 10, 1), Error);  // only 2, 3
  EXPECT_THROW(ListOps(100, 1, DataOrder::kRandom, 0, 10, 10, 10), Error);
  // Found by tests/fuzz/listops_fuzz: min_len + 1 overflowed, and the largest min_len passed
  // (then no sample could ever be drawn).
  EXPECT_THROW(ListOps(100, 1, DataOrder::kRandom, 10, 10, 10, INT_MAX), Error);
  EXPECT_NO_THROW(ListOps(5, 1, DataOrder::kRandom, 10, 10, 10, 3));  // only 4
  ListOps four(5, 1, DataOrder::kRandom, 10, 10, 10, 3);
  std::vector<int32_t> t;
  four.sample(DataSplit::kVal, 0, t);
  EXPECT_EQ(t.size(), 4u);
}

}  // namespace
}  // namespace primal
