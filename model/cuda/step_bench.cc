// primal_step_bench: whole training steps of the Transformer on one GPU, bf16 mixed
// precision: forward, backward, global-norm clip, AdamW, as DeviceTransformer<bf16> runs them.
//   configs: "kjv"   configs/lm_kjv_primalformer.pbtxt's model (4 layers, C=256, H=4, F=512,
//                    s=20, V=256)
//            "large" 12 layers, C=768, H=12, F=3072, s=32, V=256
//   every layer PRIMAL (causal) or every layer SOFTMAX (causal, the flash kernels of
//   core/cuda/flash_attention.h), N = 32K, 16K, 4K, 1K (the long ones first, so that a time
//   budget cuts the short ones), with B = max(1, 16384 / N): 16K tokens per step (32K at N=32K).
// Reports ms per step, tokens/s, peak device memory (the model allocator's; a row that runs out
// of device memory says so), and model FLOP utilisation (docs/telemetry.md):
//   MFU = model FLOPs of one step / (step seconds * peak),
// the FLOPs of the GEMMs counted by Blas (2 M N K per product the step issues: the products the
// CPU model counts, at the size the kernels run them) plus, for SOFTMAX, the attention products
// of the flash kernels over the tiles they visit (flash_attention_flops: the causal half, without
// the backward's recomputation). The peak is the bf16 cuBLASLt GEMM rate measured here first
// on random operands (4096^3 and 8192^3, the better; constant operands read about 13% high).
// Exits 77 without a GPU.
//   primal_step_bench [--quick | --lengths N,N,...] [--budget-s S]
//     --quick: N up to 4K;  --lengths: these N only, in this order (at most 32768);
//     --budget-s: rows not started after S seconds are reported as skipped (default 120), so
//     that scripts/gpu_check.sh stays within each of its stages.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/cuda/check.h"
#include "core/cuda/flash_attention.h"
#include "model/attention_kinds.h"
#include "model/cuda/transformer.h"

namespace primal::cuda {
namespace {

// The longest sequence a row may ask for: the models' max_len.
constexpr int kMaxLength = 32768;

struct Row {
  std::string config, kind;
  int N = 0, B = 0;
  double ms = 0, tokens_per_s = 0, tflop_per_step = 0, mfu = 0, peak_gib = 0;
  std::string note;
};

double measure_bf16_peak_tflops() {
  Stream stream;
  CachingAllocator alloc;
  Blas blas(stream);
  // Random operands: the tensor cores draw less power on constant data and run faster on it.
  const int max_n = 8192;
  const int64_t elements = int64_t(max_n) * max_n;
  DeviceBuffer<bf16> a(alloc, elements, stream), b(alloc, elements, stream),
      c(alloc, elements, stream);
  std::vector<bf16> host(static_cast<size_t>(elements));
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1, 1);
  for (DeviceBuffer<bf16>* operand : {&a, &b}) {
    for (bf16& x : host) x = __float2bfloat16_rn(dist(rng));
    copy_to_device(operand->data(), host.data(), operand->bytes(), stream);
    stream.synchronize();
  }
  double best = 0;
  for (const int n : {4096, max_n}) {
    auto gemm = [&] {
      blas.gemm_lt<bf16, bf16>(Trans::kNo, Trans::kYes, n, n, n, a.data(), n, b.data(), n, nullptr,
                               0.f, c.data(), n);
    };
    gemm();
    gemm();
    const int iters = 10;
    Event start(true), stop(true);
    start.record(stream);
    for (int i = 0; i < iters; ++i) gemm();
    stop.record(stream);
    stop.synchronize();
    best = std::max(best, 2.0 * n * n * n * iters / (stop.elapsed_ms(start) * 1e9));
  }
  return best;
}

ModelConfig bench_config(const std::string& name, AttentionKind kind) {
  ModelConfig c;
  c.head = HeadKind::kLm;
  c.vocab = 256;
  c.max_len = kMaxLength;
  c.eta = 0.05;
  c.dropout = 0.0;
  c.seed = 1;
  if (name == "kjv") {
    c.width = 256;
    c.heads = 4;
    c.mlp_width = 512;
    c.low_rank = 20;
    c.layers.assign(4, kind);
  } else {
    c.width = 768;
    c.heads = 12;
    c.mlp_width = 3072;
    c.low_rank = 32;
    c.layers.assign(12, kind);
  }
  return c;
}

Batch bench_batch(int B, int N, int V) {
  Batch b;
  b.B = B;
  b.N = N;
  std::mt19937 rng(1);
  b.tokens.resize(size_t(B) * N);
  b.targets.resize(size_t(B) * N);
  for (auto& t : b.tokens) t = int32_t(rng() % V);
  for (auto& t : b.targets) t = int32_t(rng() % V);
  return b;
}

// "32768,16384" -> {32768, 16384}; empty when any entry is not a length in [1, kMaxLength].
std::vector<int> parse_lengths(const char* list) {
  std::vector<int> lengths;
  for (const char* p = list; *p != '\0';) {
    char* end = nullptr;
    const long n = std::strtol(p, &end, 10);
    if (end == p || n < 1 || n > kMaxLength || (*end != ',' && *end != '\0')) return {};
    lengths.push_back(int(n));
    p = *end == ',' ? end + 1 : end;
  }
  return lengths;
}

int run(int argc, char** argv) {
  std::vector<int> lengths = {32768, 16384, 4096, 1024};
  double budget_s = 120;
  auto usage = [] {
    std::fprintf(stderr,
                 "usage: primal_step_bench [--quick | --lengths N,N,... (each 1..%d)] "
                 "[--budget-s S]\n",
                 kMaxLength);
    return 2;
  };
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      lengths = {4096, 1024};
    } else if (std::strcmp(argv[i], "--lengths") == 0 && i + 1 < argc) {
      lengths = parse_lengths(argv[++i]);
      if (lengths.empty()) return usage();
    } else if (std::strcmp(argv[i], "--budget-s") == 0 && i + 1 < argc) {
      budget_s = std::atof(argv[++i]);
    } else {
      return usage();
    }
  }
  const std::string reason = no_device_reason();
  if (!reason.empty()) {
    std::fprintf(stderr, "primal_step_bench: %s\n", reason.c_str());
    return 77;
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed_s = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  const DeviceInfo info = device_info(current_device());
  std::printf("device: %s (sm_%d%d, %d SMs, %.0f GiB)\n", info.name.c_str(), info.major, info.minor,
              info.multiprocessors, double(info.memory_bytes) / (1 << 30));
  const double peak = measure_bf16_peak_tflops();
  std::printf("bf16 GEMM peak measured: %.1f TFLOP/s (the MFU denominator)\n", peak);
  std::fflush(stdout);

  const int64_t tokens_per_step = 16384;
  std::vector<Row> rows;
  // One model per (config, attention), kept from one length to the next (its cache emptied).
  std::map<std::string, std::unique_ptr<DeviceTransformer<bf16>>> models;
  for (const int N : lengths) {
    for (const std::string config_name : {"kjv", "large"}) {
      for (const AttentionKind kind : {AttentionKind::kPrimal, AttentionKind::kSoftmax}) {
        const std::string kind_name = attention_kind(kind).name;
        const ModelConfig config = bench_config(config_name, kind);
        std::unique_ptr<DeviceTransformer<bf16>>& model = models[config_name + kind_name];
        Row row;
        row.config = config_name;
        row.kind = kind_name;
        row.N = N;
        row.B = int(std::max<int64_t>(1, tokens_per_step / N));
        if (elapsed_s() > budget_s) {
          row.note = "skipped: time budget";
          rows.push_back(row);
          continue;
        }
        try {
          if (!model) model = std::make_unique<DeviceTransformer<bf16>>(config);
          const Batch batch = bench_batch(row.B, N, config.vocab);
          int64_t step = 0;
          auto train_step = [&] {
            model->forward_backward(batch, step++);
            model->clip_grad_norm(1.0);
            model->adamw_step(1e-4);
          };
          model->allocator().reset_peak();
          train_step();  // warm-up: the allocator's cache fills
          const uint64_t flops_before = model->blas().flops();
          train_step();
          double flops = double(model->blas().flops() - flops_before);
          if (kind == AttentionKind::kSoftmax)
            flops += double(config.layers.size()) *
                     flash_attention_flops(true, row.B, N, config.heads,
                                           config.width / config.heads, true);
          const int iters = N >= 8192 ? 2 : 3;
          Event start(true), stop(true);
          start.record(model->stream());
          for (int i = 0; i < iters; ++i) train_step();
          stop.record(model->stream());
          stop.synchronize();
          row.ms = stop.elapsed_ms(start) / iters;
          row.tokens_per_s = double(row.B) * N / (row.ms * 1e-3);
          row.tflop_per_step = flops / 1e12;
          row.mfu = flops / (row.ms * 1e-3) / (peak * 1e12);
          row.peak_gib = double(model->allocator().stats().peak_in_use) / (1 << 30);
        } catch (const std::exception& e) {
          // Out of device memory among others: the allocator's message says so.
          row.note = std::string("failed: ") + e.what();
          model.reset();  // a fresh model (and cache) for the next length
        }
        if (model) model->allocator().empty_cache();
        std::printf(
            "%-6s %-8s N=%-6d B=%-3d %10.2f ms/step %12.0f tok/s  %8.3f TFLOP/step  MFU %5.1f%%  "
            "%6.1f GiB  %s\n",
            row.config.c_str(), row.kind.c_str(), row.N, row.B, row.ms, row.tokens_per_s,
            row.tflop_per_step, 100 * row.mfu, row.peak_gib, row.note.c_str());
        std::fflush(stdout);
        rows.push_back(row);
      }
    }
  }
  // The table by config and attention, N ascending.
  std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    return std::tie(a.config, a.kind, a.N) < std::tie(b.config, b.kind, b.N);
  });

  std::printf(
      "\n| config | attention | N | B | ms/step | tokens/s | TFLOP/step | MFU | peak GiB | PRIMAL "
      "speed-up |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
  for (const Row& r : rows) {
    std::string speedup;
    if (r.kind == "SOFTMAX" && r.ms > 0) {
      for (const Row& p : rows) {
        if (p.config == r.config && p.kind == "PRIMAL" && p.N == r.N && p.ms > 0) {
          char buf[32];
          std::snprintf(buf, sizeof buf, "%.2fx", r.ms / p.ms);
          speedup = buf;
        }
      }
    }
    if (!r.note.empty()) {
      std::printf("| %s | %s | %d | %d | | | | | | %s |\n", r.config.c_str(), r.kind.c_str(), r.N,
                  r.B, r.note.c_str());
    } else {
      std::printf("| %s | %s | %d | %d | %.2f | %.0f | %.3f | %.1f%% | %.1f | %s |\n",
                  r.config.c_str(), r.kind.c_str(), r.N, r.B, r.ms, r.tokens_per_s,
                  r.tflop_per_step, 100 * r.mfu, r.peak_gib, speedup.c_str());
    }
  }
  std::printf(
      "\nstep = forward + backward + clip + AdamW, bf16 mixed precision; MFU against the "
      "measured bf16 GEMM peak %.1f TFLOP/s\n",
      peak);
  return 0;
}

}  // namespace
}  // namespace primal::cuda

int main(int argc, char** argv) {
  try {
    return primal::cuda::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "primal_step_bench: %s\n", e.what());
    return 1;
  }
}
