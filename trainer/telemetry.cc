#include "trainer/telemetry.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>

#include "core/blas.h"
#include "core/error.h"
#include "model/attention_kinds.h"

namespace primal {
namespace {

using Clock = std::chrono::steady_clock;

std::string layer_tag(const std::string& prefix, int layer) {
  return prefix + "layer_" + std::to_string(layer);
}

// The norms' group of a parameter: layer_<i>, embed, norm or head.
std::string group_of(const Parameter<float>& p) {
  return p.layer >= 0 ? layer_tag("", p.layer) : p.name.substr(0, p.name.find('.'));
}

bool all_finite(const std::vector<double>& v) {
  return std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); });
}

// <logdir>/<name>, or <name>-2, -3, ... if that exists already: one directory per run.
std::string new_run_dir(const std::string& logdir, const std::string& name) {
  namespace fs = std::filesystem;
  fs::create_directories(logdir);
  std::string dir = logdir + "/" + name;
  for (int k = 2; fs::exists(dir); ++k) dir = logdir + "/" + name + "-" + std::to_string(k);
  fs::create_directories(dir);
  return dir;
}

std::string default_run_name(const std::string& config_path) {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
  std::string stem = std::filesystem::path(config_path).stem().string();
  if (stem.empty()) stem = "run";
  return stem + "-" + stamp;
}

}  // namespace

ModelFlops model_gemm_flops(const ModelConfig& c, int64_t B, int64_t N) {
  // docs/telemetry.md: R = B S rows (S = N + the CLS slot), every GEMM 2 M N K.
  const int64_t S = N + (c.has_cls() ? 1 : 0), R = B * S;
  const int64_t C = c.width, F = c.mlp_width;
  ModelFlops f;
  if (c.input == InputKind::kPatches) {
    // embed.patch: Linear(P -> C) on B N rows; its input needs no gradient: dW only.
    f.forward += 2 * B * N * c.patch_dim * C;
    f.backward += 2 * B * N * c.patch_dim * C;
  }
  int64_t mlp_forward = 0;
  for (AttentionKind kind : c.layers) {
    const AttentionFlops attention = attention_kind(kind).gemm_flops(c, B, S);
    mlp_forward += 4 * R * C * F;  // fc1, fc2
    f.forward += attention.forward;
    f.backward += attention.backward;
  }
  int64_t head_forward = 0;
  if (c.head == HeadKind::kLm) {
    head_forward = 2 * R * c.vocab * C;  // logits = x tok_emb^T
  } else {
    head_forward = 2 * B * int64_t(c.head_width) * (C + c.num_classes);  // fc1, fc2
  }
  // Every other product's backward is two of its size: d input and d weight.
  f.forward += mlp_forward + head_forward;
  f.backward += 2 * (mlp_forward + head_forward);
  return f;
}

double measure_sgemm_peak_gflops(std::vector<int> sizes) {
  double best = 0;
  for (int n : sizes) {
    std::vector<float> a(size_t(n) * n, 1.0f), b(a), c(a);
    double fastest = 1e30;
    for (int rep = 0; rep < 3; ++rep) {  // rep 0 warms up (threads, pages, caches)
      const auto t = Clock::now();
      gemm(Trans::kNo, Trans::kNo, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
      const double seconds = std::chrono::duration<double>(Clock::now() - t).count();
      if (rep > 0) fastest = std::min(fastest, seconds);
    }
    best = std::max(best, 2.0 * n * n * double(n) / fastest * 1e-9);
  }
  return best;
}

Telemetry::Telemetry(const LoadedConfig& config, int world_rank, int world_size,
                     TelemetryOptions options) {
  const config::Config& p = config.proto();
  const config::Logging& logging = p.logging();
  if (logging.peak_gflops() < 0) {
    throw Error(config.where("logging.peak_gflops"), "must be positive (or unset: measured), got " +
                                                         std::to_string(logging.peak_gflops()));
  }
  if (logging.histogram_every() < 0) {
    throw Error(config.where("logging.histogram_every"),
                "must be 0 (none) or positive, got " + std::to_string(logging.histogram_every()));
  }
  if (world_rank != 0 || logging.logdir().empty()) return;

  const ModelConfig model = config.model();
  lm_ = model.head == HeadKind::kLm;
  layers_ = int(model.layers.size());
  for (int i = 0; i < layers_; ++i) {
    if (model.layers[i] == AttentionKind::kPrimal) primal_layers_.push_back(i);
  }
  const int B = p.data().batch_size();
  const int N = options.positions > 0 ? options.positions : positions_per_sample(p);
  predictions_per_step_ = lm_ ? int64_t(B) * N : B;
  flops_per_step_ = model_gemm_flops(model, B, N).total();
  double peak = options.peak_gflops > 0 ? options.peak_gflops : logging.peak_gflops();
  if (!(peak > 0)) peak = measure_sgemm_peak_gflops();
  peak_flops_ = peak * 1e9 * std::max(1, world_size);
  histogram_every_ = logging.histogram_every();

  if (options.resume) {
    if (options.run_name.empty()) throw Error("Telemetry: resuming needs the run's name");
    run_dir_ = logging.logdir() + "/" + options.run_name;
    std::filesystem::create_directories(run_dir_);
  } else {
    const std::string& name = options.run_name;
    run_dir_ = new_run_dir(logging.logdir(), name.empty() ? default_run_name(config.path()) : name);
  }
  writer_ = std::make_unique<tensorboard::EventWriter>(run_dir_);
  event_file_ = writer_->path();
  writer_->add_scalar("perf/peak_gflops", peak_flops_ * 1e-9, 0);
  writer_->add_scalar("perf/model_gflop_per_step", double(flops_per_step_) * 1e-9, 0);
}

Telemetry::~Telemetry() {
  try {
    close();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "primal: telemetry: %s\n", e.what());
  }
}

void Telemetry::on_step(int64_t step, const StepMetrics& m, ParameterStore<float>* params) {
  if (!writer_) return;
  tensorboard::EventWriter& w = *writer_;
  w.add_scalar("train/loss", m.loss, step);
  w.add_scalar("train/ce", m.ce, step);
  w.add_scalar("train/ksvd", m.ksvd, step);
  for (size_t j = 0; j < m.ksvd_terms.size() && j < primal_layers_.size(); ++j) {
    w.add_scalar(layer_tag("train/ksvd_J/", primal_layers_[j]), m.ksvd_terms[j], step);
  }
  w.add_scalar("train/lr", m.lr, step);
  w.add_scalar("train/grad_norm", m.grad_norm, step);
  if (m.step_seconds > 0) {
    w.add_scalar(lm_ ? "perf/tokens_per_s" : "perf/samples_per_s",
                 double(predictions_per_step_) / m.step_seconds, step);
    w.add_scalar("perf/step_seconds", m.step_seconds, step);
    w.add_scalar("perf/mfu", double(flops_per_step_) / (m.step_seconds * peak_flops_), step);
  }
  if (params && writes_histograms(step)) {
    write_histograms(step, *params);
    next_histogram_ = (step / histogram_every_ + 1) * histogram_every_;
  }
}

void Telemetry::write_histograms(int64_t step, ParameterStore<float>& params) {
  tensorboard::EventWriter& w = *writer_;
  std::vector<double> values;
  for (int layer : primal_layers_) {
    Parameter<float>* lambda = params.find("layers." + std::to_string(layer) + ".attn.lambda");
    if (!lambda) continue;
    values.assign(lambda->value.data(), lambda->value.data() + lambda->value.numel());
    if (all_finite(values)) {
      w.add_histogram(layer_tag("hist/lambda/", layer), values.data(), values.size(), step);
    }
  }
  // Per tensor and per group (sums of squares, in parameter order).
  std::vector<double> param_norms, grad_norms;
  std::vector<std::string> groups;
  std::vector<double> group_param_sq, group_grad_sq;
  for (const Parameter<float>& p : params.all()) {
    double pv = 0, gv = 0;
    for (int64_t i = 0; i < p.value.numel(); ++i) pv += double(p.value[i]) * p.value[i];
    for (int64_t i = 0; i < p.grad.numel(); ++i) gv += double(p.grad[i]) * p.grad[i];
    param_norms.push_back(std::sqrt(pv));
    grad_norms.push_back(std::sqrt(gv));
    const std::string g = group_of(p);
    auto it = std::find(groups.begin(), groups.end(), g);
    if (it == groups.end()) {
      groups.push_back(g);
      group_param_sq.push_back(0);
      group_grad_sq.push_back(0);
      it = groups.end() - 1;
    }
    group_param_sq[it - groups.begin()] += pv;
    group_grad_sq[it - groups.begin()] += gv;
  }
  if (all_finite(param_norms)) {
    w.add_histogram("hist/param_norms", param_norms.data(), param_norms.size(), step);
  }
  if (all_finite(grad_norms)) {
    w.add_histogram("hist/grad_norms", grad_norms.data(), grad_norms.size(), step);
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    w.add_scalar("norms/param/" + groups[g], std::sqrt(group_param_sq[g]), step);
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    w.add_scalar("norms/grad/" + groups[g], std::sqrt(group_grad_sq[g]), step);
  }
}

void Telemetry::on_eval(int64_t step, const std::string& split, const EvalResult& r) {
  if (!writer_) return;
  tensorboard::EventWriter& w = *writer_;
  w.add_scalar(split + "/loss", r.loss, step);
  w.add_scalar(split + "/ce", r.ce, step);
  w.add_scalar(split + "/ksvd", r.ksvd, step);
  if (r.accuracy >= 0) {
    w.add_scalar(split + "/accuracy", r.accuracy, step);
  } else {
    w.add_scalar(split + "/perplexity", r.perplexity, step);
  }
  w.flush();
}

void Telemetry::flush() {
  if (writer_) writer_->flush();
}

void Telemetry::close() {
  if (!writer_) return;
  writer_->close();
  writer_.reset();
}

}  // namespace primal
