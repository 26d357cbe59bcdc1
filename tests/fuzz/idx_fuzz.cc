// The Fashion-MNIST reader (data/fashion_mnist.h): gzip'd IDX files. The first byte says what
// the rest is:
//   bit 0   0: an images file (idx3), 1: a labels file (idx1)
//   bit 1   0: the .gz file as is (the gzip layer: headers, deflate, CRC, length),
//           1: the IDX bytes, which the target gzips (the IDX layer: magic, dims, lengths)
//   bit 2   1: instead, a whole dataset directory: four IDX files separated by kFileSeparator
//           (train images, train labels, t10k images, t10k labels), gzipped by the target,
//           read by FashionMnist with a patch size of byte 2 and 1 validation image, then
//           every split's first and last sample
// A primal::Error is the right answer to bad bytes; anything else is a bug.
#include <zlib.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/fashion_mnist.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

// The IDX bytes as a .gz file.
void write_gzip(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb1");
  if (!f) __builtin_trap();
  if (!bytes.empty() && gzwrite(f, bytes.data(), unsigned(bytes.size())) <= 0) __builtin_trap();
  gzclose(f);
}

void read_dataset(const std::vector<std::string>& files, int patch) {
  using namespace primal;
  const std::string dir = fuzz::fresh_scratch_dir("fashion_mnist").string();
  const char* names[] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};
  for (size_t i = 0; i < 4 && i < files.size(); ++i) write_gzip(dir + "/" + names[i], files[i]);
  const FashionMnist data(dir, patch, 1, DataOrder::kRandom, 1);
  Batch batch;
  for (DataSplit split : {DataSplit::kTrain, DataSplit::kVal, DataSplit::kTest}) {
    const int64_t n = data.eval_size(split);
    data.eval_batch(split, 0, 1, batch);
    data.eval_batch(split, n - 1, 1, batch);
  }
  data.train_batch(3, 0, 2, 2, batch);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace primal;
  if (size < 2) return 0;
  const uint8_t mode = data[0];
  const std::string rest(fuzz::as_text(data + 2, size - 2));
  const std::string path = (fuzz::scratch_dir() / "data.gz").string();
  try {
    if (mode & 4) {
      read_dataset(fuzz::split_pieces(rest, fuzz::kFileSeparator), data[1]);
      return 0;
    }
    if (mode & 2) {
      write_gzip(path, rest);
    } else {
      fuzz::write_file(path, rest);
    }
    if (mode & 1) {
      read_idx_labels(path);
    } else {
      read_idx_images(path);
    }
  } catch (const Error&) {
  }
  return 0;
}
