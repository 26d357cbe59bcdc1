// Data parallelism on the device: comm/nccl/device_gradient_buckets.h under mpirun,
// one GPU per rank (labels gpu;mpi, run with 1 and 2 ranks). Every rank checks that it has a
// device of its own; where any rank has none, every rank reports SKIPPED with the reason.
//   (a) buckets over synthetic gradients equal one unbucketed NCCL average, for several bucket
//       sizes, contiguous and packed buckets, parameters marked in any order, two steps;
//   (b) a DP training step of DeviceTransformer<float>, each rank its share of the batch, the
//       buckets driven by on_grads_final and the KSVD sums summed over DP through NCCL: the
//       loss, the clipped norm and the parameters after 3 AdamW steps within 1e-5 of one
//       device run on the whole batch;
//   (c) the recorded order: buckets are issued while backward is still being enqueued.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "comm/nccl/device_gradient_buckets.h"
#include "comm/nccl/staged_all_reduce.h"
#include "core/cuda/allocator.h"
#include "model/cuda/transformer.h"
#include "tests/gpu/nccl_fixture.h"

namespace primal {
namespace {

// ---- the plan (host) ----------------------------------------------------------------------------

// Ranges of a model-like buffer in ready order: blocks of "layers" from the last one down, then
// pieces at both ends of the buffer (the embeddings and the head), with gaps between some.
std::vector<GradRange> model_like_ranges(int64_t& total) {
  int64_t at = 0;
  const GradRange emb{at, 700};
  at += 700 + 68;  // a gap
  const GradRange norm{at, 64};
  at += 64;
  std::vector<std::vector<GradRange>> layers(3);
  for (auto& layer : layers) {
    for (int64_t n : {1024, 32, 2048, 100, 640}) {
      layer.push_back({at, n});
      at += n;
    }
    at += 28;  // a gap after each layer
  }
  const GradRange head{at, 333};
  at += 333;
  total = at + 5;
  std::vector<GradRange> order;
  for (int l = 2; l >= 0; --l) order.insert(order.end(), layers[l].begin(), layers[l].end());
  order.insert(order.end(), {emb, norm, head});
  return order;
}

// ---- on the device ------------------------------------------------------------------------------

class NcclBuckets : public testing::NcclFixture {
 protected:
  NcclBuckets() : NcclFixture("dp") {}
};

std::vector<float> rank_values(int rank, int64_t n, int step) {
  std::mt19937_64 rng(1000 * step + rank);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// (a) The bucketed average equals one NCCL average of the whole buffer: bit for bit with 1 or
// 2 ranks (every element is x0 + x1 halved, in any order), within rounding with more. The gaps
// between ranges are left alone.
TEST_F(NcclBuckets, BucketedAverageEqualsOneUnbucketedAllReduce) {
  const int n = comm_->size(), r = comm_->rank();
  int64_t total = 0;
  const std::vector<GradRange> order = model_like_ranges(total);
  std::vector<char> covered(total, 0);
  for (const GradRange& g : order) std::fill_n(covered.begin() + g.offset, g.count, 1);
  for (size_t bytes : {size_t(1), size_t(4096), size_t(9000), size_t(1) << 30}) {
    cuda::DeviceBuffer<float> grads = upload(std::vector<float>(total, 0.f));
    DeviceGradientBuckets buckets(*comm_, grads.data(), total, order, stream_->get(), bytes);
    cuda::DeviceBuffer<float> whole = upload(std::vector<float>(total, 0.f));
    DeviceGradientBuckets reference(*comm_, whole.data(), total, order, stream_->get(), bytes);
    for (int step = 0; step < 2; ++step) {
      const std::vector<float> mine = rank_values(r, total, step);
      cuda::copy_to_device(grads.data(), mine.data(), grads.bytes(), stream_->get());
      cuda::copy_to_device(whole.data(), mine.data(), whole.bytes(), stream_->get());
      buckets.begin_backward();
      // The second step marks the parameters in reverse: nothing is issued before parameter 0,
      // then every bucket at once, still in bucket order.
      for (int k = 0; k < buckets.num_params(); ++k)
        buckets.mark_ready(step == 0 ? k : buckets.num_params() - 1 - k);
      buckets.wait_all();
      const std::vector<float> got = download(grads);  // on the compute stream, after the wait
      reference.all_reduce_unbucketed();
      const std::vector<float> want = download(whole);
      const std::vector<float> x0 = rank_values(0, total, step), x1 = rank_values(1, total, step);
      double err = 0, scale = 0;
      for (int64_t i = 0; i < total; ++i) {
        if (!covered[i]) {
          ASSERT_EQ(got[i], mine[i]) << "gap element " << i << " changed";
          continue;
        }
        if (n <= 2) {
          ASSERT_EQ(got[i], want[i]) << "element " << i << ", bucket_bytes " << bytes;
          // The host's x0 + x1 halved (or x0 alone).
          const float expect = n == 2 ? (x0[i] + x1[i]) * 0.5f : x0[i];
          ASSERT_EQ(got[i], expect) << i;
        }
        err = std::max(err, std::abs(double(got[i]) - want[i]));
        scale = std::max(scale, std::abs(double(want[i])));
      }
      EXPECT_LT(err, 1e-6 * scale) << "bucket_bytes " << bytes;
      // Issued in bucket order, each once, before the wait.
      buckets.synchronize();
      std::vector<int> issued, completed;
      for (const BucketEvent& e : buckets.events()) {
        if (e.kind == BucketEvent::kIssued) issued.push_back(e.index);
        if (e.kind == BucketEvent::kCompleted) completed.push_back(e.index);
      }
      ASSERT_EQ(int(issued.size()), buckets.num_buckets());
      ASSERT_EQ(issued, completed);
      for (int b = 0; b < buckets.num_buckets(); ++b) EXPECT_EQ(issued[b], b);
    }
  }
}

TEST_F(NcclBuckets, RefusesMisuse) {
  int64_t total = 0;
  const std::vector<GradRange> order = model_like_ranges(total);
  cuda::DeviceBuffer<float> grads = upload(std::vector<float>(total, 1.f));
  DeviceGradientBuckets buckets(*comm_, grads.data(), total, order, stream_->get(), 4096);
  buckets.begin_backward();
  EXPECT_THROW(buckets.mark_ready(buckets.num_params()), Error);
  EXPECT_THROW(buckets.wait_all(), Error) << "no parameter marked ready";
  for (int k = 0; k < buckets.num_params(); ++k) buckets.mark_ready(k);
  EXPECT_THROW(buckets.mark_ready(0), Error) << "marked twice";
  EXPECT_THROW(buckets.begin_backward(), Error) << "buckets in flight, no wait_all()";
  buckets.wait_all();
  buckets.begin_backward();
  buckets.synchronize();
}

// ---- a data-parallel training step --------------------------------------------------------------

using cuda::DeviceTransformer;
constexpr AttentionKind P = AttentionKind::kPrimal, S = AttentionKind::kSoftmax;

ModelConfig small_config(bool lm) {
  ModelConfig c;
  c.vocab = 37;
  c.width = 32;
  c.heads = 4;
  c.mlp_width = 48;
  c.max_len = 24;
  c.low_rank = 5;
  c.rank_multi = 2;
  c.layers = {P, S, P};
  c.eta = 0.5;  // a KSVD term large enough to show in every gradient it reaches
  c.dropout = 0.1;
  c.seed = 7;
  if (lm) {
    c.head = HeadKind::kLm;
  } else {
    // Tokens, MEAN pooling, padded samples; the head's parameters lie at the end of the
    // buffer, the embeddings at its start: their bucket is packed.
    c.head = HeadKind::kClassifier;
    c.input = InputKind::kTokens;
    c.pooling = Pooling::kMean;
    c.num_classes = 5;
    c.head_width = 24;
  }
  return c;
}

constexpr int kB = 4, kN = 16;
constexpr double kMaxNorm = 0.5, kLr = 1e-2;

Batch make_batch(const ModelConfig& c, uint64_t seed) {
  Batch b;
  b.B = kB;
  b.N = kN;
  b.sample_offset = int64_t(seed % 5) * kB;
  std::mt19937_64 rng(seed);
  for (int i = 0; i < kB * kN; ++i) b.tokens.push_back(int32_t(rng() % c.vocab));
  if (c.head == HeadKind::kLm) {
    for (int i = 0; i < kB * kN; ++i)
      b.targets.push_back((i + 1) % kN ? b.tokens[i + 1] : int32_t(rng() % c.vocab));
    return b;
  }
  for (int i = 0; i < kB; ++i) b.targets.push_back(int32_t(rng() % c.num_classes));
  const int lengths[] = {kN, 3, kN / 2 + 1, 1};
  for (int i = 0; i < kB; ++i) b.lengths.push_back(lengths[i % 4]);
  return b;
}

// Samples [first, first + count) of a batch, as the trainer gives a DP rank its share: the
// global sample index (dropout's key) moves with it.
Batch slice(const Batch& b, bool lm, int first, int count) {
  Batch s;
  s.B = count;
  s.N = b.N;
  s.sample_offset = b.sample_offset + first;
  s.tokens.assign(b.tokens.begin() + first * b.N, b.tokens.begin() + (first + count) * b.N);
  const int per = lm ? b.N : 1;
  s.targets.assign(b.targets.begin() + first * per, b.targets.begin() + (first + count) * per);
  if (!b.lengths.empty())
    s.lengths.assign(b.lengths.begin() + first, b.lengths.begin() + first + count);
  return s;
}

double rel(double got, double want) {
  return std::abs(got - want) / std::max(std::abs(want), 1e-30);
}

// The trainer's wiring (trainer/trainer.cc) for the device model: the ready order from the
// layers' slots, mark_ready from on_grads_final, the KSVD sums over DP (ksvd_sync GLOBAL).
struct DataParallel {
  DataParallel(DeviceTransformer<float>& model, DeviceCommunicator& dp, size_t bucket_bytes)
      : ksvd(dp, model.stream()) {
    ReadyOrder order = model.ready_order();
    ready_of_layer = std::move(order.of_layer);
    buckets = std::make_unique<DeviceGradientBuckets>(
        dp, model.params().grads(), model.params().numel(), std::move(order.ranges), model.stream(),
        bucket_bytes);
    const int n = dp.size();
    model.reduce_ksvd = [this, n](std::span<double> sums) {
      ksvd.all_reduce(sums, ReduceOp::kSum);
      divide_shared_ksvd_sums(sums, n, 1);
    };
    model.ksvd_data_grad_scale = n;
    model.on_grads_final = [this](int layer) {
      hook_calls.push_back({layer, int(buckets->events().size())});
      for (int i : ready_of_layer[layer + 1]) buckets->mark_ready(i);
    };
  }

  StagedAllReduce ksvd;
  std::unique_ptr<DeviceGradientBuckets> buckets;
  std::vector<std::vector<int>> ready_of_layer;  // [layer + 1] -> positions in ready order
  struct Hook {
    int layer;
    int events_before;  // bucket events recorded when the hook was called
  };
  std::vector<Hook> hook_calls;
};

void expect_data_parallel_equals_one_process(DeviceCommunicator& comm, bool lm,
                                             size_t bucket_bytes) {
  const int n = comm.size(), r = comm.rank();
  if (kB % n != 0) GTEST_SKIP() << kB << " samples do not split over " << n << " ranks";
  const int local = kB / n;
  const ModelConfig config = small_config(lm);
  em::AdamWOptions hyper;
  hyper.eps = 1e-2;  // as TransformerStep's 3-step test: a smooth function of the gradient

  DeviceTransformer<float> whole(config), part(config);
  DataParallel dp(part, comm, bucket_bytes);
  const int layers = int(config.layers.size());
  EXPECT_GT(dp.buckets->num_buckets(), bucket_bytes < 100000 ? layers : 0);
  for (int step = 0; step < 3; ++step) {
    const Batch batch = make_batch(config, 10 + step);
    const LossTerms want = whole.forward_backward(batch, step);
    const double want_norm = whole.clip_grad_norm(kMaxNorm);
    whole.adamw_step(kLr, hyper);

    dp.hook_calls.clear();
    dp.buckets->begin_backward();
    const LossTerms got = part.forward_backward(slice(batch, lm, r * local, local), step);
    dp.buckets->wait_all();
    const double got_norm = part.clip_grad_norm(kMaxNorm);  // after the wait, on the stream
    part.adamw_step(kLr, hyper);

    // The CE of each share averaged over DP (equal prediction counts); the KSVD is global.
    double terms[2] = {got.ce, got.ksvd};
    testing::world().all_reduce(terms, 2, ReduceOp::kAverage);
    EXPECT_LT(rel(terms[0], want.ce), 1e-5) << "step " << step;
    EXPECT_LT(rel(got.ksvd, want.ksvd), 1e-5) << "step " << step << ": the global KSVD";
    EXPECT_LT(rel(terms[1], got.ksvd), 1e-12) << "every rank forms the same KSVD";
    EXPECT_LT(rel(got_norm, want_norm), 1e-5) << "step " << step;
    EXPECT_GT(want_norm, kMaxNorm) << "the clip should act in this test";

    // (c) The hooks came in backward's order, and buckets were issued (enqueued on the
    // communication stream) before backward had enqueued its last kernels: the first bucket
    // holds only the last layer's gradients when buckets are smaller than a layer.
    ASSERT_EQ(int(dp.hook_calls.size()), layers + 1);
    for (int k = 0; k <= layers; ++k) EXPECT_EQ(dp.hook_calls[k].layer, layers - 1 - k);
    const std::vector<BucketEvent>& events = dp.buckets->events();
    auto issued_before_hook = [&](int k) {
      int issued = 0;
      for (int e = 0; e < dp.hook_calls[k].events_before; ++e)
        issued += events[e].kind == BucketEvent::kIssued;
      return issued;
    };
    // Every bucket made of layers' gradients only is issued before the hook of -1 (the
    // embeddings' backward is enqueued before that hook, after layer 0's).
    const int rest_first = dp.ready_of_layer[0].front();  // the first parameter of -1's group
    int layer_buckets = 0;
    for (int b = 0; b < dp.buckets->num_buckets(); ++b) {
      const auto& bucket = dp.buckets->bucket(b);
      layer_buckets += bucket.first_param + bucket.num_params <= rest_first;
    }
    EXPECT_EQ(issued_before_hook(layers), layer_buckets);
    if (bucket_bytes < 100000) {
      EXPECT_GE(layer_buckets, layers);
      EXPECT_GE(issued_before_hook(layers - 1), 1) << "no bucket issued before layer 0's backward";
    }
    int last_issue = -1, wait_begin = -1;
    for (int e = 0; e < int(events.size()); ++e) {
      if (events[e].kind == BucketEvent::kIssued) last_issue = e;
      if (events[e].kind == BucketEvent::kWaitBegin) wait_begin = e;
    }
    EXPECT_LT(last_issue, wait_begin);
    // On the device: each bucket's all-reduce ends after its gradients are ready, in order.
    dp.buckets->synchronize();
    const std::vector<DeviceBucketTimes> times = dp.buckets->device_times();
    ASSERT_EQ(int(times.size()), dp.buckets->num_buckets());
    for (size_t b = 0; b < times.size(); ++b) {
      EXPECT_LE(times[b].ready_ms, times[b].done_ms) << "bucket " << b;
      if (b > 0) {
        EXPECT_LE(times[b - 1].done_ms, times[b].done_ms);
      }
    }
  }
  ParameterStore<float>& a = whole.host_model().params();
  ParameterStore<float>& b = part.host_model().params();
  whole.download(a);
  part.download(b);
  auto pa = a.all().begin();
  for (const auto& p : b.all()) {
    double err = 0, scale = 0;
    for (int64_t i = 0; i < p.value.numel(); ++i) {
      err = std::max(err, std::abs(double(p.value[i]) - double(pa->value[i])));
      scale = std::max(scale, std::abs(double(pa->value[i])));
    }
    EXPECT_LT(scale == 0 ? err : err / scale, 1e-5) << p.name;
    ++pa;
  }
}

TEST_F(NcclBuckets, DataParallelLmStepEqualsOneProcess) {
  expect_data_parallel_equals_one_process(*comm_, /*lm=*/true, 8192);
  expect_data_parallel_equals_one_process(*comm_, /*lm=*/true,
                                          DeviceGradientBuckets::kDefaultBucketBytes);
}

TEST_F(NcclBuckets, DataParallelPaddedClassifierStepEqualsOneProcess) {
  expect_data_parallel_equals_one_process(*comm_, /*lm=*/false, 8192);
}

}  // namespace
}  // namespace primal
