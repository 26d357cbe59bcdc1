// Model weights as a .safetensors file (SPEC §4 names, full shapes, little-endian F32): the
// format PyTorch and Hugging Face load directly.
//   [u64 LE header size][JSON header, space-padded to 8 bytes][tensor bytes]
//   header: {"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...}
#pragma once

#include <string>

#include "model/parameters.h"

namespace primal {

// Writes every parameter of store to path (through a temporary file and a rename, so a
// reader never sees half a file).
void save_safetensors(const std::string& path, const ParameterStore<float>& store);
// Reads path into store: every parameter must be present with its full shape and dtype F32.
// Throws primal::Error naming the file and the tensor on any mismatch; store is untouched
// unless the whole file is valid.
void load_safetensors(const std::string& path, ParameterStore<float>& store);

}  // namespace primal
