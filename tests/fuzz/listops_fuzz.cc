// The ListOps generator (data/listops.h) under the parameters a config gives it (data.seq_len,
// the split sizes, listops_min_len, the seed, the order), chosen by the input; then a sample of
// one split and a training batch. ListOps reads no file: its input from outside is these numbers.
// seq_len is kept at most 512 here: a sample and a batch hold seq_len tokens by design (a config
// asking for 2^31 asks for that memory), and this target looks for crashes, UB and stalls in the
// generator, not for that. A primal::Error is the right answer; anything else is a bug.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <vector>

#include "core/error.h"
#include "data/listops.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace primal;
  FuzzedDataProvider in(data, size);
  const int max_len = in.ConsumeIntegralInRange(-4, 512);
  const int min_len =
      in.ConsumeBool() ? in.ConsumeIntegral<int>() : in.ConsumeIntegralInRange(-4, 512);
  const uint64_t seed = in.ConsumeIntegral<uint64_t>();
  const DataOrder order = in.ConsumeBool() ? DataOrder::kRandom : DataOrder::kSequential;
  int64_t sizes[3];
  for (int64_t& s : sizes)
    s = in.ConsumeBool() ? in.ConsumeIntegral<int64_t>()
                         : in.ConsumeIntegralInRange<int64_t>(-1, 100);
  const int64_t index = in.ConsumeIntegral<int64_t>();
  const DataSplit split = DataSplit(in.ConsumeIntegralInRange(0, 2));
  try {
    const ListOps listops(max_len, seed, order, sizes[0], sizes[1], sizes[2], min_len);
    std::vector<int32_t> tokens;
    const int64_t n = listops.eval_size(split);
    const int label = listops.sample(split, index >= 0 ? index % n : n - 1, tokens);
    if (label < 0 || label >= kListOpsClasses || int(tokens.size()) <= min_len ||
        int(tokens.size()) >= max_len) {
      __builtin_trap();  // outside the contract of sample()
    }
    Batch batch;
    listops.train_batch(index & 0xffff, 1, 1, 2, batch);
  } catch (const Error&) {
  }
  return 0;
}
