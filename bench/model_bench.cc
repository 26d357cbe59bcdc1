// Forward+backward time and memory of the model, PRIMAL against SOFTMAX layers, and the
// achieved GEMM rate against this machine's measured sgemm peak.
//
//   model_bench [--threads T] [--reps R] [--case NAME] [--list]
//
// Prints one JSON line per case (and the sgemm peak first). Each case can run in its own
// process (--case) so that its peak resident memory is its own; bench/run_model_bench.sh
// does that and prints the table of docs/performance.md.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/blas.h"
#include "model/transformer.h"

namespace primal {
namespace {

using enum AttentionKind;
using Clock = std::chrono::steady_clock;

struct BenchCase {
  std::string name;
  AttentionKind kind;
  int B, N;
};

// The LRA-ListOps shape (C=64, H=2, 2 layers, F=128, s=20, m=10), N=2000 B=32, and the
// same model at B=8 over growing N.
std::vector<BenchCase> cases() {
  std::vector<BenchCase> out;
  for (AttentionKind k : {kPrimal, kSoftmax}) {
    const std::string name = k == kPrimal ? "primal" : "softmax";
    out.push_back({"listops_" + name, k, 32, 2000});
    for (int n : {1024, 2048, 4096, 8192})
      out.push_back({name + "_n" + std::to_string(n), k, 8, n});
  }
  return out;
}

ModelConfig listops_model(AttentionKind kind, int max_len) {
  ModelConfig c;
  c.head = HeadKind::kClassifier;
  c.input = InputKind::kTokens;
  c.vocab = 20;
  c.width = 64;
  c.heads = 2;
  c.mlp_width = 128;
  c.max_len = max_len;
  c.low_rank = 20;
  c.rank_multi = 10;
  c.layers = {kind, kind};
  c.eta = 0.05;
  c.pooling = Pooling::kMean;
  c.num_classes = 10;
  c.head_width = 128;
  return c;
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// kB from /proc/self/status ("VmRSS", "VmHWM").
long status_kb(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(field, 0) == 0) return std::stol(line.substr(std::strlen(field) + 1));
  return 0;
}

double sgemm_peak_gflops() {
  const int n = 2048;
  std::vector<float> a(size_t(n) * n, 1.f), b(a), c(a);
  double best = 1e30;
  for (int rep = 0; rep < 4; ++rep) {
    auto t = Clock::now();
    gemm(Trans::kNo, Trans::kNo, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
    best = std::min(best, seconds_since(t));
  }
  return 2.0 * n * n * n / best * 1e-9;
}

void run_case(const BenchCase& c, int reps) {
  ModelConfig config = listops_model(c.kind, c.N);
  Transformer<float> model(config);
  std::mt19937 gen(1);
  std::uniform_int_distribution<int> token(0, config.vocab - 1), label(0, 9);
  Batch batch;
  batch.B = c.B;
  batch.N = c.N;
  for (int i = 0; i < c.B * c.N; ++i) batch.tokens.push_back(token(gen));
  for (int i = 0; i < c.B; ++i) batch.targets.push_back(label(gen));
  // Peak memory of the steps: the resident high-water mark is reset here, after the model and
  // batch exist (as bench/torch_bench.py does), and read after the last step.
  const long rss_before = status_kb("VmRSS:");
  std::ofstream("/proc/self/clear_refs") << "5";
  Arena arena;
  arena.reset();
  model.forward_backward(arena, batch, 0);  // warm-up: the arena reaches its size
  std::vector<double> times;
  const uint64_t flops_before = gemm_flops.load();
  for (int r = 0; r < reps; ++r) {
    arena.reset();
    auto t = Clock::now();
    model.forward_backward(arena, batch, r + 1);
    times.push_back(seconds_since(t));
  }
  const double flops = double(gemm_flops.load() - flops_before) / reps;
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  const double param_mb = 2.0 * model.params().numel() * sizeof(float) / 1e6;
  std::printf(
      "{\"impl\":\"primal\",\"case\":\"%s\",\"attention\":\"%s\",\"B\":%d,\"N\":%d,"
      "\"threads\":%d,\"median_s\":%.4f,\"min_s\":%.4f,\"gemm_gflop\":%.3f,\"gflops\":%.2f,"
      "\"arena_peak_mb\":%.1f,\"params_grads_mb\":%.2f,\"peak_mb\":%.1f}\n",
      c.name.c_str(), c.kind == kPrimal ? "PRIMAL" : "SOFTMAX", c.B, c.N, omp_get_max_threads(),
      median, times.front(), flops * 1e-9, flops / median * 1e-9, arena.peak_bytes() / 1e6,
      param_mb, (status_kb("VmHWM:") - rss_before) / 1e3);
  std::fflush(stdout);
}

}  // namespace
}  // namespace primal

int main(int argc, char** argv) {
  int reps = 3;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--threads" && i + 1 < argc) {
      omp_set_num_threads(std::stoi(argv[++i]));
    } else if (arg == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::stoi(argv[++i]));
    } else if (arg == "--case" && i + 1 < argc) {
      only = argv[++i];
    } else if (arg == "--list") {
      for (const auto& c : primal::cases()) std::printf("%s\n", c.name.c_str());
      return 0;
    } else {
      std::fprintf(stderr, "usage: model_bench [--threads T] [--reps R] [--case NAME] [--list]\n");
      return 2;
    }
  }
  std::printf("{\"sgemm_peak_gflops\":%.1f,\"threads\":%d}\n", primal::sgemm_peak_gflops(),
              omp_get_max_threads());
  bool found = false;
  for (const auto& c : primal::cases()) {
    if (!only.empty() && c.name != only) continue;
    found = true;
    primal::run_case(c, reps);
  }
  if (!found) {
    std::fprintf(stderr, "model_bench: unknown case '%s' (see --list)\n", only.c_str());
    return 2;
  }
  return 0;
}
