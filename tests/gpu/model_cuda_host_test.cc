// The host side of the device model, checked without a GPU (label unit): the Philox words the
// dropout kernels run equal core/random.h's generator, the dropout keys equal
// model/dropout.cc's masks, the device parameter layout holds the CPU ParameterStore's
// parameters (aligned for cuBLASLt), the token-row index of the embedding backward is a stable
// counting sort, and the encoder form's sampled positions are the CPU layer's.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "core/cuda/kernels_model.h"
#include "model/cuda/transformer.h"
#include "model/dropout.h"

namespace primal::cuda {
namespace {

TEST(PhiloxWords, UniformF32EqualsCounterRngBitForBit) {
  for (const uint64_t seed : {0ull, 1ull, 0xD0D0D0D0ull ^ 12345ull, ~0ull}) {
    for (const uint64_t stream : {0ull, 7ull, (3ull << 24) ^ (5ull << 4) ^ 2ull, ~0ull >> 3}) {
      const CounterRng rng(seed, stream);
      const PhiloxStream words = rng.philox_stream();
      for (const uint64_t base : {0ull, 1ull << 32, (1ull << 40) + 17}) {
        for (uint64_t i = base; i < base + 1000; ++i) {
          const float want = rng.uniform_f32(i), got = philox_uniform_f32(words, i);
          ASSERT_EQ(std::memcmp(&want, &got, sizeof want), 0) << "index " << i;
        }
      }
    }
  }
}

TEST(DeviceDropout, KeysGiveModelDropoutMasks) {
  const int B = 3, N = 5, C = 7;
  const double p = 0.3;
  Sequence seq{B, N, nullptr, true, /*seed=*/42, /*step=*/9, /*sample_offset=*/11, true};
  for (const DropoutSite site : {DropoutSite::kAttention, DropoutSite::kMlp}) {
    for (const int layer : {0, 3}) {
      std::vector<float> x(size_t(B) * N * C, 1.f);
      dropout_inplace(Tensor<float>(x.data(), {B, N, C}), p, seq, layer, site);
      const PhiloxStream stream = dropout_stream(seq.seed, seq.step, layer, site);
      const uint64_t first = uint64_t(seq.sample_offset) * N * C;
      const float scale = float(1.0 / (1.0 - p));
      int dropped = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        const float want = philox_uniform_f32(stream, first + i) >= float(p) ? 1.f * scale : 0.f;
        ASSERT_EQ(x[i], want) << "element " << i;
        dropped += want == 0.f;
      }
      EXPECT_GT(dropped, 0);  // the mask is not trivially all-keep
    }
  }
}

TEST(ParameterLayout, EqualsTheCpuParameterStore) {
  ModelConfig config;
  config.layers = {AttentionKind::kPrimal, AttentionKind::kSoftmax};
  Transformer<float> model(config);
  const ParameterStore<float>& store = model.params();
  const ParameterLayout layout(store);
  ASSERT_EQ(layout.entries().size(), store.all().size());
  const float* base = store.all().front().value.data();
  size_t i = 0;
  int64_t end = 0;
  for (const auto& p : store.all()) {
    const ParameterLayout::Entry& e = layout.entries()[i++];
    EXPECT_EQ(e.name, p.name);
    EXPECT_EQ(e.shape, p.shape);
    EXPECT_EQ(e.host_offset, p.value.data() - base);
    EXPECT_EQ(e.numel, p.value.numel());
    EXPECT_EQ(e.decay, p.weight_decay);
    EXPECT_EQ(e.offset % ParameterLayout::kAlign, 0) << e.name;  // aligned for cuBLASLt
    EXPECT_GE(e.offset, end) << e.name;                          // in order, no overlap
    EXPECT_LT(e.offset - end, ParameterLayout::kAlign) << e.name;
    end = e.offset + e.numel;
    EXPECT_EQ(&layout.at(p.name), &e);
  }
  EXPECT_EQ(layout.numel(), end);
  EXPECT_EQ(layout.host_numel(), store.numel());
  EXPECT_THROW(layout.at("layers.9.attn.we"), Error);
  // The decay runs are in order, alternate their flag, and each parameter lies inside a run of
  // its own flag.
  const auto& runs = layout.decay_runs();
  ASSERT_FALSE(runs.empty());
  for (size_t r = 1; r < runs.size(); ++r) {
    EXPECT_LE(runs[r - 1].end, runs[r].begin);
    EXPECT_NE(runs[r].decay, runs[r - 1].decay);
  }
  for (const auto& e : layout.entries()) {
    int inside = 0;
    for (const auto& run : runs) {
      if (e.offset >= run.begin && e.offset + e.numel <= run.end) {
        EXPECT_EQ(run.decay, e.decay) << e.name;
        ++inside;
      }
    }
    EXPECT_EQ(inside, 1) << e.name;
  }
}

// Under tensor parallelism the layout holds this rank's shards (SPEC §5): each entry has the
// store's local shape, full shape and sharding, and the buffers the local sizes.
TEST(ParameterLayout, HoldsThisRanksShardsUnderTensorParallelism) {
  ModelConfig config;
  config.layers = {AttentionKind::kPrimal, AttentionKind::kSoftmax};
  ShardLayout tp(1, 2);
  Transformer<float> model(config, &tp);
  const ParameterStore<float>& store = model.params();
  const ParameterLayout layout(store);
  ASSERT_EQ(layout.entries().size(), store.all().size());
  size_t i = 0, sharded = 0;
  for (const auto& p : store.all()) {
    const ParameterLayout::Entry& e = layout.entries()[i++];
    EXPECT_EQ(e.name, p.name);
    EXPECT_EQ(e.shape, p.shape);
    EXPECT_EQ(e.local_shape, p.local_shape);
    EXPECT_EQ(e.sharding.split, p.sharding.split);
    EXPECT_EQ(e.sharding.sum_grad_over_tp, p.sharding.sum_grad_over_tp);
    EXPECT_EQ(e.numel, p.local_shape.numel());
    if (!(e.local_shape == e.shape)) ++sharded;
  }
  EXPECT_GT(sharded, 0u);
  EXPECT_EQ(layout.host_numel(), store.numel());
  EXPECT_EQ(layout.at("layers.0.attn.we").local_shape[0], config.heads / 2);
}

TEST(TokenRows, StableCountingSort) {
  const int V = 11;
  std::mt19937 rng(3);
  std::vector<int32_t> tokens(200);
  for (auto& t : tokens) t = int32_t(rng() % (V - 2));  // tokens V-2, V-1 never occur
  std::vector<int32_t> offsets, rows;
  token_rows(tokens.data(), int64_t(tokens.size()), V, offsets, rows);
  ASSERT_EQ(offsets.size(), size_t(V) + 1);
  ASSERT_EQ(rows.size(), tokens.size());
  EXPECT_EQ(offsets.front(), 0);
  EXPECT_EQ(offsets.back(), int32_t(tokens.size()));
  for (int v = 0; v < V; ++v) {
    int64_t count = 0;
    for (int32_t t : tokens) count += t == v;
    EXPECT_EQ(offsets[v + 1] - offsets[v], count) << "token " << v;
    for (int32_t k = offsets[v]; k < offsets[v + 1]; ++k) {
      EXPECT_EQ(tokens[rows[k]], v);
      if (k > offsets[v]) {
        EXPECT_LT(rows[k - 1], rows[k]);  // rows in increasing order
      }
    }
  }
  tokens[5] = V;
  EXPECT_THROW(token_rows(tokens.data(), int64_t(tokens.size()), V, offsets, rows), Error);
  tokens[5] = -1;
  EXPECT_THROW(token_rows(tokens.data(), int64_t(tokens.size()), V, offsets, rows), Error);
}

// model/primal_attention.cc's encoder form: idx_l = floor(l (len - 1) / (L - 1)).
TEST(SampledPositions, SpreadOverTheRealPositions) {
  const int32_t lengths[] = {16, 3, 1};
  std::vector<int32_t> idx;
  sampled_positions(lengths, 3, 16, 10, idx);
  const std::vector<int32_t> want = {0, 1, 3, 5, 6, 8, 10, 11, 13, 15,  // len 16
                                     0, 0, 0, 0, 0, 1, 1,  1,  1,  2,   // len 3: repeats
                                     0, 0, 0, 0, 0, 0, 0,  0,  0,  0};  // len 1
  EXPECT_EQ(idx, want);
  sampled_positions(nullptr, 2, 5, 1, idx);  // L = 1: position 0; no lengths: all N
  EXPECT_EQ(idx, (std::vector<int32_t>{0, 0}));
  const int32_t empty[] = {0};
  EXPECT_THROW(sampled_positions(empty, 1, 4, 3, idx), Error);
}

}  // namespace
}  // namespace primal::cuda
