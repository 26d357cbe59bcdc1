// Writes a model, a batch and the C++ results (loss terms, every parameter gradient) for
// the independent PyTorch reference (primal_reference.py) to compare against.
//   reference_dump --list          the case names, one per line
//   reference_dump CASE DIR        writes DIR/{config,tensors,batch,results}.json, params.bin,
//                                  grads.bin (little-endian float32)
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "model/attention_kinds.h"
#include "model/transformer.h"

namespace primal {
namespace {

using enum AttentionKind;
using nlohmann::json;

struct Case {
  ModelConfig config;
  int B, N;
  std::vector<int32_t> lengths;
};

ModelConfig base(HeadKind head, InputKind input, std::vector<AttentionKind> layers) {
  ModelConfig c;
  c.head = head;
  c.input = input;
  c.vocab = 37;
  c.patch_dim = 16;
  c.width = 32;
  c.heads = 4;
  c.mlp_width = 48;
  c.max_len = 48;
  c.low_rank = 5;
  c.rank_multi = 4;
  c.layers = std::move(layers);
  c.eta = 0.5;
  c.pooling = Pooling::kMean;
  c.num_classes = 10;
  c.head_width = 24;
  c.seed = 2024;
  return c;
}

std::map<std::string, Case> cases() {
  std::map<std::string, Case> out;
  out["lm_softmax_primal"] = {
      base(HeadKind::kLm, InputKind::kTokens, {kSoftmax, kPrimal}), 3, 40, {}};
  out["lm_primalformer"] = {
      base(HeadKind::kLm, InputKind::kTokens, {kPrimal, kPrimal, kPrimal}), 2, 48, {}};
  // Encoder form: N = 45 > s*m = 20, padding, MEAN pooling.
  out["classifier_tokens_padded"] = {
      base(HeadKind::kClassifier, InputKind::kTokens, {kPrimal, kSoftmax, kPrimal}),
      4,
      45,
      {45, 30, 7, 1}};
  // Patches with a CLS token, N + 1 = 17 < s*m = 20.
  Case patches{base(HeadKind::kClassifier, InputKind::kPatches, {kPrimal, kPrimal}), 3, 16, {}};
  patches.config.pooling = Pooling::kCls;
  out["classifier_patches_cls"] = patches;
  return out;
}

// Initial weights moved a little off their (zero, one) starting points, so that every term
// of every gradient is exercised.
void perturb(ParameterStore<float>& params) {
  std::mt19937 gen(7);
  std::normal_distribution<float> normal(0.f, 0.05f);
  Tensor<float> v = params.values();
  for (int64_t i = 0; i < v.numel(); ++i) v[i] += normal(gen);
}

Batch make_batch(const Case& c) {
  std::mt19937 gen(11);
  Batch batch;
  batch.B = c.B;
  batch.N = c.N;
  batch.lengths = c.lengths;
  std::uniform_int_distribution<int32_t> token(0, c.config.vocab - 1),
      label(0, c.config.num_classes - 1);
  std::uniform_real_distribution<float> pixel(0.f, 1.f);
  const int64_t positions = int64_t(c.B) * c.N;
  if (c.config.input == InputKind::kTokens) {
    for (int64_t i = 0; i < positions; ++i) batch.tokens.push_back(token(gen));
  } else {
    for (int64_t i = 0; i < positions * c.config.patch_dim; ++i)
      batch.patches.push_back(pixel(gen));
  }
  const int64_t targets = c.config.head == HeadKind::kLm ? positions : c.B;
  for (int64_t i = 0; i < targets; ++i) {
    batch.targets.push_back(c.config.head == HeadKind::kLm ? token(gen) : label(gen));
  }
  return batch;
}

json config_json(const ModelConfig& c) {
  json layers = json::array();
  for (AttentionKind k : c.layers) layers.push_back(attention_kind(k).name);
  return {{"head", c.head == HeadKind::kLm ? "lm" : "classifier"},
          {"input", c.input == InputKind::kTokens ? "tokens" : "patches"},
          {"vocab", c.vocab},
          {"width", c.width},
          {"heads", c.heads},
          {"mlp_width", c.mlp_width},
          {"max_len", c.max_len},
          {"low_rank", c.low_rank},
          {"rank_multi", c.rank_multi},
          {"layers", layers},
          {"ln_eps", c.ln_eps},
          {"eta", c.eta},
          {"pooling", c.pooling == Pooling::kCls ? "CLS" : "MEAN"},
          {"num_classes", c.num_classes},
          {"head_width", c.head_width},
          {"patch_dim", c.patch_dim}};
}

json batch_json(const Batch& b, const ModelConfig& c) {
  json out = {{"B", b.B}, {"N", b.N}};
  json rows = json::array();
  for (int i = 0; i < b.B; ++i) {
    if (c.input == InputKind::kTokens) {
      rows.push_back(
          std::vector<int32_t>(b.tokens.begin() + i * b.N, b.tokens.begin() + (i + 1) * b.N));
    } else {
      json sample = json::array();
      for (int n = 0; n < b.N; ++n) {
        auto first = b.patches.begin() + (int64_t(i) * b.N + n) * c.patch_dim;
        sample.push_back(std::vector<float>(first, first + c.patch_dim));
      }
      rows.push_back(sample);
    }
  }
  out[c.input == InputKind::kTokens ? "tokens" : "patches"] = rows;
  if (c.head == HeadKind::kLm) {
    json targets = json::array();
    for (int i = 0; i < b.B; ++i)
      targets.push_back(
          std::vector<int32_t>(b.targets.begin() + i * b.N, b.targets.begin() + (i + 1) * b.N));
    out["targets"] = targets;
  } else {
    out["targets"] = b.targets;
    out["lengths"] = b.lengths.empty() ? std::vector<int32_t>(b.B, b.N) : b.lengths;
  }
  return out;
}

void write_json(const std::string& path, const json& j) {
  std::ofstream(path) << j.dump(1) << "\n";
}

void write_floats(const std::string& path, const Tensor<float>& t) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(t.data()), t.numel() * sizeof(float));
}

int run(const std::string& name, const std::string& dir) {
  auto all = cases();
  auto it = all.find(name);
  if (it == all.end()) {
    std::fprintf(stderr, "reference_dump: unknown case '%s' (see --list)\n", name.c_str());
    return 2;
  }
  const Case& c = it->second;
  Transformer<float> model(c.config);
  perturb(model.params());
  Batch batch = make_batch(c);
  Arena arena;
  LossTerms terms = model.forward_backward(arena, batch, 0);

  json index = json::array();
  int64_t offset = 0;
  for (const auto& p : model.params().all()) {
    std::vector<int64_t> shape;
    for (int i = 0; i < p.shape.rank(); ++i) shape.push_back(p.shape[i]);
    index.push_back({{"name", p.name}, {"shape", shape}, {"offset", offset}});
    offset += p.shape.numel();
  }
  write_json(dir + "/config.json", config_json(c.config));
  write_json(dir + "/tensors.json", index);
  write_json(dir + "/batch.json", batch_json(batch, c.config));
  write_json(dir + "/results.json", {{"loss", terms.loss}, {"ce", terms.ce}, {"ksvd", terms.ksvd}});
  write_floats(dir + "/params.bin", model.params().values());
  write_floats(dir + "/grads.bin", model.params().grads());
  return 0;
}

}  // namespace
}  // namespace primal

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "--list") {
    for (const auto& [name, c] : primal::cases()) std::printf("%s\n", name.c_str());
    return 0;
  }
  if (argc != 3) {
    std::fprintf(stderr, "usage: reference_dump --list | reference_dump CASE DIR\n");
    return 2;
  }
  return primal::run(argv[1], argv[2]);
}
