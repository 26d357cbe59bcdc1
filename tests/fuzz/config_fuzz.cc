// The config reader (configs/config.h): text format, then --set overrides, then validation.
// Input: the config text, then after each NUL byte one --set assignment. A primal::Error is
// the right answer to bad bytes; anything else (a crash, UB, an exception of another type) is
// a bug.
#include <cstdint>
#include <string>
#include <vector>

#include "configs/config.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace primal;
  std::vector<std::string> pieces = fuzz::split_pieces(fuzz::as_text(data, size), fuzz::kNul);
  const std::string text = pieces.front();
  pieces.erase(pieces.begin());
  try {
    const LoadedConfig config = LoadedConfig::parse(text, "fuzz.pbtxt", pieces);
    // What the commands read of a loaded config.
    config.model();
    config.adamw();
    config.where("model.layers");
    config.where("optimizer.lr");
    for (int world : {1, 2, 3, 4, 8}) {
      try {
        config.validate_layout(world);
      } catch (const Error&) {
      }
    }
  } catch (const Error&) {
  }
  return 0;
}
