// The checkpoint reader (trainer/checkpoint.h): manifest.pb and the shard files, loaded into
// the seeds' model as TP 1 and as either rank of TP 2 (assembling each slice from whatever
// layout the manifest describes), with the AdamW moments; then the whole-file check, the
// manifest's config, and the export that sizes its tensors from the manifest alone.
// Input: manifest.pb, then after each kFileSeparator one shard file; with n of them they are
// shard_<t>_of_<n>.bin, the names a TP-n save gives them. A CheckpointError (or another
// primal::Error) is the right answer to bad bytes; anything else is a bug.
#include <cstdint>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_input.h"
#include "trainer/checkpoint.h"
#include "trainer/safetensors.h"

namespace {

template <typename F>
void expect_only_errors(F f) {
  try {
    f();
  } catch (const primal::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace primal;
  const std::vector<std::string> files =
      fuzz::split_pieces(fuzz::as_text(data, size), fuzz::kFileSeparator);
  // Not named step_<N>: the manifest's step is then not compared with the directory's.
  const std::string dir = fuzz::fresh_scratch_dir("checkpoint").string();
  fuzz::write_file(dir + "/manifest.pb", files[0]);
  const int shards = int(files.size()) - 1;
  for (int t = 0; t < shards; ++t)
    fuzz::write_file(dir + "/" + shard_file_name(t, shards), files[t + 1]);

  checkpoint::Manifest manifest;
  try {
    manifest = read_manifest(dir);
  } catch (const Error&) {
    return 0;
  }
  // The loading ranks' stores, made once (a load writes them only when it succeeds).
  static const auto stores = [] {
    std::vector<std::unique_ptr<ParameterStore<float>>> s;
    for (TensorParallelRank tp : {TensorParallelRank{0, 1}, {0, 2}, {1, 2}}) {
      s.push_back(fuzz::seed_model(tp));
    }
    return s;
  }();
  static std::vector<float> exp_avg(size_t(stores[0]->numel())), exp_avg_sq(exp_avg.size());
  for (const auto& store : stores) {
    expect_only_errors(
        [&] { load_shards(dir, manifest, *store, exp_avg.data(), exp_avg_sq.data()); });
  }
  expect_only_errors([&] { verify_shard_files(dir, manifest); });
  expect_only_errors([&] { load_checkpoint_config(dir, {}, /*require_data=*/false); });
  expect_only_errors([&] { export_checkpoint(dir, dir + "/export.safetensors"); });
  return 0;
}
