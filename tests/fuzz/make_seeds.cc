// Writes the fuzz targets' seed corpora and dictionaries (tests/fuzz/corpus/<target>/,
// tests/fuzz/dict/<target>.dict):
//   make_seeds SOURCE_DIR OUT_DIR
// from the repository's real inputs (configs/*.pbtxt, configs/primal.proto, data/kjv.txt)
// and small files made with the writers primal itself uses: checkpoints of the seeds' model
// saved as TP 1 and TP 2, its safetensors file, IDX files, each with a few broken variants.
// Deterministic: the test Fuzz.SeedsAreUpToDate regenerates them and compares with the
// tracked ones.
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_input.h"
#include "trainer/checkpoint.h"
#include "trainer/safetensors.h"

namespace primal::fuzz {
namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string(), "cannot read");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Every broken variant of a valid file: cut in half, cut by one byte, one byte flipped in the
// middle; written beside it as <name>.half, .short, .flip.
void write_with_variants(const fs::path& path, const std::string& bytes) {
  write_file(path, bytes);
  write_file(path.string() + ".half", bytes.substr(0, bytes.size() / 2));
  write_file(path.string() + ".short", bytes.substr(0, bytes.size() - 1));
  std::string flipped = bytes;
  flipped[flipped.size() / 2] ^= 0x5a;
  write_file(path.string() + ".flip", flipped);
}

std::string join(const std::vector<std::string>& pieces, std::string_view separator) {
  std::string out;
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (i) out += separator;
    out += pieces[i];
  }
  return out;
}

// gzip with zlib's defaults and no file name or time: the same bytes on every machine.
std::string gzip(const std::string& bytes) {
  z_stream z{};
  if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) throw Error("gzip");
  std::string out(deflateBound(&z, uLong(bytes.size())), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = uInt(bytes.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = uInt(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) throw Error("gzip: deflate did not finish");
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

void big_endian(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out += char((v >> shift) & 0xff);
}

// An IDX file of `count` images of rows x cols (pixels 0, 17, 34, ...) or of `count` labels.
std::string idx_images(uint32_t count, uint32_t rows, uint32_t cols) {
  std::string s;
  for (uint32_t v : {0x00000803u, count, rows, cols}) big_endian(s, v);
  for (uint32_t i = 0; i < count * rows * cols; ++i) s += char((i * 17) & 0xff);
  return s;
}
std::string idx_labels(uint32_t count) {
  std::string s;
  for (uint32_t v : {0x00000801u, count}) big_endian(s, v);
  for (uint32_t i = 0; i < count; ++i) s += char(i % 10);
  return s;
}

// A checkpoint of the seeds' model saved as the TP ranks of a tp-way layout, as one input of
// checkpoint_fuzz: manifest.pb, then the shard files.
std::string checkpoint_input(const fs::path& scratch, int tp, const std::string& config_text) {
  const std::string root = (scratch / ("tp" + std::to_string(tp))).string();
  fs::remove_all(root);
  const std::string tmp = begin_checkpoint(root, 3);
  std::vector<WrittenShard> shards;
  std::unique_ptr<ParameterStore<float>> any;
  for (int t = 0; t < tp; ++t) {
    any = seed_model({t, tp});
    // Moments that differ from the values and from each other.
    std::vector<float> m(size_t(any->numel())), v(m.size());
    for (size_t i = 0; i < m.size(); ++i) m[i] = 0.5f * float(i), v[i] = 0.25f * float(i);
    shards.push_back(write_shard(tmp, *any, {any->values().data(), m.data(), v.data()}, 3));
  }
  checkpoint::TrainingState state;
  state.set_step(3);
  state.set_adamw_steps(3);
  state.set_seed(1);
  state.set_data_cursor(3);
  commit_checkpoint(root, tmp, build_manifest(*any, shards, 1, state, config_text), 0);
  const std::string step = root + "/" + checkpoint_step_name(3);
  std::vector<std::string> files = {read_file(step + "/manifest.pb")};
  for (int t = 0; t < tp; ++t) files.push_back(read_file(step + "/" + shard_file_name(t, tp)));
  return join(files, kFileSeparator);
}

void write_dict(const fs::path& path, const std::set<std::string>& words) {
  std::ofstream out(path);
  out << "# made by tests/fuzz/make_seeds.cc\n";
  for (const std::string& w : words) {
    out << '"';
    for (unsigned char c : w) {
      if (c == '"' || c == '\\' || c < 32 || c > 126) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "\\x%02X", c);
        out << hex;
      } else {
        out << c;
      }
    }
    out << "\"\n";
  }
}

void make_seeds(const fs::path& source, const fs::path& out) {
  const fs::path corpus = out / "corpus", dicts = out / "dict";
  for (const char* target : {"config", "command_line", "checkpoint", "safetensors", "idx", "text",
                             "listops", "kjv_testament"}) {
    fs::create_directories(corpus / target);
  }
  fs::create_directories(dicts);

  // config: the README's shipped configs, alone and with overrides; a tiny one; broken ones.
  std::set<std::string> config_words;
  for (const char* name :
       {"lm_kjv", "lm_kjv_primalformer", "lm_kjv_transformer", "fashion_mnist_vit", "listops"}) {
    const std::string text = read_file(source / "configs" / (std::string(name) + ".pbtxt"));
    write_file(corpus / "config" / (std::string(name) + ".pbtxt"), text);
    write_file(corpus / "config" / (std::string(name) + "_overrides"),
               join({text, "optimizer.lr=3e-4", "model.layers=PRIMAL,PRIMAL", "parallel.tp=2",
                     "data.path=x"},
                    kNul));
  }
  const std::string tiny =
      "model { width: 4 heads: 2 mlp_width: 8 max_len: 4 layers: [SOFTMAX, PRIMAL] low_rank: 2 "
      "rank_multi: 2 vocab: 256 }\ndata { seq_len: 4 batch_size: 2 }\n"
      "train { steps: 2 }\n";
  write_file(corpus / "config" / "tiny", tiny);
  write_file(corpus / "config" / "broken_type", "model { width: \"wide\" }\n");
  write_file(corpus / "config" / "broken_override",
             join({tiny, "model.nope=1", "optimizer=2", "train.steps=x"}, kNul));
  {
    // The schema's field and enum value names.
    const std::string proto = read_file(source / "configs/primal.proto");
    const std::regex field(R"((optional|repeated) \w+ (\w+) = )"), value(R"(^\s+([A-Z_0-9]+) = )");
    for (std::sregex_iterator i(proto.begin(), proto.end(), field), end; i != end; ++i) {
      config_words.insert((*i)[2].str() + ":");
      config_words.insert((*i)[2].str() + "=");
    }
    std::istringstream lines(proto);
    for (std::string line; std::getline(lines, line);) {
      std::smatch m;
      if (std::regex_search(line, m, value)) config_words.insert(m[1].str());
    }
    for (const char* w : {"model {", "data {", "optimizer {", "schedule {", "train {", "parallel {",
                          "checkpoint {", "logging {", "}", "[", "]", ","}) {
      config_words.insert(w);
    }
    config_words.insert(std::string(1, '\0'));
    write_dict(dicts / "config.dict", config_words);
  }

  // command_line: the README's commands, NUL-separated.
  const std::vector<std::vector<std::string>> commands = {
      {"train", "--config", "configs/lm_kjv.pbtxt", "--set", "optimizer.lr=3e-4", "--set",
       "train.steps=2000"},
      {"train", "--config", "c.pbtxt", "--resume", "auto"},
      {"eval", "--checkpoint", "runs/ck", "--split", "test"},
      {"eval", "--config", "c.pbtxt", "--weights", "w.safetensors", "--data", "f.txt"},
      {"generate", "--checkpoint", "ck", "--prompt", "In the beginning", "--tokens", "200",
       "--temperature", "0.5", "--seed", "3"},
      {"export", "--checkpoint", "ck", "--out", "m.safetensors"},
      {"import", "m.safetensors", "--config", "c.pbtxt", "--set", "a=b", "--out", "ck"},
      {"spectrum", "--checkpoint", "ck", "--batches", "4", "--out", "spectrum"},
      {"spectrum-plot", "--csv", "a.csv", "--label", "a", "--csv", "b.csv", "--label", "b", "--out",
       "x.svg", "--title", "t"},
      {"--help"},
      {"train", "--help"},
      {"eval", "--split", "nope", "--data", "f"},
  };
  std::set<std::string> cli_words = {std::string(1, '\0')};
  for (size_t i = 0; i < commands.size(); ++i) {
    write_file(corpus / "command_line" / ("args_" + std::to_string(i)), join(commands[i], kNul));
    for (const std::string& a : commands[i]) {
      if (a.rfind("--", 0) == 0 || i == 0) cli_words.insert(a);
    }
    cli_words.insert(commands[i][0]);
  }
  write_dict(dicts / "command_line.dict", cli_words);

  // checkpoint: TP 1 and TP 2 saves, and their broken variants.
  const fs::path scratch = out / "scratch";
  for (int tp : {1, 2}) {
    write_with_variants(corpus / "checkpoint" / ("tp" + std::to_string(tp)),
                        checkpoint_input(scratch, tp, tiny));
  }
  std::set<std::string> checkpoint_words = {std::string(kFileSeparator), "F32"};
  const auto model = seed_model({0, 1});
  for (const auto& p : model->all()) checkpoint_words.insert(p.name);
  for (int tp : {1, 2}) {
    for (int t = 0; t < tp; ++t) checkpoint_words.insert(shard_file_name(t, tp));
  }
  write_dict(dicts / "checkpoint.dict", checkpoint_words);

  // safetensors: the seeds' model, and its broken variants.
  {
    const fs::path path = scratch / "model.safetensors";
    save_safetensors(path.string(), *model);
    write_with_variants(corpus / "safetensors" / "model", read_file(path));
    std::set<std::string> words = {"dtype", "shape", "data_offsets", "F32", "F16", "__metadata__"};
    for (const auto& p : model->all()) words.insert(p.name);
    write_dict(dicts / "safetensors.dict", words);
  }

  // idx: mode byte, patch byte, then the file (idx_fuzz.cc says what the modes are).
  const std::string images = idx_images(3, 4, 4), labels = idx_labels(3);
  write_with_variants(corpus / "idx" / "images_gz", std::string("\0\0", 2) + gzip(images));
  write_with_variants(corpus / "idx" / "labels_gz", std::string("\1\0", 2) + gzip(labels));
  write_file(corpus / "idx" / "images", std::string("\2\0", 2) + images);
  write_file(corpus / "idx" / "labels", std::string("\3\0", 2) + labels);
  write_file(corpus / "idx" / "dataset_patch2",
             std::string("\4\2", 2) +
                 join({idx_images(3, 4, 4), idx_labels(3), idx_images(2, 4, 4), idx_labels(2)},
                      kFileSeparator));
  write_dict(dicts / "idx.dict", {std::string(kFileSeparator), std::string("\0\0\x08\x03", 4),
                                  std::string("\0\0\x08\x01", 4), std::string("\x1f\x8b\x08", 3)});

  // text: pieces of the KJV (the last bytes become the parameters).
  const std::string kjv = read_file(source / "data/kjv.txt");
  for (size_t at : {size_t(0), size_t(100000), size_t(2000000)}) {
    write_file(corpus / "text" / ("kjv_" + std::to_string(at)), kjv.substr(at, 1500));
  }
  write_file(corpus / "text" / "short", "In the beginning");
  // kjv_testament: the export's first and last chapters of the Old Testament, the heading of
  // the New, its first chapter (the first 24 bytes become the parameters).
  const size_t matthew = kjv.find("\nMatthew 1\n");
  if (matthew == std::string::npos) throw Error("data/kjv.txt", "has no heading 'Matthew 1'");
  const std::string parameters(
      "\x00\x00\x08\x00\x01\x00\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00"
      "\x00\x04\x00\x00\x00",
      24);
  write_file(corpus / "kjv_testament" / "genesis_matthew",
             parameters + kjv.substr(0, 4000) + kjv.substr(matthew - 2000, 6000));
  write_file(corpus / "kjv_testament" / "no_new_testament", parameters + kjv.substr(0, 6000));

  // listops: parameters only; LRA's setting and small ones.
  for (const std::string& seed : {std::string("\x01\xf4\x01\x00\x02\x00\x00\x00\x01\x00\x01"
                                              "\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x00",
                                              22),
                                  std::string(16, '\x10'), std::string(24, '\x7f')}) {
    write_file(
        corpus / "listops" /
            ("params_" + std::to_string(seed.size()) + "_" + std::to_string(uint8_t(seed[0]))),
        seed);
  }
  fs::remove_all(scratch);
}

}  // namespace
}  // namespace primal::fuzz

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: make_seeds SOURCE_DIR OUT_DIR\n";
    return 2;
  }
  try {
    primal::fuzz::make_seeds(argv[1], argv[2]);
  } catch (const std::exception& e) {
    std::cerr << "make_seeds: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
