#include "trainer/trainer.h"

#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "data/fashion_mnist.h"
#include "data/listops.h"
#include "data/text_dataset.h"
#include "trainer/grad_clip.h"
#include "trainer/safetensors.h"

namespace primal {
namespace {

using Clock = std::chrono::steady_clock;

DataOrder order_of(const config::Data& d) {
  return d.order() == config::Data::SEQUENTIAL ? DataOrder::kSequential : DataOrder::kRandom;
}

ScheduleOptions schedule_of(const config::Config& c) {
  ScheduleOptions s;
  s.lr = c.optimizer().lr();
  s.warmup_steps = c.schedule().warmup_steps();
  s.total_steps = c.train().steps();
  s.min_lr = c.schedule().min_lr();
  switch (c.schedule().kind()) {
    case config::Schedule::CONSTANT: s.kind = ScheduleOptions::kConstant; break;
    case config::Schedule::COSINE: s.kind = ScheduleOptions::kCosine; break;
    case config::Schedule::LINEAR: s.kind = ScheduleOptions::kLinear; break;
    case config::Schedule::INVERSE_SQRT: s.kind = ScheduleOptions::kInverseSqrt; break;
  }
  validate(s);
  return s;
}

AdamWOptions adamw_of(const config::Optimizer& o) {
  AdamWOptions a;
  a.beta1 = o.beta1();
  a.beta2 = o.beta2();
  a.eps = o.eps();
  a.weight_decay = o.weight_decay();
  return a;
}

std::string duration(double seconds) {
  const long s = long(seconds);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%ldh%02ldm", s / 3600, s % 3600 / 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%ldm%02lds", s / 60, s % 60);
  }
  return buf;
}

}  // namespace

std::unique_ptr<Dataset> make_dataset(const LoadedConfig& config) {
  const config::Data& d = config.proto().data();
  const uint64_t seed = config.proto().train().seed();
  switch (d.kind()) {
    case config::Data::TEXT:
      return std::make_unique<TextDataset>(d.path(), d.seq_len(), seed, order_of(d),
                                           d.val_fraction(), d.test_fraction());
    case config::Data::FASHION_MNIST:
      return std::make_unique<FashionMnist>(d.path(), config.proto().model().patch_size(), seed,
                                            order_of(d));
    case config::Data::LISTOPS:
      if (config.proto().model().vocab() < kListOpsVocab) {
        throw Error(config.where("model.vocab"),
                    "ListOps needs vocab >= " + std::to_string(kListOpsVocab));
      }
      return std::make_unique<ListOps>(d.seq_len(), seed, order_of(d), d.listops_train_size(),
                                       d.listops_eval_size(), d.listops_eval_size(),
                                       d.listops_min_len());
  }
  throw Error(config.where("data.kind"), "unknown data kind");
}

Trainer::Trainer(const LoadedConfig& config)
    : config_(config),
      proto_(config.proto()),
      data_(make_dataset(config)),
      model_(config.model()),
      optimizer_(model_.params(), adamw_of(proto_.optimizer())),
      schedule_(schedule_of(proto_)),
      run_dir_(proto_.logging().dir()),
      tty_(isatty(STDOUT_FILENO)) {
  if (proto_.train().threads() > 0) omp_set_num_threads(proto_.train().threads());
  const int B = proto_.data().batch_size();
  predictions_per_step_ = model_.config().head == HeadKind::kLm
                              ? int64_t(B) * proto_.data().seq_len()
                              : B;
}

Trainer::StepResult Trainer::train_step(int64_t step) {
  const int global = proto_.data().batch_size();
  const int micro_steps = proto_.optimizer().accumulation_steps();
  const int micro = global / micro_steps;
  StepResult r;
  r.lr = learning_rate(schedule_, step);
  model_.params().zero_grads();
  // Gradient accumulation: micro-batch k is the slice [k*micro, (k+1)*micro) of the step's
  // global batch, so the samples do not depend on the accumulation setting.
  for (int k = 0; k < micro_steps; ++k) {
    data_->train_batch(step, int64_t(k) * micro, micro, global, batch_);
    arena_.reset();
    const LossTerms t = model_.forward(arena_, batch_, step);
    model_.backward(arena_);
    r.loss += t.loss / micro_steps;
    r.ce += t.ce / micro_steps;
    r.ksvd += t.ksvd / micro_steps;
  }
  if (micro_steps > 1) {
    Tensor<float> g = model_.params().grads();
    const float scale = 1.0f / float(micro_steps);
    for (int64_t i = 0; i < g.numel(); ++i) g[i] *= scale;
  }
  r.grad_norm = global_grad_norm(model_.params());
  if (!std::isfinite(r.loss) || !std::isfinite(r.grad_norm)) {
    if (proto_.train().on_nonfinite() == config::Train::STOP) {
      throw NonFiniteLoss("train: step " + std::to_string(step) + ": the loss is " +
                  std::to_string(r.loss) + " and the gradient norm " +
                  std::to_string(r.grad_norm) +
                  "; lower optimizer.lr, or set train.on_nonfinite: SKIP to drop such steps");
    }
    r.skipped = true;
    return r;
  }
  if (proto_.optimizer().grad_clip() > 0) {
    clip_grads_to_norm(model_.params(), r.grad_norm, proto_.optimizer().grad_clip());
  }
  optimizer_.step(r.lr);
  return r;
}

void Trainer::log_step(int64_t step, const StepResult& r, double step_seconds, double elapsed) {
  const int64_t steps = proto_.train().steps();
  const double rate = double(predictions_per_step_) / step_seconds;
  const bool lm = model_.config().head == HeadKind::kLm;
  nlohmann::ordered_json j = {{"step", step + 1},         {"loss", r.loss},
                              {"ce", r.ce},               {"ksvd", r.ksvd},
                              {"lr", r.lr},               {"grad_norm", r.grad_norm},
                              {"skipped", r.skipped},     {lm ? "tokens_per_s" : "samples_per_s", rate},
                              {"elapsed_s", elapsed}};
  std::fprintf(metrics_, "%s\n", j.dump().c_str());
  std::fflush(metrics_);
  const double eta = elapsed / double(step + 1) * double(steps - step - 1);
  char line[256];
  std::snprintf(line, sizeof(line),
                "step %6lld/%lld | loss %.4f | ce %.4f | ksvd %.3e | lr %.2e | gnorm %.3f | %.0f %s | "
                "eta %s%s",
                (long long)(step + 1), (long long)steps, r.loss, r.ce, r.ksvd, r.lr, r.grad_norm, rate,
                lm ? "tok/s" : "samples/s", duration(eta).c_str(), r.skipped ? " | SKIPPED" : "");
  if (tty_) {
    const int width = 20, done = int(width * (step + 1) / steps);
    std::printf("\r[%s%s] %s\033[K", std::string(done, '#').c_str(),
                std::string(width - done, '.').c_str(), line);
    if (step + 1 == steps) std::printf("\n");
  } else {
    std::printf("%s\n", line);
  }
  std::fflush(stdout);
}

EvalResult Trainer::evaluate_and_log(int64_t step) {
  EvalResult r = evaluate(model_, eval_arena_, *data_, DataSplit::kVal,
                          proto_.data().batch_size(), proto_.train().eval_batches());
  const std::string json = eval_json(r, "val", step);
  std::fprintf(metrics_, "%s\n", json.c_str());
  std::fflush(metrics_);
  if (tty_) std::printf("\n");
  if (r.accuracy >= 0) {
    std::printf("eval  step %lld | val loss %.4f | ce %.4f | accuracy %.4f\n", (long long)step,
                r.loss, r.ce, r.accuracy);
  } else {
    std::printf("eval  step %lld | val loss %.4f | ce %.4f nats/token | perplexity %.3f\n",
                (long long)step, r.loss, r.ce, r.perplexity);
  }
  std::fflush(stdout);
  return r;
}

EvalResult Trainer::run() {
  std::filesystem::create_directories(run_dir_);
  const std::string metrics_path = run_dir_ + "/metrics.jsonl";
  metrics_ = std::fopen(metrics_path.c_str(), "w");
  if (!metrics_) throw Error(metrics_path, "cannot open for writing");
  const int64_t steps = proto_.train().steps(), every = proto_.train().eval_every();
  std::printf("primal train: %s | %lld parameters | %d threads | %lld steps -> %s\n",
              config_.path().c_str(), (long long)model_.params().numel(), omp_get_max_threads(),
              (long long)steps, run_dir_.c_str());
  evaluate_and_log(0);
  const auto start = Clock::now();
  double window_seconds = 0;
  for (int64_t step = 0; step < steps; ++step) {
    const auto t0 = Clock::now();
    const StepResult r = train_step(step);
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    window_seconds += seconds;
    const int64_t log_every = proto_.train().log_every();
    if ((step + 1) % log_every == 0 || step + 1 == steps || r.skipped) {
      const int64_t in_window = (step + 1) % log_every == 0 ? log_every : (step + 1) % log_every;
      log_step(step, r, window_seconds / double(in_window),
               std::chrono::duration<double>(Clock::now() - start).count());
      window_seconds = 0;
    }
    if (every > 0 && (step + 1) % every == 0 && step + 1 != steps) evaluate_and_log(step + 1);
  }
  EvalResult last = evaluate_and_log(steps);
  std::fclose(metrics_);
  metrics_ = nullptr;
  save_safetensors(run_dir_ + "/model.safetensors", model_.params());
  return last;
}

}  // namespace primal
