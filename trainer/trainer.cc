#include "trainer/trainer.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/files.h"
#include "data/fashion_mnist.h"
#include "data/kjv_testament.h"
#include "data/listops.h"
#include "data/pathfinder.h"
#include "data/text_dataset.h"
#include "trainer/safetensors.h"

namespace primal {
namespace {

using Clock = std::chrono::steady_clock;

// The signal that asked the loop to stop (0: none). A handler may only set a flag.
volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int signal) {
  g_stop_signal = signal;
}

// metrics.jsonl of a resumed run: the lines up to the resumed step stay (the run before the
// stop wrote them), later ones (steps the resume repeats) go, so the file reads like one run.
// A line that is not a JSON object is the torn end of a process killed mid-write: it goes too.
void keep_metrics_up_to(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() ||
        (j.contains("step") && j["step"].is_number() && j["step"].get<int64_t>() > step)) {
      continue;
    }
    kept += line + "\n";
  }
  in.close();
  write_file_durably(path, kept);
}

DataOrder order_of(const config::Data& d) {
  return d.order() == config::Data::SEQUENTIAL ? DataOrder::kSequential : DataOrder::kRandom;
}

ScheduleOptions schedule_of(const config::Config& c) {
  ScheduleOptions s;
  s.lr = c.optimizer().lr();
  s.total_steps = c.train().steps();
  s.warmup_steps = std::min(c.schedule().warmup_steps(), s.total_steps);
  s.min_lr = c.schedule().min_lr();
  switch (c.schedule().kind()) {
    case config::Schedule::CONSTANT:
      s.kind = ScheduleOptions::kConstant;
      break;
    case config::Schedule::COSINE:
      s.kind = ScheduleOptions::kCosine;
      break;
    case config::Schedule::LINEAR:
      s.kind = ScheduleOptions::kLinear;
      break;
    case config::Schedule::INVERSE_SQRT:
      s.kind = ScheduleOptions::kInverseSqrt;
      break;
  }
  validate(s);
  return s;
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

void install_stop_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // interrupted reads and writes go on
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);
}

std::unique_ptr<Dataset> make_dataset(const LoadedConfig& config) {
  const config::Data& d = config.proto().data();
  const uint64_t seed = config.proto().train().seed();
  switch (d.kind()) {
    case config::Data::TEXT:
      return std::make_unique<TextDataset>(d.path(), d.seq_len(), seed, order_of(d),
                                           d.val_fraction(), d.test_fraction());
    case config::Data::FASHION_MNIST:
      return std::make_unique<FashionMnist>(
          d.path(), config.proto().model().patch_size(), seed, order_of(d), FashionMnist::kValSize,
          config.proto().model().input() == config::Model::TOKENS ? FashionMnist::Form::kPixels
                                                                  : FashionMnist::Form::kPatches);
    case config::Data::PATHFINDER:
      return std::make_unique<Pathfinder>(seed, order_of(d), d.pathfinder_train_size(),
                                          d.eval_size(), d.eval_size());
    case config::Data::KJV_TESTAMENT:
      return std::make_unique<KjvTestament>(d.path(), d.seq_len(), seed, d.eval_size());
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

Trainer::Trainer(const LoadedConfig& config, ProcessGroups* groups,
                 const DeviceStepFactory& make_device)
    : config_(config),
      proto_(config.proto()),
      groups_(groups),
      tp_size_(groups ? groups->tp_size : 1),
      dp_size_(groups ? groups->dp_size : 1),
      dp_rank_(groups ? groups->dp_rank : 0),
      tp_group_(tp_size_ > 1 ? std::make_unique<CommTensorParallelGroup>(*groups->tp) : nullptr),
      data_(make_dataset(config)),
      model_(config.model(), tp_group_.get()),
      optimizer_(model_.params(), config.adamw()),
      checkpointer_(std::make_unique<Checkpointer>(config, groups, model_.params(), optimizer_)),
      schedule_(schedule_of(proto_)),
      run_dir_(proto_.logging().dir()),
      tty_(leader() && isatty(STDOUT_FILENO)) {
  if (proto_.train().threads() > 0) omp_set_num_threads(proto_.train().threads());
  // Before anything is written: no usable GPU ends the run here, with the runtime's reason.
  on_device_ = proto_.train().device() == config::Train::CUDA;
  if (on_device_) {
    step_ = make_device(config_, model_.params(), optimizer_, groups_);
  } else {
    auto host = std::make_unique<HostStep>(config_, model_, optimizer_, groups_, tp_group_.get());
    host_ = host.get();
    step_ = std::move(host);
  }
  // After the thread count is set: the measured peak (for MFU) uses the training's threads.
  telemetry_ = std::make_unique<Telemetry>(config_, groups_ ? groups_->world->rank() : 0,
                                           groups_ ? groups_->world->size() : 1);
  ksvd_terms_.assign(model_.config().num_primal_layers(), 0.0);
  const int B = proto_.data().batch_size();
  predictions_per_step_ =
      model_.config().head == HeadKind::kLm ? int64_t(B) * proto_.data().seq_len() : B;
}

Trainer::~Trainer() {
  if (metrics_) std::fclose(metrics_);
}

bool Trainer::skip_nonfinite(int64_t step, double loss, double grad_norm) const {
  if (std::isfinite(loss) && std::isfinite(grad_norm)) return false;
  if (proto_.train().on_nonfinite() == config::Train::STOP) {
    throw NonFiniteLoss("train: step " + std::to_string(step) + ": the loss is " +
                        std::to_string(loss) + " and the gradient norm " +
                        std::to_string(grad_norm) +
                        "; lower optimizer.lr, or set train.on_nonfinite: SKIP to drop such "
                        "steps");
  }
  return true;
}

// Micro-batch k is the slice [k*micro, (k+1)*micro) of the step's global batch, and this DP
// rank takes its share of it: the samples do not depend on the layout or on accumulation. With
// data parallelism the last micro-batch's backward averages the gradients over DP. The clip
// runs with the norm (a GPU computes both in one pass), so a skipped step's gradients may be
// clipped; nothing reads them before the next step zeroes them but a histogram.
Trainer::StepResult Trainer::train_step(int64_t step) {
  const int global = proto_.data().batch_size();
  const int micro_steps = proto_.optimizer().accumulation_steps();
  const int micro = global / micro_steps, local = micro / dp_size_;
  StepResult r;
  r.lr = learning_rate(schedule_, step);
  step_->zero_grads();
  std::fill(ksvd_terms_.begin(), ksvd_terms_.end(), 0.0);
  for (int k = 0; k < micro_steps; ++k) {
    data_->train_batch(step, int64_t(k) * micro + int64_t(dp_rank_) * local, local, global, batch_);
    const LossTerms t = step_->forward_backward(batch_, step, /*last=*/k + 1 == micro_steps);
    r.loss += t.loss / micro_steps;
    r.ce += t.ce / micro_steps;
    r.ksvd += t.ksvd / micro_steps;
    for (size_t j = 0; j < ksvd_terms_.size(); ++j) ksvd_terms_[j] += t.ksvd_terms[j] / micro_steps;
  }
  if (micro_steps > 1) step_->scale_grads(1.0f / float(micro_steps));
  if (dp_size_ > 1) {
    double terms[3] = {r.loss, r.ce, r.ksvd};
    groups_->dp->all_reduce(terms, 3, ReduceOp::kAverage);
    r.loss = terms[0], r.ce = terms[1], r.ksvd = terms[2];
  }
  host_stale_ = host_grads_stale_ = on_device_;
  r.grad_norm = step_->clip(proto_.optimizer().grad_clip());
  if (skip_nonfinite(step, r.loss, r.grad_norm)) {
    r.skipped = true;
    return r;
  }
  step_->adamw_step(r.lr);
  return r;
}

void Trainer::copy_to_host(bool grads) {
  if (!(host_stale_ || (grads && host_grads_stale_))) return;
  step_->download(model_.params(), &optimizer_, grads);
  host_stale_ = false;
  if (grads) host_grads_stale_ = false;
}

void Trainer::save_checkpoint(int64_t step, double lr) {
  copy_to_host();
  checkpointer_->save(step, lr);
}

void Trainer::write_bucket_trace() {
  std::filesystem::create_directories(run_dir_);
  const std::string path =
      run_dir_ + "/bucket_events.rank" + std::to_string(groups_->world->rank()) + ".jsonl";
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) throw Error(path, "cannot open for writing");
  static const char* kKinds[] = {"param_ready", "issued", "completed", "wait_begin", "wait_end"};
  for (const BucketEvent& e : buckets()->events()) {
    std::fprintf(f, "{\"event\":\"%s\",\"index\":%d,\"time_s\":%.9f}\n", kKinds[e.kind], e.index,
                 e.time_s);
  }
  std::fclose(f);
}

ParameterStore<float> Trainer::gather_full_parameters() {
  ParameterStore<float> full;
  for (const auto& p : model_.params().all())
    full.add(p.name, p.shape, Split::kReplicated, Init::kZeros);
  full.finalize(0);
  std::vector<float> gathered;
  auto it = full.all().begin();
  for (const auto& p : model_.params().all()) {
    Parameter<float>& out = *it++;
    if (tp_size_ == 1 || p.sharding.split == Split::kReplicated) {
      out.value.copy_from(p.value);
      continue;
    }
    const int64_t n = p.value.numel();
    gathered.resize(size_t(n) * tp_size_);
    groups_->tp->all_gather(p.value.data(), gathered.data(), n);
    for (int t = 0; t < tp_size_; ++t) {
      const float* src = gathered.data() + int64_t(t) * n;
      for (auto [from, length] : shard_runs(p.shape, p.sharding, {t, tp_size_})) {
        std::copy_n(src, length, out.value.data() + from);
        src += length;
      }
    }
  }
  return full;
}

void Trainer::log_step(int64_t step, const StepResult& r, double step_seconds, double elapsed) {
  if (!leader()) return;
  const int64_t steps = proto_.train().steps();
  const double rate = double(predictions_per_step_) / step_seconds;
  const bool lm = model_.config().head == HeadKind::kLm;
  nlohmann::ordered_json j = {{"step", step + 1},     {"loss", r.loss},
                              {"ce", r.ce},           {"ksvd", r.ksvd},
                              {"lr", r.lr},           {"grad_norm", r.grad_norm},
                              {"skipped", r.skipped}, {lm ? "tokens_per_s" : "samples_per_s", rate},
                              {"elapsed_s", elapsed}};
  std::fprintf(metrics_, "%s\n", j.dump().c_str());
  std::fflush(metrics_);
  if (telemetry_->writes_histograms(step + 1)) copy_to_host(true);
  telemetry_->on_step(step + 1,
                      {.loss = r.loss,
                       .ce = r.ce,
                       .ksvd = r.ksvd,
                       .ksvd_terms = ksvd_terms_,
                       .lr = r.lr,
                       .grad_norm = r.grad_norm,
                       .step_seconds = step_seconds},
                      &model_.params());
  // A resumed run has timed only the steps since its start.
  const double eta = elapsed / double(step + 1 - start_step_) * double(steps - step - 1);
  char line[256];
  std::snprintf(
      line, sizeof(line),
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
  Communicator* dp = groups_ ? groups_->dp.get() : nullptr;
  const int batch_size = proto_.data().batch_size();
  const int64_t batches = proto_.train().eval_batches();
  // On a GPU from its own parameters: no host copy needed.
  const EvalForward forward = [&](const Batch& batch) { return step_->evaluate_batch(batch); };
  const EvalResult r =
      evaluate(model_.config(), forward, *data_, DataSplit::kVal, batch_size, batches, dp);
  if (!leader()) return r;
  const std::string json = eval_json(r, "val", step);
  std::fprintf(metrics_, "%s\n", json.c_str());
  std::fflush(metrics_);
  telemetry_->on_eval(step, "val", r);
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

void Trainer::resume(const std::string& what) {
  const Checkpointer::Resumed r = checkpointer_->resume(what);
  if (!r.found) return;
  if (r.step > proto_.train().steps()) {
    throw CheckpointError(r.dir, "is at step " + std::to_string(r.step) + ", beyond train.steps " +
                                     std::to_string(proto_.train().steps()));
  }
  start_step_ = r.step;
  resumed_ = true;
  step_->upload(model_.params(), optimizer_);
}

EvalResult Trainer::run() {
  const int64_t steps = proto_.train().steps(), every = proto_.train().eval_every();
  if (leader()) {
    std::filesystem::create_directories(run_dir_);
    const std::string metrics_path = run_dir_ + "/metrics.jsonl";
    if (resumed_) keep_metrics_up_to(metrics_path, start_step_);
    metrics_ = std::fopen(metrics_path.c_str(), resumed_ ? "a" : "w");
    if (!metrics_) throw Error(metrics_path, "cannot open for writing");
    std::printf(
        "primal train: %s | %lld parameters | %d threads x %d ranks (tp %d, dp %d) | "
        "%lld steps -> %s\n",
        config_.path().c_str(), (long long)model_.params().numel(), omp_get_max_threads(),
        tp_size_ * dp_size_, tp_size_, dp_size_, (long long)steps, run_dir_.c_str());
    if (on_device_) std::printf("primal train: on %s\n", step_->describe().c_str());
    if (proto_.schedule().warmup_steps() > steps) {
      std::printf("primal train: schedule.warmup_steps %lld capped at train.steps %lld\n",
                  (long long)proto_.schedule().warmup_steps(), (long long)steps);
    }
  }
  if (!resumed_) evaluate_and_log(0);
  const auto start = Clock::now();
  double window_seconds = 0;
  const int64_t save_every = proto_.checkpoint().every();
  const int64_t stop_at = proto_.checkpoint().stop_at_step();
  double lr = learning_rate(schedule_, std::max<int64_t>(start_step_ - 1, 0));
  for (int64_t step = start_step_; step < steps; ++step) {
    const auto t0 = Clock::now();
    const StepResult r = train_step(step);
    lr = r.lr;
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
    // Every rank takes part in the same saves, so they must agree on a stop request that
    // perhaps only one of them received: one small all-reduce per step.
    const int64_t done = step + 1;
    const bool stop = checkpointer_->agree(g_stop_signal != 0 || done == stop_at);
    if (stop && done < steps) {
      if (checkpointer_->last_step() != done) save_checkpoint(done, lr);
      checkpointer_->wait();
      stopped_ = true;
      if (leader()) {
        if (tty_) std::printf("\n");
        std::printf(
            "primal train: stopped after step %lld (%s); checkpoint %s/%s; exit %d: "
            "continue with --resume auto\n",
            (long long)done,
            g_stop_signal == SIGTERM   ? "SIGTERM"
            : g_stop_signal == SIGUSR1 ? "SIGUSR1"
            : done == stop_at          ? "checkpoint.stop_at_step"
                                       : "a signal to another rank",
            checkpointer_->root().c_str(), checkpoint_step_name(done).c_str(), kExitRequeue);
        std::fflush(stdout);
        std::fclose(metrics_);
        metrics_ = nullptr;
      }
      telemetry_->close();
      return {};
    }
    if (save_every > 0 && done % save_every == 0 && done != steps) save_checkpoint(done, lr);
  }
  if (checkpointer_->last_step() != steps) save_checkpoint(steps, lr);
  checkpointer_->wait();
  if (buckets() && proto_.parallel().trace_buckets()) write_bucket_trace();
  EvalResult last = evaluate_and_log(steps);
  telemetry_->close();
  copy_to_host();
  ParameterStore<float> full = gather_full_parameters();
  if (leader()) {
    std::fclose(metrics_);
    metrics_ = nullptr;
    save_safetensors(run_dir_ + "/model.safetensors", full);
  }
  return last;
}

}  // namespace primal
