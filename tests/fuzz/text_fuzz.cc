// The byte-level text reader (data/text_dataset.h). The input's last bytes choose seq_len,
// the seed, the order, the split fractions and whether the file is read whole (`primal eval
// --data`); the rest is the text file. Then every split's first and last window and two
// training batches. A primal::Error is the right answer; anything else is a bug.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <optional>
#include <string>

#include "core/error.h"
#include "data/text_dataset.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace primal;
  FuzzedDataProvider in(data, size);
  // Mostly short windows (a file of a few KB holds them); sometimes any int at all.
  const int seq_len =
      in.ConsumeBool() ? in.ConsumeIntegral<int>() : in.ConsumeIntegralInRange(-2, 64);
  const uint64_t seed = in.ConsumeIntegral<uint64_t>();
  const DataOrder order = in.ConsumeBool() ? DataOrder::kRandom : DataOrder::kSequential;
  const bool whole = in.ConsumeBool();
  const double val =
      in.ConsumeBool() ? in.ConsumeFloatingPoint<double>() : in.ConsumeProbability<double>() / 2;
  const double test =
      in.ConsumeBool() ? in.ConsumeFloatingPoint<double>() : in.ConsumeProbability<double>() / 2;
  const std::string path =
      fuzz::write_file(fuzz::scratch_dir() / "text.txt", in.ConsumeRemainingBytesAsString());
  try {
    std::optional<TextDataset> text;
    if (whole) {
      text.emplace(TextDataset::whole_file(path, seq_len));
    } else {
      text.emplace(path, seq_len, seed, order, val, test);
    }
    Batch batch;
    for (DataSplit split : {DataSplit::kTrain, DataSplit::kVal, DataSplit::kTest}) {
      const int64_t n = text->eval_size(split);
      if (n == 0) continue;
      text->eval_batch(split, 0, 1, batch);
      text->eval_batch(split, n - 1, 1, batch);
    }
    if (!whole) {
      text->train_batch(0, 0, 2, 2, batch);
      text->train_batch(int64_t(seed >> 20), 1, 1, 3, batch);
    }
  } catch (const Error&) {
  }
  return 0;
}
