// Incremental generation: the Generator's logits equal the full
// forward's at every position; position max_len is an error; generation is deterministic; a
// PRIMAL layer's state and work per token do not grow with the position; a step allocates
// nothing. Own executable: it replaces the global operator new to count allocations.
#include "model/generator.h"

#include <gtest/gtest.h>

#include "tests/common/allocation_counter.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/blas.h"
#include "launch/generate.h"
#include "model/attention_kinds.h"
#include "model/transformer.h"
#include "tests/model/model_configs.h"

namespace primal {
namespace {

using enum AttentionKind;

// Moves every parameter off its initial value (as tests/model/gradcheck.h's randomize does),
// so that biases, LayerNorm affine terms and every attention path take part.
template <typename T>
void perturb(Transformer<T>& model, uint32_t seed, double scale = 0.5) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal(0.0, scale);
  Tensor<T> v = model.params().values();
  for (int64_t i = 0; i < v.numel(); ++i) v[i] += T(normal(gen));
}

std::vector<int32_t> random_tokens(int n, int vocab, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> token(0, vocab - 1);
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = token(gen);
  return t;
}

// The full forward on one sequence: its logits, formed as the forward forms them (its saved
// LN_f output times tok_emb^T), and the log of its softmax probabilities. [N, V] each.
struct Full {
  std::vector<double> logits, log_probs;
};

template <typename T>
Full full_forward(Transformer<T>& model, const std::vector<int32_t>& tokens) {
  const ModelConfig& c = model.config();
  const int N = int(tokens.size()), C = c.width, V = c.vocab;
  Batch batch;
  batch.B = 1;
  batch.N = N;
  batch.tokens = tokens;
  batch.targets.assign(N, 0);
  Arena arena;
  model.forward(arena, batch, 0);
  std::vector<T> logits(int64_t(N) * V);
  gemm(Trans::kNo, Trans::kYes, N, V, C, T(1), model.final_hidden().data(), C,
       model.params().find("embed.tok.weight")->value.data(), C, T(0), logits.data(), V);
  Full out;
  out.logits.assign(logits.begin(), logits.end());
  const Tensor<T>& p = model.probabilities();
  for (int64_t i = 0; i < p.numel(); ++i) out.log_probs.push_back(std::log(double(p[i])));
  return out;
}

struct Differences {
  double logits = 0;     // max |generator - full|
  double log_probs = 0;  // max |log_softmax(generator) - log(full probabilities)|
};

// Steps the whole sequence (max_len tokens) through a Generator and compares every position
// with the full forward of the same model.
template <typename T>
Differences compare(Transformer<T>& model, const std::vector<int32_t>& tokens) {
  const Full full = full_forward(model, tokens);
  Generator<T> generator(model);
  const int V = model.config().vocab;
  Differences d;
  for (int n = 0; n < int(tokens.size()); ++n) {
    std::span<const T> logits = generator.step(tokens[n]);
    const double* f = full.logits.data() + int64_t(n) * V;
    const double* lp = full.log_probs.data() + int64_t(n) * V;
    double max = -INFINITY, sum = 0;
    for (T l : logits) max = std::max(max, double(l));
    for (T l : logits) sum += std::exp(double(l) - max);
    for (int v = 0; v < V; ++v) {
      d.logits = std::max(d.logits, std::abs(double(logits[v]) - f[v]));
      d.log_probs =
          std::max(d.log_probs, std::abs(double(logits[v]) - max - std::log(sum) - lp[v]));
    }
  }
  return d;
}

template <typename T>
Differences compare(const ModelConfig& config, uint32_t seed, double scale) {
  Transformer<T> model(config);
  perturb(model, seed, scale);
  return compare(model, random_tokens(config.max_len, config.vocab, seed + 1));
}

// Small and medium LM configs for each mix of layers.
std::vector<ModelConfig> configs() {
  std::vector<ModelConfig> out;
  for (auto layers : std::vector<std::vector<AttentionKind>>{{kSoftmax, kPrimal},
                                                             {kPrimal, kPrimal},
                                                             {kSoftmax, kSoftmax},
                                                             {kLinear, kPrimal},
                                                             {kLinear, kLinear}}) {
    out.push_back(testing::lm_config(layers, 48));
    ModelConfig c = testing::lm_config(layers, 160);
    c.vocab = 256;
    c.width = 32;
    c.heads = 4;
    c.mlp_width = 64;
    c.low_rank = 5;
    out.push_back(c);
  }
  return out;
}

std::string describe(const ModelConfig& c) {
  std::string s = "[";
  for (size_t i = 0; i < c.layers.size(); ++i)
    s += std::string(i ? ", " : "") + attention_kind(c.layers[i]).name;
  return s + "] C=" + std::to_string(c.width) + " V=" + std::to_string(c.vocab) +
         " max_len=" + std::to_string(c.max_len);
}

// The same in float (the precision the CLI runs in). The weights are moved off
// their initial values by normal(0, 0.2), ten times the init's spread: the logits reach ~5
// and the float forward itself is within ~2e-6 of the double-precision truth. (At 0.5 the
// float forward's own rounding error reaches ~6e-5, above the tolerance for any two float
// computations; the next tests cover that regime.)
TEST(Generator, LogitsEqualFullForwardAtEveryPosition) {
  uint32_t seed = 3;
  for (const ModelConfig& config : configs()) {
    const Differences d = compare<float>(config, seed += 10, 0.2);
    std::printf("float  %-40s max |logit diff| %.2e, max |log-prob diff| %.2e\n",
                describe(config).c_str(), d.logits, d.log_probs);
    EXPECT_LT(d.logits, 1e-5) << describe(config);
    EXPECT_LT(d.log_probs, 1e-5) << describe(config);
  }
}

// In double, with larger weights, the two agree to rounding: the per-token math is the
// forward's.
TEST(Generator, LogitsEqualFullForwardInDoubleToRounding) {
  uint32_t seed = 5;
  for (const ModelConfig& config : configs()) {
    const Differences d = compare<double>(config, seed += 10, 0.5);
    std::printf("double %-40s max |logit diff| %.2e, max |log-prob diff| %.2e\n",
                describe(config).c_str(), d.logits, d.log_probs);
    EXPECT_LT(d.logits, 1e-12) << describe(config);
    EXPECT_LT(d.log_probs, 1e-12) << describe(config);
  }
}

// With larger weights (normal(0, 0.5) added), float rounding grows in both computations: the
// generator's error against the double-precision truth stays that of the full forward.
TEST(Generator, FloatErrorIsThatOfTheFullForward) {
  uint32_t seed = 3;
  for (const ModelConfig& config : configs()) {
    Transformer<float> model(config);
    perturb(model, seed += 10, 0.5);
    Transformer<double> exact(config);
    const Tensor<float> vf = model.params().values();
    const Tensor<double> vd = exact.params().values();
    for (int64_t i = 0; i < vf.numel(); ++i) vd[i] = vf[i];  // the same (float) weights
    const std::vector<int32_t> tokens = random_tokens(config.max_len, config.vocab, seed + 1);
    const Full full = full_forward(model, tokens), truth = full_forward(exact, tokens);
    Generator<float> generator(model);
    double full_error = 0, generator_error = 0;
    for (int n = 0; n < config.max_len; ++n) {
      std::span<const float> logits = generator.step(tokens[n]);
      for (int v = 0; v < config.vocab; ++v) {
        const int64_t i = int64_t(n) * config.vocab + v;
        full_error = std::max(full_error, std::abs(full.logits[i] - truth.logits[i]));
        generator_error = std::max(generator_error, std::abs(double(logits[v]) - truth.logits[i]));
      }
    }
    std::printf("float vs double %-40s full forward %.2e, generator %.2e\n",
                describe(config).c_str(), full_error, generator_error);
    EXPECT_LT(generator_error, 2 * full_error + 1e-6) << describe(config);
  }
}

TEST(Generator, PositionMaxLenIsAnErrorAndResetStartsOver) {
  ModelConfig config = testing::lm_config({kSoftmax, kPrimal}, 12);
  Transformer<float> model(config);
  perturb(model, 1);
  const std::vector<int32_t> tokens = random_tokens(config.max_len, config.vocab, 2);
  Generator<float> generator(model);
  std::vector<float> first;
  for (int n = 0; n < config.max_len; ++n) {
    std::span<const float> l = generator.step(tokens[n]);
    if (n == 0) first.assign(l.begin(), l.end());
  }
  EXPECT_EQ(generator.position(), config.max_len);
  try {
    generator.step(tokens[0]);
    ADD_FAILURE() << "a step at position max_len did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("max_len 12"), std::string::npos) << e.what();
  }
  generator.reset();
  std::span<const float> again = generator.step(tokens[0]);
  EXPECT_TRUE(std::equal(again.begin(), again.end(), first.begin(), first.end()));

  EXPECT_THROW(generator.step(config.vocab), Error);
  EXPECT_THROW(generator.step(-1), Error);
  // A prompt of 5 and 8 new tokens need 5 + 7 = 12 positions: allowed; 9 new ones are not.
  EXPECT_EQ(generator.generate(std::span(tokens).first(5), 8, 0.0, 0).size(), 8u);
  EXPECT_THROW(generator.generate(std::span(tokens).first(5), 9, 0.0, 0), Error);
  EXPECT_THROW(generator.generate({}, 3, 0.0, 0), Error);
  EXPECT_THROW(generator.generate(std::span(tokens).first(2), 3, -1.0, 0), Error);

  ModelConfig classifier =
      testing::classifier_config({kPrimal}, InputKind::kTokens, Pooling::kMean, 12, 3, 2);
  Transformer<float> not_lm(classifier);
  EXPECT_THROW(Generator<float>{not_lm}, Error);
}

TEST(Generator, GreedyIsDeterministicAndFollowsTheFullForward) {
  ModelConfig config = testing::lm_config({kSoftmax, kPrimal}, 40);
  config.vocab = 32;
  config.width = 16;
  Transformer<float> model(config);
  perturb(model, 7);
  const std::vector<int32_t> prompt = random_tokens(6, config.vocab, 8);
  const int n = 30;
  Generator<float> a(model), b(model);
  const std::vector<int32_t> greedy = a.generate(prompt, n, 0.0, 1);
  EXPECT_EQ(greedy, b.generate(prompt, n, 0.0, 2));  // greedy: the seed plays no part
  EXPECT_EQ(greedy, a.generate(prompt, n, 0.0, 1));  // a second run on the same generator
  // Each greedy token is the argmax of the full forward's probabilities at the position
  // before it.
  std::vector<int32_t> sequence = prompt;
  sequence.insert(sequence.end(), greedy.begin(), greedy.end() - 1);
  const Full full = full_forward(model, sequence);
  for (int i = 0; i < n; ++i) {
    const double* lp = full.log_probs.data() + int64_t(prompt.size() - 1 + i) * config.vocab;
    EXPECT_EQ(greedy[i], int32_t(std::max_element(lp, lp + config.vocab) - lp)) << "token " << i;
  }
  // Sampling: the same seed gives the same tokens, another seed others.
  const std::vector<int32_t> sampled = a.generate(prompt, n, 1.0, 11);
  EXPECT_EQ(sampled, b.generate(prompt, n, 1.0, 11));
  EXPECT_NE(sampled, a.generate(prompt, n, 1.0, 12));
  EXPECT_NE(sampled, greedy);
}

// Timing-free: the values of state a PRIMAL layer reads and the GEMM work of a token are the
// same at every position; with a SOFTMAX layer both grow with it (the counter sees the cache).
TEST(Generator, PrimalStateAndWorkPerTokenDoNotGrowWithPosition) {
  for (auto layers :
       std::vector<std::vector<AttentionKind>>{{kPrimal, kPrimal}, {kSoftmax, kPrimal}}) {
    ModelConfig config = testing::lm_config(layers, 64);
    Transformer<float> model(config);
    perturb(model, 4);
    const std::vector<int32_t> tokens = random_tokens(config.max_len, config.vocab, 5);
    Generator<float> generator(model);
    std::vector<uint64_t> flops;
    for (int n = 0; n < config.max_len; ++n) {
      const uint64_t before = gemm_flops.load();
      generator.step(tokens[n]);
      flops.push_back(gemm_flops.load() - before);
      for (int l = 0; l < int(layers.size()); ++l) {
        const int64_t expected = 2 * int64_t(config.width) * (layers[l] == kPrimal ? 1 : n + 1);
        ASSERT_EQ(generator.state_size(l), expected) << "layer " << l << " position " << n;
      }
    }
    if (layers[0] == kPrimal) {
      EXPECT_EQ(std::count(flops.begin(), flops.end(), flops[0]), int64_t(flops.size()));
    } else {
      for (size_t n = 1; n < flops.size(); ++n) EXPECT_GT(flops[n], flops[n - 1]);
    }
  }
}

// A LINEAR layer's state is its heads' d x (d + 1) prefix sums: the same values and GEMM work
// at every position.
TEST(Generator, LinearStateAndWorkPerTokenDoNotGrowWithPosition) {
  ModelConfig config = testing::lm_config({kLinear, kLinear}, 64);
  Transformer<float> model(config);
  perturb(model, 4);
  const std::vector<int32_t> tokens = random_tokens(config.max_len, config.vocab, 5);
  Generator<float> generator(model);
  const int64_t d = config.head_dim();
  std::vector<uint64_t> flops;
  for (int n = 0; n < config.max_len; ++n) {
    const uint64_t before = gemm_flops.load();
    generator.step(tokens[n]);
    flops.push_back(gemm_flops.load() - before);
    for (int l = 0; l < 2; ++l) ASSERT_EQ(generator.state_size(l), config.heads * d * (d + 1));
  }
  EXPECT_EQ(std::count(flops.begin(), flops.end(), flops[0]), int64_t(flops.size()));
}

TEST(Generator, StepsAllocateNothing) {
  ModelConfig config = testing::lm_config({kSoftmax, kPrimal, kLinear}, 64);
  Transformer<float> model(config);
  const std::vector<int32_t> tokens = random_tokens(config.max_len, config.vocab, 6);
  Generator<float> generator(model);
  testing::AllocationCounter counter;
  for (int n = 0; n < config.max_len; ++n) generator.step(tokens[n]);
  EXPECT_EQ(counter.stop(), 0);
}

std::string read_all(std::FILE* f) {
  std::rewind(f);
  std::string s;
  for (int c; (c = std::fgetc(f)) != EOF;) s.push_back(char(c));
  return s;
}

TEST(Generate, PrintsThePromptAndTheGeneratedBytes) {
  ModelConfig config = testing::lm_config({kSoftmax, kPrimal}, 24);
  config.vocab = 256;
  config.width = 16;
  Transformer<float> model(config);
  perturb(model, 9);
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(run_generate(model, "In the", 10, 0.0, 1, f), 0);
  const std::string text = read_all(f);
  std::fclose(f);
  std::vector<int32_t> prompt;
  for (char c : std::string("In the")) prompt.push_back(static_cast<unsigned char>(c));
  std::string expected = "In the";
  for (int32_t t : Generator<float>(model).generate(prompt, 10, 0.0, 1)) expected += char(t);
  EXPECT_EQ(text, expected + "\n");

  auto error_of = [&](Transformer<float>& m, const std::string& prompt, int tokens) {
    try {
      run_generate(m, prompt, tokens, 0.0, 1, stdout);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error_of(model, "", 3), "generate: --prompt is empty");
  EXPECT_EQ(error_of(model, std::string(25, 'a'), 0),
            "generate: the prompt has 25 bytes, more than the model's max_len 24");
  EXPECT_NE(error_of(model, std::string(20, 'a'), 6).find("need 25 positions"), std::string::npos);
  ModelConfig small = testing::lm_config({kPrimal}, 24);  // vocab 11
  Transformer<float> not_bytes(small);
  EXPECT_EQ(error_of(not_bytes, "ab", 3),
            "generate: byte-level generation needs vocab 256, the model has 11");
}

}  // namespace
}  // namespace primal
