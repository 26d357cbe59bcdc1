// The safetensors reader (trainer/safetensors.h) into the seeds' model: the input is the file.
// A primal::Error is the right answer to bad bytes; anything else is a bug.
#include <cstdint>

#include "core/error.h"
#include "tests/fuzz/fuzz_input.h"
#include "trainer/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace primal;
  static const std::string path = (fuzz::scratch_dir() / "model.safetensors").string();
  static const auto store = fuzz::seed_model({0, 1});
  fuzz::write_file(path, fuzz::as_text(data, size));
  try {
    load_safetensors(path, *store);
  } catch (const Error&) {
  }
  return 0;
}
