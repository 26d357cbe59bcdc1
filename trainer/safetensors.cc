#include "trainer/safetensors.h"

#include <bit>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "core/files.h"

namespace primal {

static_assert(std::endian::native == std::endian::little, "safetensors is little-endian");

void save_safetensors(const std::string& path, const ParameterStore<float>& store) {
  check(store.tp().size == 1, "save_safetensors: gather the shards into full tensors first");
  nlohmann::ordered_json header;
  int64_t offset = 0;
  for (const auto& p : store.all()) {
    std::vector<int64_t> shape;
    for (int i = 0; i < p.shape.rank(); ++i) shape.push_back(p.shape[i]);
    const int64_t bytes = p.shape.numel() * int64_t(sizeof(float));
    header[p.name] = {
        {"dtype", "F32"}, {"shape", shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  header["__metadata__"] = {{"format", "pt"}, {"producer", "primal"}};
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::type_error& e) {  // JSON strings are UTF-8
    throw Error(path, std::string("a tensor name is not valid UTF-8 (") + e.what() + ")");
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t size = text.size();

  write_file_durably(path, [&](OutputFile& out) {
    out.write(&size, sizeof(size));
    out.write(text);
    for (const auto& p : store.all()) {
      out.write(p.value.data(), p.shape.numel() * int64_t(sizeof(float)));
    }
  });
}

void load_safetensors(const std::string& path, ParameterStore<float>& store) {
  check(store.tp().size == 1, "load_safetensors: loads full (unsharded) tensors only");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, "cannot open the weights file");
  std::error_code ec;
  const auto file_size = std::filesystem::file_size(path, ec);
  if (ec) throw Error(path, "cannot read the weights file: " + ec.message());
  uint64_t header_size = 0;
  if (!in.read(reinterpret_cast<char*>(&header_size), sizeof(header_size)) ||
      header_size > file_size - sizeof(header_size)) {
    throw Error(path, "not a safetensors file (bad header size)");
  }
  std::string text(header_size, '\0');
  in.read(text.data(), std::streamsize(header_size));
  nlohmann::json header = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    throw Error(path, "not a safetensors file (header is not a JSON object)");
  }
  const uint64_t data_start = sizeof(header_size) + header_size;
  const uint64_t data_size = file_size - data_start;
  std::vector<char> data(data_size);
  in.read(data.data(), std::streamsize(data_size));
  if (!in) throw Error(path, "truncated: could not read " + std::to_string(data_size) + " bytes");

  // Check everything before touching the store. The header is the file's: every type is
  // checked before a value is read.
  std::vector<std::pair<const Parameter<float>*, uint64_t>> sources;
  for (const auto& p : store.all()) {
    const std::string tensor = "tensor '" + p.name + "'";
    const auto it = header.find(p.name);
    if (it == header.end()) throw Error(path, tensor + " is missing");
    if (!it->is_object()) throw Error(path, tensor + "'s entry is not a JSON object");
    // A field of the entry (null where absent).
    static const nlohmann::json kAbsent;
    const auto field = [&](const char* key) -> const nlohmann::json& {
      const auto f = it->find(key);
      return f == it->end() ? kAbsent : *f;
    };
    const nlohmann::json& dtype = field("dtype");
    if (dtype != "F32") {
      throw Error(path, tensor + " has dtype " +
                            (dtype.is_string() ? dtype.get<std::string>() : dtype.dump()) +
                            ", expected F32");
    }
    const nlohmann::json& shape = field("shape");
    bool same = shape.is_array() && int(shape.size()) == p.shape.rank();
    for (int i = 0; same && i < p.shape.rank(); ++i) {
      same = shape[size_t(i)].is_number_integer() && shape[size_t(i)] == p.shape[i];
    }
    if (!same) {
      throw Error(path,
                  tensor + " has shape " + shape.dump() + ", the model needs " + p.shape.str());
    }
    // [begin, end) of the data; end - begin is the tensor's bytes, so begin <= end.
    const nlohmann::json& offsets = field("data_offsets");
    const uint64_t bytes = p.shape.numel() * sizeof(float);
    const bool in_file = offsets.is_array() && offsets.size() == 2 &&
                         offsets[0].is_number_unsigned() && offsets[1].is_number_unsigned() &&
                         offsets[0].get<uint64_t>() <= offsets[1].get<uint64_t>() &&
                         offsets[1].get<uint64_t>() - offsets[0].get<uint64_t>() == bytes &&
                         offsets[1].get<uint64_t>() <= data_size;
    if (!in_file) throw Error(path, tensor + " has bad data_offsets " + offsets.dump());
    sources.emplace_back(&p, offsets[0].get<uint64_t>());
  }
  for (auto [p, begin] : sources) {
    std::memcpy(p->value.data(), data.data() + begin, p->shape.numel() * sizeof(float));
  }
}

}  // namespace primal
