// telemetry_write_sample RUN_DIR MANIFEST: a Telemetry run of a tiny model into RUN_DIR (its
// logging.logdir is RUN_DIR's parent, its run name RUN_DIR's name), with the real losses of
// three forward/backward passes, an evaluation and the histograms of steps 1 and 2; MANIFEST
// lists what the event file must hold, in record order, in the format of tb_write_sample
// (tests/tensorboard) so that tensorboard_reads_events.py checks it with the real package:
//   file <event file path>
//   scalar <tag> <step> <value as float32, %a>
//   histogram <tag> <step> <n> <values, %a>
// The expected values are computed here from the model: the MFU's FLOPs from core/blas.h's GEMM
// counter, not from the formula.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/blas.h"
#include "core/error.h"
#include "model/transformer.h"
#include "trainer/telemetry.h"

namespace {

using namespace primal;
namespace fs = std::filesystem;

struct Manifest {
  std::FILE* f;
  void scalar(const std::string& tag, int64_t step, double value) {
    std::fprintf(f, "scalar %s %lld %a\n", tag.c_str(), (long long)step, double(float(value)));
  }
  void histogram(const std::string& tag, int64_t step, const std::vector<double>& values) {
    std::fprintf(f, "histogram %s %lld %zu", tag.c_str(), (long long)step, values.size());
    for (double v : values) std::fprintf(f, " %a", v);
    std::fprintf(f, "\n");
  }
};

Batch batch_of_step(int step, int B, int N, int vocab) {
  Batch b;
  b.B = B;
  b.N = N;
  uint64_t state = 977 * uint64_t(step) + 13;
  for (int i = 0; i < B * N; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    b.tokens.push_back(int32_t((state >> 33) % vocab));
    b.targets.push_back(int32_t((state >> 45) % vocab));
  }
  return b;
}

double sum_of_squares(const Tensor<float>& t) {
  double sq = 0;
  for (int64_t i = 0; i < t.numel(); ++i) sq += double(t[i]) * double(t[i]);
  return sq;
}
double norm_of(const Tensor<float>& t) {
  return std::sqrt(sum_of_squares(t));
}

int run(const std::string& run_dir, const std::string& manifest_path) {
  const fs::path dir(run_dir);
  fs::create_directories(dir.parent_path());
  const std::string corpus = run_dir + ".corpus.txt", config_path = run_dir + ".pbtxt";
  std::ofstream(corpus) << std::string(1000, 'x');
  const int B = 2, N = 8;
  std::ofstream(config_path) << "model {\n  vocab: 256\n  width: 16\n  heads: 2\n  mlp_width: 24\n"
                                "  max_len: 8\n  low_rank: 3\n  rank_multi: 2\n"
                                "  layers: [PRIMAL, SOFTMAX]\n}\n"
                                "data {\n  path: \""
                             << corpus << "\"\n  seq_len: " << N << "\n  batch_size: " << B
                             << "\n}\ntrain {\n  steps: 3\n}\nschedule {\n  warmup_steps: 1\n}\n"
                                "logging {\n  logdir: \""
                             << dir.parent_path().string()
                             << "\"\n  peak_gflops: 25\n  histogram_every: 2\n}\n";
  const LoadedConfig config = LoadedConfig::load(config_path, {});
  Transformer<float> model(config.model());
  Telemetry telemetry(config, 0, 1, {.run_name = dir.filename().string()});
  if (telemetry.run_dir() != run_dir) throw Error(run_dir, "became " + telemetry.run_dir());

  std::FILE* f = std::fopen(manifest_path.c_str(), "w");
  if (!f) throw Error(manifest_path, "cannot create the manifest");
  Manifest m{f};
  std::fprintf(f, "file %s\n", telemetry.event_file().c_str());

  Arena arena;
  int64_t flops = -1;
  for (int step = 1; step <= 3; ++step) {
    const Batch batch = batch_of_step(step, B, N, 256);
    arena.reset();
    const uint64_t before = gemm_flops.load();
    const auto t0 = std::chrono::steady_clock::now();
    const LossTerms t = model.forward_backward(arena, batch, step);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (flops < 0) {
      flops = int64_t(gemm_flops.load() - before);
      m.scalar("perf/peak_gflops", 0, 25.0);
      m.scalar("perf/model_gflop_per_step", 0, double(flops) * 1e-9);
    }
    const double grad_norm = norm_of(model.params().grads()), lr = 1e-3 / step;
    const std::vector<double> terms(t.ksvd_terms.begin(), t.ksvd_terms.end());
    if (terms.size() != 1) throw Error("want one PRIMAL layer's J");

    telemetry.on_step(step,
                      {.loss = t.loss,
                       .ce = t.ce,
                       .ksvd = t.ksvd,
                       .ksvd_terms = terms,
                       .lr = lr,
                       .grad_norm = grad_norm,
                       .step_seconds = seconds},
                      &model.params());
    m.scalar("train/loss", step, t.loss);
    m.scalar("train/ce", step, t.ce);
    m.scalar("train/ksvd", step, t.ksvd);
    m.scalar("train/ksvd_J/layer_0", step, terms[0]);
    m.scalar("train/lr", step, lr);
    m.scalar("train/grad_norm", step, grad_norm);
    m.scalar("perf/tokens_per_s", step, B * N / seconds);
    m.scalar("perf/step_seconds", step, seconds);
    m.scalar("perf/mfu", step, double(flops) / (seconds * 25e9));
    if (step == 1 || step == 2) {  // histogram_every 2: the first call, then step 2
      const Tensor<float>& lambda = model.params().find("layers.0.attn.lambda")->value;
      m.histogram("hist/lambda/layer_0", step,
                  std::vector<double>(lambda.data(), lambda.data() + lambda.numel()));
      std::vector<double> values, grads;
      for (const auto& p : model.params().all()) {
        values.push_back(norm_of(p.value));
        grads.push_back(norm_of(p.grad));
      }
      m.histogram("hist/param_norms", step, values);
      m.histogram("hist/grad_norms", step, grads);
      // Groups in the order of the parameters: embed, layer_0, layer_1, norm.
      for (const char* kind : {"param", "grad"}) {
        for (const char* group : {"embed", "layer_0", "layer_1", "norm"}) {
          const std::string prefix = std::string(group) == "layer_0"   ? "layers.0."
                                     : std::string(group) == "layer_1" ? "layers.1."
                                                                       : std::string(group) + ".";
          double sq = 0;
          for (const auto& p : model.params().all()) {
            if (p.name.rfind(prefix, 0) != 0) continue;
            sq += sum_of_squares(std::string(kind) == "param" ? p.value : p.grad);
          }
          m.scalar(std::string("norms/") + kind + "/" + group, step, std::sqrt(sq));
        }
      }
    }
  }
  EvalResult r{.loss = 3.25, .ce = 3.125, .ksvd = 1.5, .perplexity = std::exp(3.125)};
  telemetry.on_eval(3, "val", r);
  m.scalar("val/loss", 3, r.loss);
  m.scalar("val/ce", 3, r.ce);
  m.scalar("val/ksvd", 3, r.ksvd);
  m.scalar("val/perplexity", 3, r.perplexity);
  telemetry.close();
  if (telemetry.flops_per_step() != flops) {
    throw Error("model_gemm_flops " + std::to_string(telemetry.flops_per_step()) + " != counted " +
                std::to_string(flops));
  }
  if (std::fclose(f) != 0) throw Error(manifest_path, "cannot write the manifest");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: telemetry_write_sample RUN_DIR MANIFEST\n");
    return 2;
  }
  try {
    return run(argv[1], argv[2]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
