// The Transformer's training step on the device against the CPU Transformer<float>:
//   fp32: the loss and every parameter's gradient of one step within 1e-5 (per tensor, relative
//         to its largest reference value), and the parameters after three steps of
//         forward/backward, global-norm clip and AdamW (the trainer's CPU path) likewise;
//   bf16: the loss within 2e-2 (relative) of the CPU's, at the first and the third step;
//   two identical device runs agree bit for bit; after warm-up a step allocates nothing new.
// Configs: the LM (causal PRIMAL, SOFTMAX, both mixed) and the classifier (encoder PRIMAL and
// SOFTMAX; token inputs with MEAN pooling, patch inputs with a CLS slot; with and without
// padding, lengths short enough that the sampled positions repeat), all with dropout on (its
// masks must be the CPU's). Label gpu: SKIPPED, with the runtime's reason, where no GPU is
// present.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/cuda/device.h"
#include "model/cuda/transformer.h"
#include "trainer/adamw.h"
#include "trainer/grad_clip.h"

namespace primal::cuda {
namespace {

using Layers = std::vector<AttentionKind>;
constexpr AttentionKind P = AttentionKind::kPrimal, S = AttentionKind::kSoftmax;

struct Case {
  std::string name;
  ModelConfig config;
  bool padded = false;  // classifier batches with lengths < N
};

// gtest names a parameter by this (instead of printing its bytes).
void PrintTo(const Case& k, std::ostream* os) {
  *os << k.name;
}

ModelConfig small_config(const Layers& layers) {
  ModelConfig c;
  c.vocab = 37;
  c.width = 32;
  c.heads = 4;
  c.mlp_width = 48;
  c.max_len = 24;
  c.low_rank = 5;
  c.rank_multi = 2;  // encoder form: L = 10 sampled positions
  c.layers = layers;
  c.eta = 0.5;  // a KSVD term large enough to show in every gradient it reaches
  c.dropout = 0.1;
  c.seed = 7;
  return c;
}

Case lm_case(const std::string& name, const Layers& layers) {
  Case k{name, small_config(layers)};
  k.config.head = HeadKind::kLm;
  return k;
}

Case classifier_case(const std::string& name, const Layers& layers, InputKind input,
                     Pooling pooling, bool padded) {
  Case k{name, small_config(layers), padded};
  k.config.head = HeadKind::kClassifier;
  k.config.input = input;
  k.config.pooling = pooling;
  k.config.num_classes = 5;
  k.config.head_width = 24;
  if (input == InputKind::kPatches) k.config.patch_dim = 12;
  return k;
}

std::vector<Case> cases() {
  return {
      lm_case("LmPrimalPrimal", {P, P}),
      lm_case("LmSoftmax", {S}),
      lm_case("LmPrimalSoftmax", {P, S}),
      classifier_case("ClassifierTokensMeanPadded", {P, S}, InputKind::kTokens, Pooling::kMean,
                      true),
      classifier_case("ClassifierPatchesClsPadded", {P, P, S}, InputKind::kPatches, Pooling::kCls,
                      true),
      classifier_case("ClassifierPatchesCls", {P, S}, InputKind::kPatches, Pooling::kCls, false),
  };
}

Batch make_batch(const Case& k, int B, int N, uint64_t seed) {
  const ModelConfig& c = k.config;
  Batch b;
  b.B = B;
  b.N = N;
  b.sample_offset = int64_t(seed % 5) * B;
  std::mt19937_64 rng(seed);
  if (c.input == InputKind::kTokens) {
    for (int i = 0; i < B * N; ++i) b.tokens.push_back(int32_t(rng() % c.vocab));
  } else {
    std::normal_distribution<float> normal(0.f, 1.f);
    for (int i = 0; i < B * N * c.patch_dim; ++i) b.patches.push_back(normal(rng));
  }
  if (c.head == HeadKind::kLm) {
    // The next token, and a fresh one at the end of each sample.
    for (int i = 0; i < B * N; ++i) {
      b.targets.push_back((i + 1) % N ? b.tokens[i + 1] : int32_t(rng() % c.vocab));
    }
    return b;
  }
  for (int i = 0; i < B; ++i) b.targets.push_back(int32_t(rng() % c.num_classes));
  if (k.padded) {
    // One full sample, the others shorter; 3 < L = 10 makes sampled positions repeat.
    const int lengths[] = {N, 3, N / 2 + 1, 1};
    for (int i = 0; i < B; ++i) b.lengths.push_back(lengths[i % 4]);
  }
  return b;
}

// max |got - want| / max |want| over one tensor.
double rel_error(const Tensor<float>& got, const Tensor<float>& want) {
  double err = 0, scale = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    err = std::max(err, std::abs(double(got[i]) - double(want[i])));
    scale = std::max(scale, std::abs(double(want[i])));
  }
  return scale == 0 ? err : err / scale;
}

double rel(double got, double want) {
  return std::abs(got - want) / std::max(std::abs(want), 1e-30);
}

class TransformerStep : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    const std::string reason = no_device_reason();
    if (!reason.empty()) GTEST_SKIP() << reason;
  }
};

constexpr int kB = 4, kN = 16;
constexpr double kMaxNorm = 0.5, kLr = 1e-2;

TEST_P(TransformerStep, Fp32LossAndEveryGradientMatchTheCpu) {
  const Case& k = GetParam();
  const ModelConfig& config = k.config;
  const Batch batch = make_batch(k, kB, kN, 1);
  Transformer<float> cpu(config);
  Arena arena;
  const LossTerms want = cpu.forward_backward(arena, batch, /*step=*/3);

  DeviceTransformer<float> dev(config);
  const LossTerms got = dev.forward_backward(batch, 3);
  EXPECT_LT(rel(got.loss, want.loss), 1e-5) << got.loss << " vs " << want.loss;
  EXPECT_LT(rel(got.ce, want.ce), 1e-5);
  if (config.num_primal_layers() > 0) {
    EXPECT_LT(rel(got.ksvd, want.ksvd), 1e-5) << got.ksvd << " vs " << want.ksvd;
    ASSERT_EQ(got.ksvd_terms.size(), want.ksvd_terms.size());
  }
  EXPECT_EQ(got.predictions, want.predictions);

  ParameterStore<float>& host = dev.host_model().params();
  dev.download_grads(host);
  auto cpu_param = cpu.params().all().begin();
  for (const auto& p : host.all()) {
    ASSERT_EQ(p.name, cpu_param->name);
    EXPECT_LT(rel_error(p.grad, cpu_param->grad), 1e-5) << p.name;
    ++cpu_param;
  }
}

// Three steps of the trainer's path: forward_backward, clip_grad_norm, AdamW.
// eps = 1e-2 keeps the comparison well conditioned: with torch's 1e-8, Adam's first steps move
// every element by about lr times the sign of its gradient, so a gradient element within
// rounding of 0 (1e-7 of its tensor's largest) would step lr one way on the CPU and the other on
// the device. With eps = 1e-2 the update is a smooth function of the gradient (the kernel's
// arithmetic itself is checked bit for bit by KernelsFp32.AdamWIsBitwiseTheSharedElementUpdate).
TEST_P(TransformerStep, Fp32ParametersAfterThreeAdamWStepsMatchTheCpu) {
  const Case& k = GetParam();
  const ModelConfig& config = k.config;
  Transformer<float> cpu(config);
  AdamWOptions options;
  options.eps = 1e-2;
  AdamW<float> adam(cpu.params(), options);
  DeviceTransformer<float> dev(config);
  Arena arena;
  for (int step = 0; step < 3; ++step) {
    const Batch batch = make_batch(k, kB, kN, 10 + step);
    arena.reset();
    const LossTerms want = cpu.forward_backward(arena, batch, step);
    const double want_norm = clip_grad_norm(cpu.params(), kMaxNorm);
    adam.step(kLr);
    const LossTerms got = dev.forward_backward(batch, step);
    const double got_norm = dev.clip_grad_norm(kMaxNorm);
    dev.adamw_step(kLr, options);
    EXPECT_LT(rel(got.loss, want.loss), 1e-5) << "step " << step;
    EXPECT_LT(rel(got_norm, want_norm), 1e-5) << "step " << step;
    EXPECT_GT(want_norm, kMaxNorm) << "the clip should act in this test";
  }
  ParameterStore<float>& host = dev.host_model().params();
  dev.download(host);
  auto cpu_param = cpu.params().all().begin();
  for (const auto& p : host.all()) {
    EXPECT_LT(rel_error(p.value, cpu_param->value), 1e-5) << p.name;
    ++cpu_param;
  }
}

TEST_P(TransformerStep, Bf16LossWithin2eMinus2OfTheCpu) {
  const Case& k = GetParam();
  const ModelConfig& config = k.config;
  Transformer<float> cpu(config);
  AdamW<float> adam(cpu.params(), AdamWOptions{});
  DeviceTransformer<bf16> dev(config);
  Arena arena;
  for (int step = 0; step < 3; ++step) {
    const Batch batch = make_batch(k, kB, kN, 20 + step);
    arena.reset();
    const LossTerms want = cpu.forward_backward(arena, batch, step);
    clip_grad_norm(cpu.params(), kMaxNorm);
    adam.step(kLr);
    const LossTerms got = dev.forward_backward(batch, step);
    const double norm = dev.clip_grad_norm(kMaxNorm);
    dev.adamw_step(kLr);
    EXPECT_LT(rel(got.loss, want.loss), 2e-2)
        << "step " << step << ": " << got.loss << " vs " << want.loss;
    EXPECT_TRUE(std::isfinite(norm));
  }
}

// Two device models from the same config, fed the same batches, end with the same bits: the
// losses, the gradients and the parameters (fp32 and bf16).
template <typename T>
void expect_bitwise_repeatable(const Case& k) {
  const ModelConfig& config = k.config;
  DeviceTransformer<T> a(config), b(config);
  for (int step = 0; step < 2; ++step) {
    const Batch batch = make_batch(k, kB, kN, 30 + step);
    const LossTerms la = a.forward_backward(batch, step);
    const LossTerms lb = b.forward_backward(batch, step);
    EXPECT_EQ(std::memcmp(&la.loss, &lb.loss, sizeof la.loss), 0) << "step " << step;
    const double na = a.clip_grad_norm(kMaxNorm), nb = b.clip_grad_norm(kMaxNorm);
    EXPECT_EQ(std::memcmp(&na, &nb, sizeof na), 0);
    a.adamw_step(kLr);
    b.adamw_step(kLr);
  }
  ParameterStore<float>&ha = a.host_model().params(), &hb = b.host_model().params();
  a.download(ha);
  a.download_grads(ha);
  b.download(hb);
  b.download_grads(hb);
  const size_t bytes = sizeof(float) * size_t(ha.numel());
  EXPECT_EQ(std::memcmp(ha.values().data(), hb.values().data(), bytes), 0);
  EXPECT_EQ(std::memcmp(ha.grads().data(), hb.grads().data(), bytes), 0);
}

TEST_P(TransformerStep, TwoRunsAreBitwiseIdentical) {
  expect_bitwise_repeatable<float>(GetParam());
  expect_bitwise_repeatable<bf16>(GetParam());
}

// After two steps of one shape every request is served from the allocator's cache.
TEST_P(TransformerStep, NoDeviceAllocationAfterWarmUp) {
  const Case& k = GetParam();
  const ModelConfig& config = k.config;
  DeviceTransformer<bf16> dev(config);
  auto step = [&](int i) {
    dev.forward_backward(make_batch(k, kB, kN, 40 + i), i);
    dev.clip_grad_norm(kMaxNorm);
    dev.adamw_step(kLr);
  };
  step(0);
  step(1);
  const auto before = dev.allocator().stats();
  step(2);
  step(3);
  const auto after = dev.allocator().stats();
  EXPECT_EQ(after.source_allocations, before.source_allocations);
  EXPECT_GT(after.cache_hits, before.cache_hits);
}

// Host round trip: weights uploaded from a changed host store come back unchanged, and the
// device forward then computes the CPU model's loss with those weights.
TEST_P(TransformerStep, UploadDownloadRoundTrip) {
  const Case& k = GetParam();
  const ModelConfig& config = k.config;
  Transformer<float> cpu(config);
  std::mt19937 rng(5);
  std::normal_distribution<float> noise(0.f, 0.01f);
  Tensor<float> values = cpu.params().values();
  for (int64_t i = 0; i < values.numel(); ++i) values[i] += noise(rng);
  DeviceTransformer<float> dev(config);
  dev.upload(cpu.params());
  ParameterStore<float>& host = dev.host_model().params();
  dev.download(host);
  EXPECT_EQ(std::memcmp(host.values().data(), values.data(), sizeof(float) * values.numel()), 0);
  const Batch batch = make_batch(k, kB, kN, 50);
  Arena arena;
  const LossTerms want = cpu.forward(arena, batch, 0, /*training=*/false);
  const LossTerms got = dev.forward(batch, 0, /*training=*/false);
  EXPECT_LT(rel(got.loss, want.loss), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Configs, TransformerStep, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace primal::cuda
