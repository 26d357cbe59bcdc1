#include "launch/generate.h"

#include <vector>

#include "core/error.h"
#include "model/generator.h"

namespace primal {

int run_generate(Transformer<float>& model, const std::string& prompt, int tokens,
                 double temperature, uint64_t seed, std::FILE* out) {
  const ModelConfig& config = model.config();
  if (config.head != HeadKind::kLm) {
    throw Error("generate", "the model is a classifier; generation needs an LM config");
  }
  if (config.vocab != 256) {
    throw Error("generate", "byte-level generation needs vocab 256, the model has " +
                                std::to_string(config.vocab));
  }
  if (prompt.empty()) throw Error("generate", "--prompt is empty");
  if (int64_t(prompt.size()) > config.max_len) {
    throw Error("generate", "the prompt has " + std::to_string(prompt.size()) +
                                " bytes, more than the model's max_len " +
                                std::to_string(config.max_len));
  }
  if (tokens < 0) throw Error("generate", "--tokens " + std::to_string(tokens) + " is negative");
  std::vector<int32_t> in;
  in.reserve(prompt.size());
  for (char c : prompt) in.push_back(int32_t(static_cast<unsigned char>(c)));
  Generator<float> generator(model);
  const std::vector<int32_t> drawn = generator.generate(in, tokens, temperature, seed);
  std::string text = prompt;
  for (int32_t t : drawn) text.push_back(char(static_cast<unsigned char>(t)));
  text.push_back('\n');
  if (std::fwrite(text.data(), 1, text.size(), out) != text.size() || std::fflush(out) != 0) {
    throw Error("generate", "could not write the output");
  }
  return 0;
}

}  // namespace primal
