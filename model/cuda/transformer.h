// The Transformer of model/transformer.h on one GPU (SPEC §3), the same steps in the same
// order as the CPU model, on device buffers:
//   x = [cls;] (tok_emb[tokens] or patches Wp^T + bp) + pos_emb[0..N)
//   per layer i:  x = x + Dropout(Attn_i(LN1_i(x)) (0 on padded rows))
//                 x = x + Dropout(MLP_i(LN2_i(x)))
//   x = LN_f(x) (0 on padded rows);  logits = x tok_emb^T (LM, tied) or head(pool(x))
//   loss = CE + eta KSVD
// and the optimizer step: global-norm clip, AdamW (fp32 master weights).
//
// T is the activation type: float (fp32 mode: every value as the CPU Transformer<float>
// computes it, to about 1e-5) or bf16 (mixed precision: bf16 activations and GEMM inputs, fp32
// parameters, gradients, logits and softmax scores, statistics and reductions in fp32/double).
// The residual stream (the embedding's output, each layer's x + branch sums, the final norm's
// input) and its gradient are fp32 in both modes: each bf16 branch is added into it, and each
// LayerNorm reads it and writes T.
//
// Both forms run on the device: the LM (token inputs, causal, tied head) and the classifier
// (token or patch inputs, optional CLS slot, padding, MEAN/CLS pooling, ReLU head), with
// SOFTMAX and PRIMAL layers (causal form for the LM, encoder form for the classifier) and
// dropout.
//
// Each device layer is built from its layer of the CPU twin (host_model()) and takes the
// Parameter objects there: names, shapes and sharding come from that registry, never retyped.
//
// Tensor parallelism (SPEC §5): built with a DeviceTensorParallelGroup of size T, the model
// holds this rank's shard of every parameter (H/T heads of each attention layer, `we`, `wr`,
// `lambda` included; F/T of each MLP; the rest replicated), as its CPU twin does. The sums
// over the group are where the CPU model has them, enqueued on the model's stream: each
// row-parallel output (attn.proj, mlp.fc2) before its bias, each LayerNorm's input gradient in
// backward, the KSVD partial sums before the loss is read back, the clip's sum of squares
// (replicated gradients counted on TP rank 0 alone), and, through sum_grads_over_tp, the
// gradients of replicated parameters that every rank's heads use (attn.concat). The encoder
// form samples rows of the full-width input and takes this rank's channels of them.
//
// Memory: every saved activation is a DeviceBuffer from the model's caching allocator, held
// from forward to the next forward; temporaries return to the cache when a layer is done.
// From the second step of a given shape on, every request is served from the cache.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/cuda/attention.h"
#include "core/cuda/kernels_model.h"
#include "core/cuda/primal_encoder.h"
#include "model/batch.h"
#include "model/config.h"
#include "model/cuda/parameters.h"
#include "model/cuda/tensor_parallel.h"
#include "model/dropout.h"
#include "model/ksvd_loss.h"
#include "model/ready_order.h"
#include "model/transformer.h"

namespace primal::cuda {

// The Philox stream of a dropout site, keyed exactly as model/dropout.cc keys it:
// (seed ^ 0xD0D0D0D0, (step << 24) ^ (layer << 4) ^ site).
PhiloxStream dropout_stream(uint64_t seed, int64_t step, int layer, DropoutSite site);

// What each layer runs with: the stream and its allocator, cuBLAS, the parameters, the
// positions the encoder form of PRIMAL samples ([B, L], device; null for the LM), and the
// tensor-parallel group (null: one rank).
struct Context {
  Blas& blas;
  Exec ex;
  const DeviceParameters& params;
  const int32_t* sampled = nullptr;
  DeviceTensorParallelGroup* tp = nullptr;
};

// A Linear layer's parameters (PyTorch convention, W [out, in]: this rank's shard, its sizes
// from the registry).
//   y = x W^T + b        cuBLASLt with the bias in its epilogue where in and out are multiples
//                        of 8; otherwise (the small concat and head layers) a cuBLAS GEMM and
//                        the bias kernel (fp32 bias), which take any shape
//   row-parallel (W cut by input columns, model/linear.h): y = sum_tp(x W^T) + b
//   dx = dy W (column-parallel: this rank's part of the sum, which the caller completes);
//   dW += dy^T x;  db += sum_rows dy
template <typename T>
struct DeviceLinear {
  // host: the CPU layer of the model's twin (its parameters, as this rank holds them).
  DeviceLinear(const DeviceParameters& params, const Linear<float>& host);
  // TY: T, or float for fp32 outputs (the classifier's logits).
  template <typename TY = T>
  void forward(Context& c, const T* x, TY* y, int64_t rows) const;
  // dx is overwritten (skipped where null); TDX: T, or float for an fp32 input gradient.
  template <typename TDX = T>
  void backward(Context& c, const T* x, const T* dy, TDX* dx, int64_t rows) const;

  int in, out;
  bool row_parallel;  // a kRow shard of a wider W: the output is summed over TP
  const T* w;
  const T* b;
  const float* b_f;  // the fp32 bias
  float* dw;
  float* db;
};

// LayerNorm over rows of C:  y = (x - mean) rstd w + b;  mean and rstd saved. x is the fp32
// residual stream, y an activation of T.
//   dx += rstd (dy w - mean(dy w) - xhat mean(dy w xhat));  dw += sum dy xhat;  db += sum dy
template <typename T>
struct DeviceLayerNorm {
  DeviceLayerNorm(const DeviceParameters& params, const LayerNorm<float>& host);
  void forward(Context& c, const float* x, T* y, int64_t rows);
  // dx (fp32) accumulates.
  void backward(Context& c, const float* x, const T* dy, float* dx, int64_t rows) const;

  int C;
  float eps;
  const float* w;
  const float* b;
  float* dw;
  float* db;
  DeviceBuffer<float> mean, rstd;
};

// The attention kinds' device layers behind one interface, as model/attention.h.
template <typename T>
class DeviceAttention {
 public:
  virtual ~DeviceAttention() = default;
  // x [B N, C] (LN1's output, kept by the caller until backward) -> out [B N, C]. A PRIMAL
  // layer adds its KSVD partial sums (e, r, t) into ksvd[0..3) (device doubles).
  // seq.lengths, where not null, is a device pointer.
  virtual void forward(Context& c, const T* x, T* out, const Sequence& seq, double* ksvd) = 0;
  // dout -> dx (overwritten); parameter gradients accumulate.
  virtual void backward(Context& c, const T* dout, T* dx, const KsvdGrad& ksvd) = 0;
  // Whether forward reads the sampled positions of Context (the encoder form of PRIMAL).
  virtual bool reads_sampled_positions() const { return false; }
};

// One pre-LN block:  x2 = x + Dropout(Attn(LN1(x)) (0 on padded rows));
//                    out = x2 + Dropout(MLP(LN2(x2))).
template <typename T>
class DeviceTransformerLayer {
 public:
  // host: the CPU layer of the model's twin, whose parameters (this rank's shards) it runs.
  DeviceTransformerLayer(const DeviceParameters& params, TransformerLayer<float>& host,
                         const ModelConfig& config, int index);
  // x: the layer input, kept by the caller until backward. Returns the output (owned).
  // seq.lengths, where not null, is a device pointer.
  // x and the output are the fp32 residual stream.
  const float* forward(Context& c, const float* x, const Sequence& seq, double* ksvd);
  // dout -> dx (overwritten), fp32.
  void backward(Context& c, const float* dout, float* dx, const KsvdGrad& ksvd);
  AttentionKind kind() const { return kind_; }
  bool reads_sampled_positions() const { return attn_->reads_sampled_positions(); }

 private:
  int index_, C_, F_;  // F_: this rank's slice of the MLP width
  AttentionKind kind_;
  double dropout_;
  DeviceLayerNorm<T> ln1_, ln2_;
  std::unique_ptr<DeviceAttention<T>> attn_;
  DeviceLinear<T> fc1_, fc2_;
  // saved by forward
  Sequence seq_;
  const float* x_ = nullptr;
  DeviceBuffer<T> ln1_out_, ln2_out_, h_, gelu_out_;
  DeviceBuffer<float> x2_, out_;  // the residual stream
};

template <typename T>
class DeviceTransformer {
 public:
  // Builds the CPU Transformer<float> of the config (its parameters' names, shapes, order and
  // initial values; this rank's shards under tp), then the device model on the current device
  // with those weights. tp (null: one rank) must outlive the model.
  explicit DeviceTransformer(const ModelConfig& config, DeviceTensorParallelGroup* tp = nullptr);
  ~DeviceTransformer();
  DeviceTransformer(const DeviceTransformer&) = delete;
  DeviceTransformer& operator=(const DeviceTransformer&) = delete;

  const ModelConfig& config() const { return config_; }

  // Loss of the batch (one host synchronisation: the loss terms come back). step keys
  // dropout; training = false turns it off.
  LossTerms forward(const Batch& batch, int64_t step, bool training = true);
  // Gradients of the last forward's loss, added into the device gradients.
  void backward();
  // zero grads, forward, backward, sum_grads_over_tp (as the CPU model's)
  LossTerms forward_backward(const Batch& batch, int64_t step);
  // Sums the gradients of layer's replicated parameters that every rank's heads use
  // (ReadyOrder::tp_summed_of_layer) over the tensor-parallel group, on the stream; nothing to
  // do on one rank. Called once per optimizer step, as the layer's gradients become final.
  void sum_grads_over_tp(int layer);
  // Global-norm clip (trainer/grad_clip.h): returns the norm before clipping (over the whole
  // model under tensor parallelism).
  double clip_grad_norm(double max_norm);
  // One AdamW step over every parameter (trainer/adamw.cc's arithmetic, bit for bit given the
  // same gradients), then the bf16 copy is refreshed.
  void adamw_step(double lr, const em::AdamWOptions& options = {});
  int64_t adamw_steps() const { return adamw_steps_; }
  // The AdamW state through host copies (checkpoints): exp_avg and exp_avg_sq in the host
  // store's layout (parallel to ParameterStore<float>::values(), as trainer/adamw.h keeps them,
  // host_model().params().numel() floats each) and the step count t.
  void download_adamw(float* exp_avg, float* exp_avg_sq) const;
  void upload_adamw(const float* exp_avg, const float* exp_avg_sq, int64_t steps);

  // Host copies through a ParameterStore<float> of the same config (checkpoints, tests).
  void upload(const ParameterStore<float>& store) { params_->upload(store); }
  void download(ParameterStore<float>& store) const { params_->download(store); }
  void download_grads(ParameterStore<float>& store) const { params_->download_grads(store); }
  // The host model the device one was built from (its store: a ready host copy's layout).
  Transformer<float>& host_model() { return host_; }

  // Data parallelism: the CPU Transformer's hooks (model/transformer.h), same semantics.
  // Sums the KSVD partials across the ranks that share the loss, in place, on the host: [e, r,
  // t] per PRIMAL layer, then the real-token count. Called by forward after its one
  // synchronisation. Unset on one process.
  std::function<void(std::span<double>)> reduce_ksvd;
  // Multiplies d loss / d (e- and r-sums) in backward (ksvd_sync GLOBAL: the DP size).
  double ksvd_data_grad_scale = 1;
  // Called on the host by backward as soon as it has enqueued the last gradient kernel of
  // layer i (nothing is waited for: the kernels may still be running), and with -1 after the
  // rest (embeddings, final norm, head).
  std::function<void(int layer)> on_grads_final;
  // How the host waits for the compute stream (forward's one readback, the clip's norm, the
  // AdamW state's host copies, synchronize()); `what` names the wait. Unset: a plain
  // cudaStreamSynchronize, or under tensor parallelism the group's watched wait. With data
  // parallelism the stream waits on NCCL buckets that a dead or hung peer never completes, so
  // the DP wiring sets a watched wait instead (past parallel.watchdog_s the job ends naming
  // it).
  std::function<void(const char* what)> wait_host;
  // The order the gradients in params().grads() become final (model/ready_order.h), a slot per
  // parameter in the layout's (the CPU store's) order. A slot spans the parameter and the
  // alignment gap up to the next one (zeros, and they stay zeros: averaging them is harmless
  // and makes a layer's gradients one range).
  const ReadyOrder& ready_order() const { return ready_; }

  // The last forward's probabilities, fp32 on the device: [B, K] (classifier) or [B N, V] (LM).
  const float* probabilities() const { return logits_.data(); }

  DeviceParameters& params() { return *params_; }
  Blas& blas() { return blas_; }
  CachingAllocator& allocator() { return allocator_; }
  cudaStream_t stream() const { return stream_.get(); }
  void synchronize() const { wait("synchronize"); }

 private:
  void wait(const char* what) const {
    if (wait_host)
      wait_host(what);
    else if (tp_ && tp_->size() > 1)
      tp_->wait(stream_.get(), what);
    else
      stream_.synchronize();
  }

  ModelConfig config_;
  DeviceTensorParallelGroup* tp_;
  ShardLayout shard_layout_;  // the host twin's place in the TP group
  Transformer<float> host_;
  Stream stream_;
  CachingAllocator allocator_;
  Blas blas_;
  std::unique_ptr<DeviceParameters> params_;
  DeviceLayerNorm<T> norm_;
  std::vector<DeviceTransformerLayer<T>> layers_;
  ReadyOrder ready_;
  std::vector<GradRange> norm_ranges_;  // the gradients this rank counts in the global norm
  DeviceBuffer<float> adam_m_, adam_v_;
  int64_t adamw_steps_ = 0;
  // The classifier head: pooled = pool(x);  logits = fc2(ReLU(fc1(pooled))) (fp32 logits).
  struct Head {
    DeviceLinear<T> fc1, fc2;  // fc2 writes fp32 logits in both modes
    DeviceBuffer<T> pooled, hidden_pre, act;
  };
  void embed_forward(Context& c, const Batch& batch);
  void embed_backward(Context& c, const float* dx);
  void head_forward(Context& c);
  void head_backward(Context& c, const T* dlogits, T* dx);

  std::unique_ptr<DeviceLinear<T>> patch_;
  std::unique_ptr<Head> head_;
  // saved by forward
  Sequence seq_;         // host lengths
  Sequence device_seq_;  // the same with device lengths: what the layers get
  int first_ = 0;        // 1 with a CLS slot
  int batch_N_ = 0;      // input positions (seq_.N - first_)
  int64_t predictions_ = 0;
  std::vector<int32_t> lengths_;  // host: real positions per sample, CLS included
  std::vector<int32_t> token_offsets_, token_rows_, sampled_;  // host staging
  bool reads_sampled_positions_ = false;                       // a layer reads sampled_d_
  DeviceBuffer<int32_t> tokens_, targets_, offsets_d_, rows_d_, lengths_d_, sampled_d_;
  DeviceBuffer<float> patches_f_;
  DeviceBuffer<T> patches_, patch_out_, final_x_;
  DeviceBuffer<float> embedded_;   // the residual stream's start
  const float* last_x_ = nullptr;  // the last layer's output
  DeviceBuffer<float> logits_;     // [rows, V or K]: probabilities after CE
  DeviceBuffer<double> sums_;      // [e, r, t] per PRIMAL layer, CE sum
  std::vector<double> host_sums_;
  std::vector<double> ksvd_sums_;  // [e, r, t] per PRIMAL layer, tokens: what reduce_ksvd sums
  std::vector<KsvdPartial> partials_;
  KsvdLoss ksvd_;
};

}  // namespace primal::cuda
