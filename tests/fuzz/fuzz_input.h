// What the fuzz targets share: the fuzzer's bytes cut into the pieces a reader takes, a
// per-process scratch directory for the readers that take a path (they read real files), and
// the small model whose checkpoints and safetensors files the seeds are.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "model/parameters.h"

namespace primal::fuzz {

// Between the files of one input (a manifest and its shard files): rare in real files, and a
// dictionary word (tests/fuzz/*.dict) so that the fuzzer adds and drops files.
inline constexpr std::string_view kFileSeparator = "#%FILE%#";
// Between a config's text and its --set strings, and between command-line arguments.
inline constexpr std::string_view kNul{"\0", 1};

// bytes cut at every separator: n separators give n + 1 pieces.
inline std::vector<std::string> split_pieces(std::string_view bytes, std::string_view separator) {
  std::vector<std::string> pieces;
  for (size_t at = 0;;) {
    const size_t next = bytes.find(separator, at);
    pieces.emplace_back(bytes.substr(at, next == std::string_view::npos ? next : next - at));
    if (next == std::string_view::npos) return pieces;
    at = next + separator.size();
  }
}

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// <temp>/primal_fuzz_<pid>: made on first use, removed at exit() (libFuzzer ends with _Exit:
// run_fuzzer.sh gives each run a $TMPDIR of its own and removes that).
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const std::filesystem::path d =
        std::filesystem::temp_directory_path() / ("primal_fuzz_" + std::to_string(getpid()));
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return d;
  }();
  return dir;
}

// A fresh, empty directory `name` in the scratch directory.
inline std::filesystem::path fresh_scratch_dir(const std::string& name) {
  const std::filesystem::path d = scratch_dir() / name;
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

inline std::string write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(bytes.data(), std::streamsize(bytes.size()));
  return path.string();
}

// The seeds' model: one tensor of every sharding kind of SPEC §5 (the column split in three
// blocks like q|k|v, a replicated tensor whose gradient sums over TP), shapes that TP 1 and 2
// divide, 160 floats in all. Its checkpoints (tests/fuzz/make_seeds.cc) load under either
// layout.
inline std::unique_ptr<ParameterStore<float>> seed_model(TensorParallelRank tp) {
  auto s = std::make_unique<ParameterStore<float>>(tp);
  s->add("embed.tok.weight", {8, 4}, Split::kReplicated, Init::kNormal);
  s->add("layers.0.attn.qkv.weight", {12, 4}, Sharding{Split::kColumn, 3}, Init::kNormal);
  s->add("layers.0.attn.qkv.bias", {12}, Sharding{Split::kColumn, 3}, Init::kNormal);
  s->add("layers.0.attn.we", {2, 2, 2}, Split::kHeads, Init::kOrthogonalRows);
  s->add("layers.0.attn.concat.weight", {2, 4}, Sharding{Split::kReplicated, 1, true},
         Init::kNormal);
  s->add("layers.0.attn.proj.weight", {4, 4}, Split::kRow, Init::kNormal);
  s->add("layers.0.mlp.fc1.weight", {8, 4}, Split::kColumn, Init::kNormal);
  s->add("norm.weight", {4}, Split::kReplicated, Init::kUniform);
  s->finalize(7);
  return s;
}

}  // namespace primal::fuzz
