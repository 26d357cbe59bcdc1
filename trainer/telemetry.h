// Telemetry: TensorBoard event files of a training run (world rank 0), and the model FLOP
// utilisation (MFU) that goes into them. docs/telemetry.md lists every tag and the FLOP formula.
//
//   Telemetry tel(config, world_rank, world_size);   // disabled without logging.logdir
//   tel.on_step(step, {loss, ce, ksvd, ksvd_terms, lr, grad_norm, step_seconds}, params);
//   tel.on_eval(step, "val", eval_result);            // flushes
//   tel.close();                                      // at the end of the run
//
// One run directory per run: <logging.logdir>/<config file stem>-<YYYYmmdd-HHMMSS>[-k].
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "configs/config.h"
#include "model/config.h"
#include "model/parameters.h"
#include "trainer/evaluation.h"
#include "trainer/tensorboard/event_writer.h"

namespace primal {

// GEMM floating-point operations of one forward and one backward of B samples of N input
// positions (without the CLS slot), exactly as the model issues them to core/blas.h's gemm
// (2 M N K per product; every product counted at its full size, the causal mask and padding
// included). docs/telemetry.md derives it. Linear in B: a step's count is that of its global
// batch, whatever the accumulation and the parallel layout.
struct ModelFlops {
  int64_t forward = 0;
  int64_t backward = 0;
  int64_t total() const { return forward + backward; }
};
ModelFlops model_gemm_flops(const ModelConfig& config, int64_t B, int64_t N);

// The best sgemm rate in GFLOP/s over square products of the given sizes (two timed repeats
// each after a warm-up), on omp_get_max_threads() threads: the CPU peak behind MFU.
double measure_sgemm_peak_gflops(std::vector<int> sizes = {1024, 2048});

// What the trainer knows after an optimizer step.
struct StepMetrics {
  double loss = 0, ce = 0, ksvd = 0;
  std::span<const double> ksvd_terms = {};  // J_l per PRIMAL layer, in layer order
  double lr = 0;
  double grad_norm = 0;     // global, before clipping
  double step_seconds = 0;  // wall time of one optimizer step (a window's mean)
};

struct TelemetryOptions {
  std::string run_name;    // empty: <config file stem>-<YYYYmmdd-HHMMSS>
  int positions = 0;       // input positions per sample; 0: positions_per_sample(config)
  double peak_gflops = 0;  // 0: logging.peak_gflops, else measured at construction
  // A resumed run continues its run directory <logdir>/<run_name> (run_name required) with a
  // new event file there; TensorBoard reads a directory's event files as one run.
  bool resume = false;
};

class Telemetry {
 public:
  // Enabled on world rank 0 when logging.logdir is set: creates the run directory and its event
  // file and, unless logging.peak_gflops is set, measures the sgemm peak (about a second; call
  // after the training's thread count is set), and writes perf/peak_gflops (of the whole job)
  // and perf/model_gflop_per_step at step 0. Elsewhere every call returns at once.
  // primal::Error naming the config field for a negative peak_gflops or histogram_every.
  Telemetry(const LoadedConfig& config, int world_rank = 0, int world_size = 1,
            TelemetryOptions options = {});
  ~Telemetry();
  Telemetry(const Telemetry&) = delete;
  Telemetry& operator=(const Telemetry&) = delete;

  bool enabled() const { return writer_ != nullptr; }

  // Scalars at `step` (the number of optimizer steps done, as in metrics.jsonl):
  //   train/{loss,ce,ksvd,lr,grad_norm}, train/ksvd_J/layer_<i> (i: the model's layer index),
  //   perf/{tokens_per_s | samples_per_s}, perf/step_seconds, perf/mfu.
  // The first call at or past each multiple of logging.histogram_every also writes, from params
  // (this rank's shards; under tensor parallelism the heads of TP rank 0):
  //   hist/lambda/layer_<i> (the values of layers.<i>.attn.lambda), hist/param_norms and
  //   hist/grad_norms (one L2 norm per parameter tensor), and the scalars
  //   norms/param/<group>, norms/grad/<group> (group: layer_<i>, embed, norm, head).
  // The gradients are read as they are after the step (clipped, if clipping applied).
  // A histogram whose values are not all finite is left out.
  void on_step(int64_t step, const StepMetrics& m, ParameterStore<float>* params = nullptr);
  // Whether on_step(step, ...) writes histograms: the caller brings params up to date (a device
  // run copies them to the host) only then.
  bool writes_histograms(int64_t step) const {
    return writer_ && histogram_every_ > 0 && step >= next_histogram_;
  }

  // <split>/{loss,ce,ksvd} and <split>/perplexity (LM) or <split>/accuracy (classifier); flushes.
  void on_eval(int64_t step, const std::string& split, const EvalResult& r);

  void flush();
  // Flushes and closes the event file; later calls do nothing. Called by the destructor.
  void close();

  // The run directory and the event file in it (empty when disabled).
  const std::string& run_dir() const { return run_dir_; }
  const std::string& event_file() const { return event_file_; }
  // The MFU terms: model GEMM FLOPs per optimizer step, and the peak of the whole job
  // (world_size processes) in FLOP/s.
  int64_t flops_per_step() const { return flops_per_step_; }
  double peak_flops() const { return peak_flops_; }

 private:
  void write_histograms(int64_t step, ParameterStore<float>& params);

  std::unique_ptr<tensorboard::EventWriter> writer_;
  std::string run_dir_, event_file_;
  bool lm_ = true;
  int64_t predictions_per_step_ = 0;  // tokens (LM) or samples (classifier) per step
  int64_t flops_per_step_ = 0;
  double peak_flops_ = 0;
  int64_t histogram_every_ = 0;
  int64_t next_histogram_ = 0;
  std::vector<int> primal_layers_;  // model layer index of each PRIMAL layer
  int layers_ = 0;
};

}  // namespace primal
