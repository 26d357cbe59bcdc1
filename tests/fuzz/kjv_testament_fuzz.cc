// The testament-classification reader (data/kjv_testament.h): the KJV export's headings, verse
// numbers and the Old/New split, then the windows of every split. The input's first bytes
// choose the window and how many times the rest is repeated (a valid corpus needs three 16 KiB
// blocks of each testament, more than one input holds); the rest is the file. A primal::Error
// is the right answer; anything else is a bug.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <string>

#include "core/error.h"
#include "data/kjv_testament.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace primal;
  FuzzedDataProvider in(data, size);
  const int window = in.ConsumeBool()
                         ? in.ConsumeIntegral<int>()
                         : in.ConsumeIntegralInRange(-2, int(KjvTestament::kBlockBytes));
  const uint64_t seed = in.ConsumeIntegral<uint64_t>();
  const int64_t eval_size = in.ConsumeIntegralInRange<int64_t>(-1, 64);
  const int repeats = in.ConsumeIntegralInRange(1, 16);
  const std::string piece = in.ConsumeRemainingBytesAsString();
  std::string text;
  for (int r = 0; r < repeats; ++r) text += piece;
  const std::string path = fuzz::write_file(fuzz::scratch_dir() / "kjv.txt", text);
  try {
    const KjvTestament kjv(path, window, seed, eval_size);
    Batch batch;
    for (DataSplit split : {DataSplit::kVal, DataSplit::kTest}) {
      const int64_t n = kjv.eval_size(split);
      kjv.eval_batch(split, 0, 1, batch);
      kjv.eval_batch(split, n - 1, 1, batch);
    }
    kjv.train_batch(int64_t(seed >> 24), 1, 2, 3, batch);
    for (int32_t t : batch.tokens) {
      if (t < 0 || t >= KjvTestament::kVocab) __builtin_trap();  // outside the contract
    }
  } catch (const Error&) {
  }
  return 0;
}
