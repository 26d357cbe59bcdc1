#include "model/cuda/transformer.h"

#include <cmath>
#include <string>
#include <type_traits>

#include "core/cuda/check.h"
#include "core/element_math.h"
#include "model/attention_kinds.h"
#include "model/cross_entropy.h"
#include "model/primal_attention.h"
#include "model/softmax_attention.h"

namespace primal::cuda {
namespace {

template <typename T>
void copy_device(T* dst, const T* src, int64_t n, cudaStream_t stream) {
  PRIMAL_CUDA_CHECK(
      cudaMemcpyAsync(dst, src, sizeof(T) * size_t(n), cudaMemcpyDeviceToDevice, stream));
}

template <typename T>
void zero_device(T* p, int64_t n, cudaStream_t stream) {
  PRIMAL_CUDA_CHECK(cudaMemsetAsync(p, 0, sizeof(T) * size_t(n), stream));
}

// A buffer of n T from the context's allocator (a cached block after the first step).
template <typename T>
DeviceBuffer<T> scratch(Context& c, int64_t n) {
  return DeviceBuffer<T>(*c.ex.allocator, n, c.ex.stream);
}

// A saved activation of n T for this step: the last step's buffer when it has that size,
// otherwise the old one goes back to the cache before the new one is taken from it.
template <typename T>
void renew(DeviceBuffer<T>& b, Context& c, int64_t n) {
  if (b.data() && b.size() == n) return;
  b.reset();
  b = scratch<T>(c, n);
}

// data[0, n) := its sum over the tensor-parallel group, on the context's stream; nothing to do
// on one rank. bf16 values are summed in fp32 (converted there and back: one rounding, after
// the sum).
template <typename T>
void tp_sum(Context& c, T* data, int64_t n) {
  if (!c.tp || c.tp->size() == 1) return;
  if constexpr (std::is_same_v<T, float>) {
    c.tp->all_reduce_sum(data, n, c.ex.stream);
  } else {
    DeviceBuffer<float> wide = scratch<float>(c, n);
    convert<float, T>(c.ex, data, wide.data(), n);
    c.tp->all_reduce_sum(wide.data(), n, c.ex.stream);
    convert<T, float>(c.ex, wide.data(), data, n);
  }
}

// Dropout of one site as model/dropout.cc applies it to a [B, N, C] tensor: p, scale and the
// global index of element 0 (sample_offset samples of N C elements before this batch).
struct DropoutArgs {
  PhiloxStream stream;
  uint64_t first;
  float p, scale;
};
DropoutArgs dropout_args(double p, const Sequence& seq, int layer, DropoutSite site, int C) {
  if (p <= 0 || !seq.training) return {{}, 0, 0.f, 1.f};
  return {dropout_stream(seq.seed, seq.step, layer, site),
          uint64_t(seq.sample_offset) * uint64_t(seq.N) * uint64_t(C), float(p),
          float(1.0 / (1.0 - p))};
}

}  // namespace

PhiloxStream dropout_stream(uint64_t seed, int64_t step, int layer, DropoutSite site) {
  const uint64_t stream = (uint64_t(step) << 24) ^ (uint64_t(layer) << 4) ^ uint64_t(site);
  return CounterRng(seed ^ 0xD0D0D0D0ull, stream).philox_stream();
}

// ---- Linear -------------------------------------------------------------------------------------

template <typename T>
DeviceLinear<T>::DeviceLinear(const DeviceParameters& params, const Linear<float>& host)
    : in(int(host.weight()->local_shape[1])),
      out(int(host.weight()->local_shape[0])),
      row_parallel(host.weight()->sharding.split == Split::kRow &&
                   host.weight()->local_shape != host.weight()->shape),
      w(params.gemm_value<T>(*host.weight())),
      b(params.gemm_value<T>(*host.bias())),
      b_f(params.value(*host.bias())),
      dw(params.grad(*host.weight())),
      db(params.grad(*host.bias())) {
  check(host.weight()->local_shape.rank() == 2,
        "cuda::DeviceLinear: " + host.weight()->name + " is not a matrix");
}

// y = x W^T + b;  row-parallel: y = sum_tp(x W^T) + b (the bias once, after the sum)
template <typename T>
template <typename TY>
void DeviceLinear<T>::forward(Context& c, const T* x, TY* y, int64_t rows) const {
  check(rows <= INT32_MAX, "cuda::DeviceLinear: more than 2^31 rows");
  if (row_parallel) {
    c.blas.gemm<T, TY>(Trans::kNo, Trans::kYes, int(rows), out, in, 1.f, x, in, w, in, 0.f, y, out);
    tp_sum(c, y, rows * out);
    bias_residual_forward<TY>(c.ex, y, b_f, nullptr, y, rows, out);
  } else if (in % 8 == 0 && out % 8 == 0) {
    const TY* bias;
    if constexpr (std::is_same_v<TY, T>)
      bias = b;
    else
      bias = b_f;
    c.blas.gemm_lt<T, TY>(Trans::kNo, Trans::kYes, int(rows), out, in, x, in, w, in, bias, 0.f, y,
                          out);
  } else {
    c.blas.gemm<T, TY>(Trans::kNo, Trans::kYes, int(rows), out, in, 1.f, x, in, w, in, 0.f, y, out);
    bias_residual_forward<TY>(c.ex, y, b_f, nullptr, y, rows, out);
  }
}

// dx = dy W;  dW += dy^T x;  db += sum_rows dy
template <typename T>
template <typename TDX>
void DeviceLinear<T>::backward(Context& c, const T* x, const T* dy, TDX* dx, int64_t rows) const {
  if (dx) {
    c.blas.gemm<T, TDX>(Trans::kNo, Trans::kNo, int(rows), in, out, 1.f, dy, out, w, in, 0.f, dx,
                        in);
  }
  c.blas.gemm<T, float>(Trans::kYes, Trans::kNo, out, in, int(rows), 1.f, dy, out, x, in, 1.f, dw,
                        in);
  bias_backward<T>(c.ex, dy, db, rows, out);
}

// ---- LayerNorm ----------------------------------------------------------------------------------

template <typename T>
DeviceLayerNorm<T>::DeviceLayerNorm(const DeviceParameters& params, const LayerNorm<float>& host)
    : C(host.width()),
      eps(float(host.eps())),
      w(params.value(*host.weight())),
      b(params.value(*host.bias())),
      dw(params.grad(*host.weight())),
      db(params.grad(*host.bias())) {}

// y = (x - mean) rstd w + b
template <typename T>
void DeviceLayerNorm<T>::forward(Context& c, const float* x, T* y, int64_t rows) {
  renew(mean, c, rows);
  renew(rstd, c, rows);
  layernorm_forward<float, T>(c.ex, x, w, b, y, mean.data(), rstd.data(), rows, C, eps);
}

// dx += rstd (dy w - mean(dy w) - xhat mean(dy w xhat));  dw += sum dy xhat;  db += sum dy
template <typename T>
void DeviceLayerNorm<T>::backward(Context& c, const float* x, const T* dy, float* dx,
                                  int64_t rows) const {
  layernorm_backward<float, T>(c.ex, x, dy, w, mean.data(), rstd.data(), dx, dw, db, rows, C);
}

// ---- softmax attention (SPEC §3.1, model/softmax_attention.cc) ----------------------------------

template <typename T>
class DeviceSoftmaxAttention : public DeviceAttention<T> {
 public:
  // host: the CPU layer of this rank's heads.
  DeviceSoftmaxAttention(const DeviceParameters& params, Attention<float>& layer,
                         const ModelConfig&)
      : DeviceSoftmaxAttention(params, dynamic_cast<SoftmaxAttention<float>&>(layer)) {}
  DeviceSoftmaxAttention(const DeviceParameters& params, SoftmaxAttention<float>& host)
      : qkv_(params, host.qkv_linear()),
        proj_(params, host.proj_linear()),
        H_(qkv_.out / (3 * host.head_dim())),
        d_(host.head_dim()) {}

  // qkv = x Wqkv^T + bqkv;  per (b, h): P = softmax(q k^T / sqrt(d) + mask), y = P v;
  // out = y Wo^T + bo.  The flash kernels (core/cuda/flash_attention.h) never store P: saved
  // are qkv, y and the rows' logsumexp L (fp32 [B, H, N]), from which the backward recomputes P.
  void forward(Context& c, const T* x, T* out, const Sequence& seq, double*) override {
    const int B = seq.B, N = seq.N, C = H_ * d_;
    const int64_t R = seq.rows();
    seq_ = seq;
    x_ = x;
    renew(qkv_out_, c, R * 3 * C);
    renew(logsumexp_, c, int64_t(B) * H_ * N);
    renew(y_, c, R * C);
    qkv_.forward(c, x, qkv_out_.data(), R);
    flash_attention_forward<T>(c.ex, qkv_out_.data(), seq.lengths, seq.causal, B, N, H_, d_,
                               y_.data(), logsumexp_.data());
    proj_.forward(c, y_.data(), out, R);
  }

  // dy = dout Wo;  P = exp(q k^T / sqrt(d) - L);  dv = P^T dy;  dP = dy v^T;
  // dS = P (dP - rowsum(dy y));  dq = dS k / sqrt(d);  dk = dS^T q / sqrt(d);  dx = dqkv Wqkv
  void backward(Context& c, const T* dout, T* dx, const KsvdGrad&) override {
    const int B = seq_.B, N = seq_.N, C = H_ * d_;
    const int64_t R = seq_.rows();
    DeviceBuffer<T> dy = scratch<T>(c, R * C);
    proj_.backward(c, y_.data(), dout, dy.data(), R);
    DeviceBuffer<T> dqkv = scratch<T>(c, R * 3 * C);
    flash_attention_backward<T>(c.ex, qkv_out_.data(), seq_.lengths, seq_.causal, y_.data(),
                                logsumexp_.data(), dy.data(), B, N, H_, d_, dqkv.data());
    qkv_.backward(c, x_, dqkv.data(), dx, R);
    // The key bias gradient is exactly 0 (softmax is invariant to a shift of the keys); the
    // CPU layer writes that value instead of rounding noise, and so does this one.
    zero_device(qkv_.db + C, C, c.ex.stream);
  }

 private:
  DeviceLinear<T> qkv_, proj_;
  int H_, d_;
  Sequence seq_;
  const T* x_ = nullptr;
  DeviceBuffer<T> qkv_out_, y_;
  DeviceBuffer<float> logsumexp_;
};

// ---- Primal-Attention (SPEC §3.2-3.4, model/primal_attention.cc) --------------------------------

template <typename T>
class DevicePrimalAttention : public DeviceAttention<T> {
 public:
  // host: the CPU layer of this rank's heads, the first of them its first_head() of the full
  // layer (channels [first_head d, ...) of the layer input).
  DevicePrimalAttention(const DeviceParameters& params, Attention<float>& layer,
                        const ModelConfig& config)
      : DevicePrimalAttention(params, dynamic_cast<PrimalAttention<float>&>(layer), config.low_rank,
                              config.sampled_len(), config.causal()) {}
  DevicePrimalAttention(const DeviceParameters& params, PrimalAttention<float>& host, int low_rank,
                        int sampled_len, bool causal)
      : qk_(params, host.qk_linear()),
        concat_(params, host.concat_linear()),
        proj_(params, host.proj_linear()),
        we_(params.gemm_value<T>(*host.we())),
        wr_(params.gemm_value<T>(*host.wr())),
        we_f_(params.value(*host.we())),
        wr_f_(params.value(*host.wr())),
        lambda_(params.value(*host.lambda())),
        dwe_(params.grad(*host.we())),
        dwr_(params.grad(*host.wr())),
        dlambda_(params.grad(*host.lambda())),
        H_(qk_.out / (2 * host.head_dim())),
        d_(host.head_dim()),
        s_(low_rank),
        L_(sampled_len),
        c0_(host.first_head() * host.head_dim()),
        causal_(causal) {
    check(host.we()->local_shape.numel() == weight_numel(),
          "cuda::DevicePrimalAttention: " + host.we()->name + " has another shape");
  }

  // qk = x Wqk^T + bqk
  // causal:  qin = prefix mean of q, u = phi(qin), e = u We[h]
  // encoder: Xs = x[b, idx], u = phi(q), we[b,h] = Xs[b,h]^T We[h], e = u we[b,h]
  // likewise r from k with Wr;  KSVD partials: e-sum = sum_real 0.5 (e Lambda)^2, r-sum
  // likewise, t-sum = <We, Wr>;  o_h = [e_h r_h] Wc^T + bc (rows (b, n, h));  out = o Wo^T + bo.
  // Saved: u, |qin|, [e r], o (encoder: Xs, we[b,h], the sampled positions too).
  bool reads_sampled_positions() const override { return !causal_; }

  void forward(Context& c, const T* x, T* out, const Sequence& seq, double* ksvd) override {
    const int B = seq.B, N = seq.N, C = H_ * d_;
    const int64_t R = seq.rows();
    seq_ = seq;
    x_ = x;
    renew(u_, c, 2 * R * C);
    renew(norm_, c, 2 * R * H_);
    renew(er_, c, R * H_ * 2 * s_);
    renew(o_, c, R * C);
    if (!causal_) {
      check(c.sampled != nullptr, "cuda::DevicePrimalAttention: no sampled positions");
      sampled_ = c.sampled;
      renew(xs_, c, int64_t(B) * L_ * C);
      renew(w_eff_, c, 2 * int64_t(B) * H_ * d_ * s_);
      gather_rows<T>(c.ex, x, sampled_, xs_.data(), B, N, L_, C, qk_.in, c0_);
    }
    {
      DeviceBuffer<T> qk = scratch<T>(c, R * 2 * C);  // dead once u is formed
      qk_.forward(c, x, qk.data(), R);
      if (causal_) {
        primal_causal_forward<T>(c.blas, c.ex, qk.data(), we_, wr_, B, N, H_, d_, s_, u_.data(),
                                 norm_.data(), er_.data());
      } else {
        primal_encoder_forward<T>(c.blas, c.ex, qk.data(), xs_.data(), we_, wr_, B, N, L_, H_, d_,
                                  s_, u_.data(), norm_.data(), w_eff_.data(), er_.data());
      }
    }
    ksvd_partial_sums<T>(c.ex, er_.data(), lambda_, seq.lengths, B, N, H_, s_, ksvd);
    ksvd_trace(c.ex, we_f_, wr_f_, weight_numel(), ksvd + 2);
    concat_.forward(c, er_.data(), o_.data(), R * H_);
    proj_.forward(c, o_.data(), out, R);
  }

  // do = dout Wo;  d[e r] = do_h Wc (+ ksvd.de Lambda^2 [e r], real tokens);
  // dLambda += ksvd.de sum_real (e^2 + r^2) Lambda;  dWe += ksvd.dt Wr, dWr += ksvd.dt We;
  // causal:  du = de We^T, dWe[h] += u^T de;  phi and prefix-mean backward -> dqk
  // encoder: du = de we^T, dwe = u^T de, dXs = We dwe^T, dWe[h] += sum_b Xs dwe;  phi -> dqk
  // dx = dqk Wqk  (encoder: + dXs scattered onto the sampled rows)
  void backward(Context& c, const T* dout, T* dx, const KsvdGrad& ksvd) override {
    const int B = seq_.B, N = seq_.N, C = H_ * d_;
    const int64_t R = seq_.rows();
    DeviceBuffer<T> dout_o = scratch<T>(c, R * C);
    proj_.backward(c, o_.data(), dout, dout_o.data(), R);
    // d[e r] in fp32 (the concat's gradient, then the KSVD term added), rounded once to T.
    const int64_t n_er = R * H_ * 2 * s_;
    DeviceBuffer<T> der = scratch<T>(c, n_er);
    DeviceBuffer<float> der_wide;
    float* der_f;
    if constexpr (std::is_same_v<T, float>) {
      der_f = der.data();
    } else {
      der_wide = scratch<float>(c, n_er);
      der_f = der_wide.data();
    }
    concat_.template backward<float>(c, er_.data(), dout_o.data(), der_f, R * H_);
    ksvd_backward<T, float>(c.ex, er_.data(), lambda_, seq_.lengths, B, N, H_, s_, float(ksvd.de),
                            der_f, dlambda_);
    if constexpr (!std::is_same_v<T, float>) convert<T, float>(c.ex, der_f, der.data(), n_er);
    ksvd_trace_backward(c.ex, we_f_, wr_f_, float(ksvd.dt), dwe_, dwr_, weight_numel());
    DeviceBuffer<T> dqk = scratch<T>(c, R * 2 * C);
    if (causal_) {
      primal_causal_backward<T>(c.blas, c.ex, u_.data(), norm_.data(), we_, wr_, der.data(), B, N,
                                H_, d_, s_, dqk.data(), dwe_, dwr_);
      qk_.backward(c, x_, dqk.data(), dx, R);
    } else {
      DeviceBuffer<T> dxs = scratch<T>(c, int64_t(B) * L_ * C);
      zero_device(dxs.data(), dxs.size(), c.ex.stream);
      primal_encoder_backward<T>(c.blas, c.ex, u_.data(), norm_.data(), w_eff_.data(), xs_.data(),
                                 we_, wr_, der.data(), B, N, L_, H_, d_, s_, dqk.data(), dxs.data(),
                                 dwe_, dwr_);
      qk_.backward(c, x_, dqk.data(), dx, R);
      scatter_add_rows<T>(c.ex, dxs.data(), sampled_, dx, B, N, L_, C, qk_.in, c0_);
    }
  }

 private:
  int64_t weight_numel() const { return int64_t(H_) * (causal_ ? d_ : L_) * s_; }

  DeviceLinear<T> qk_, concat_, proj_;
  const T* we_;
  const T* wr_;
  const float* we_f_;
  const float* wr_f_;
  const float* lambda_;
  float* dwe_;
  float* dwr_;
  float* dlambda_;
  int H_, d_, s_, L_;
  int c0_;  // the first input channel of this rank's heads
  bool causal_;
  Sequence seq_;
  const T* x_ = nullptr;
  const int32_t* sampled_ = nullptr;
  DeviceBuffer<T> u_, er_, o_, xs_, w_eff_;
  DeviceBuffer<float> norm_;
};

// ---- the device layer of each attention kind that has one (model/attention_kinds.h) -----------

template <template <typename> class Layer, typename T>
std::unique_ptr<DeviceAttention<T>> make_device_layer(const DeviceParameters& params,
                                                      Attention<float>& host,
                                                      const ModelConfig& config) {
  return std::make_unique<Layer<T>>(params, host, config);
}

template <typename T>
std::unique_ptr<DeviceAttention<T>> make_device_attention(const DeviceParameters& params,
                                                          Attention<float>& host,
                                                          AttentionKind kind,
                                                          const ModelConfig& config) {
  using Factory = std::unique_ptr<DeviceAttention<T>> (*)(const DeviceParameters&,
                                                          Attention<float>&, const ModelConfig&);
  static constexpr std::pair<AttentionKind, Factory> kDeviceLayers[] = {
      {AttentionKind::kSoftmax, &make_device_layer<DeviceSoftmaxAttention, T>},
      {AttentionKind::kPrimal, &make_device_layer<DevicePrimalAttention, T>},
  };
  for (const auto& [k, make] : kDeviceLayers)
    if (k == kind) return make(params, host, config);
  throw Error(std::string("cuda::DeviceTransformer: attention kind ") + attention_kind(kind).name +
              " has no device layer (train.device: CPU runs it)");
}

// ---- one pre-LN block (model/transformer.cc's TransformerLayer) ---------------------------------

template <typename T>
DeviceTransformerLayer<T>::DeviceTransformerLayer(const DeviceParameters& params,
                                                  TransformerLayer<float>& host,
                                                  const ModelConfig& config, int index)
    : index_(index),
      C_(config.width),
      kind_(host.kind()),
      dropout_(config.dropout),
      ln1_(params, host.ln1()),
      ln2_(params, host.ln2()),
      fc1_(params, host.mlp().fc1()),
      fc2_(params, host.mlp().fc2()) {
  F_ = fc1_.out;
  attn_ = make_device_attention<T>(params, host.attention(), kind_, config);
}

// a = Attn(LN1(x)) (0 on padded rows);  x2 = x + Dropout(a);  m = MLP(LN2(x2)) = fc2(GELU(fc1(.)));
// out = x2 + Dropout(m)
template <typename T>
const float* DeviceTransformerLayer<T>::forward(Context& c, const float* x, const Sequence& seq,
                                                double* ksvd) {
  const int64_t R = seq.rows(), n = R * C_;
  seq_ = seq;
  x_ = x;
  renew(ln1_out_, c, n);
  renew(x2_, c, n);
  renew(ln2_out_, c, n);
  renew(h_, c, R * F_);
  renew(gelu_out_, c, R * F_);
  renew(out_, c, n);

  ln1_.forward(c, x, ln1_out_.data(), R);
  {
    DeviceBuffer<T> a = scratch<T>(c, n);
    attn_->forward(c, ln1_out_.data(), a.data(), seq, ksvd);
    zero_padded_rows<T>(c.ex, a.data(), seq.lengths, seq.B, seq.N, C_);
    const DropoutArgs d = dropout_args(dropout_, seq, index_, DropoutSite::kAttention, C_);
    dropout_residual<T, float>(c.ex, a.data(), x, x2_.data(), n, d.stream, d.first, d.p, d.scale);
  }
  ln2_.forward(c, x2_.data(), ln2_out_.data(), R);
  fc1_.forward(c, ln2_out_.data(), h_.data(), R);
  gelu_forward<T>(c.ex, h_.data(), gelu_out_.data(), R * F_);
  {
    DeviceBuffer<T> m = scratch<T>(c, n);
    fc2_.forward(c, gelu_out_.data(), m.data(), R);
    const DropoutArgs d = dropout_args(dropout_, seq, index_, DropoutSite::kMlp, C_);
    dropout_residual<T, float>(c.ex, m.data(), x2_.data(), out_.data(), n, d.stream, d.first, d.p,
                               d.scale);
  }
  return out_.data();
}

// MLP branch:       dx2 = dout + LN2'(MLP'(Dropout'(dout)))
// attention branch: dx = dx2 + LN1'(Attn'(mask Dropout'(dx2)))
template <typename T>
void DeviceTransformerLayer<T>::backward(Context& c, const float* dout, float* dx,
                                         const KsvdGrad& ksvd) {
  const int64_t R = seq_.rows(), n = R * C_;
  DeviceBuffer<float> dx2 = scratch<float>(c, n);
  DeviceBuffer<T> dbranch = scratch<T>(c, n), dln = scratch<T>(c, n);
  copy_device(dx2.data(), dout, n, c.ex.stream);
  DropoutArgs d = dropout_args(dropout_, seq_, index_, DropoutSite::kMlp, C_);
  dropout<float, T>(c.ex, dout, dbranch.data(), n, d.stream, d.first, d.p, d.scale);
  {
    DeviceBuffer<T> dh = scratch<T>(c, R * F_);
    fc2_.backward(c, gelu_out_.data(), dbranch.data(), dh.data(), R);
    gelu_backward<T>(c.ex, h_.data(), dh.data(), dh.data(), R * F_);
    fc1_.backward(c, ln2_out_.data(), dh.data(), dln.data(), R);
  }
  tp_sum(c, dln.data(), n);  // each rank's slice of the MLP gave a part
  ln2_.backward(c, x2_.data(), dln.data(), dx2.data(), R);

  copy_device(dx, dx2.data(), n, c.ex.stream);
  d = dropout_args(dropout_, seq_, index_, DropoutSite::kAttention, C_);
  dropout<float, T>(c.ex, dx2.data(), dbranch.data(), n, d.stream, d.first, d.p, d.scale);
  zero_padded_rows<T>(c.ex, dbranch.data(), seq_.lengths, seq_.B, seq_.N, C_);
  attn_->backward(c, dbranch.data(), dln.data(), ksvd);
  tp_sum(c, dln.data(), n);  // each rank's heads gave a part
  ln1_.backward(c, x_, dln.data(), dx, R);
}

// ---- the model (model/transformer.cc, model/embedding.cc, model/classifier_head.cc) -------------

namespace {

const ModelConfig& checked(const ModelConfig& config) {
  check(config.width % config.heads == 0, "model: heads must divide width");
  check(config.head == HeadKind::kClassifier || config.input == InputKind::kTokens,
        "model: the LM head needs token inputs");
  return config;
}

}  // namespace

template <typename T>
DeviceTransformer<T>::DeviceTransformer(const ModelConfig& config, DeviceTensorParallelGroup* tp)
    : config_(checked(config)),
      tp_(tp),
      shard_layout_(tp ? tp->rank() : 0, tp ? tp->size() : 1),
      host_(config_, &shard_layout_),
      allocator_(),
      blas_(stream_.get()),
      params_(std::make_unique<DeviceParameters>(host_.params(), allocator_, stream_.get(),
                                                 std::is_same_v<T, bf16>)),
      norm_(*params_, host_.final_norm()),
      adam_m_(allocator_, params_->numel(), stream_.get()),
      adam_v_(allocator_, params_->numel(), stream_.get()) {
  layers_.reserve(config_.layers.size());
  for (int i = 0; i < int(config_.layers.size()); ++i) {
    layers_.emplace_back(*params_, host_.layers()[i], config_, i);
    reads_sampled_positions_ |= layers_.back().reads_sampled_positions();
  }
  if (config_.input == InputKind::kPatches) {
    patch_ = std::make_unique<DeviceLinear<T>>(*params_, *host_.embedding().patch());
  }
  if (config_.head == HeadKind::kClassifier) {
    head_ = std::make_unique<Head>(Head{DeviceLinear<T>(*params_, host_.head()->fc1()),
                                        DeviceLinear<T>(*params_, host_.head()->fc2()),
                                        {},
                                        {},
                                        {}});
  }
  // The order the gradients become final: a slot per parameter, spanning the alignment gap up
  // to the next one (zeros, and they stay zeros: averaging them is harmless and makes a
  // layer's gradients one range). And the ranges of the gradients this rank counts in the
  // global norm, adjacent ones merged.
  const std::vector<ParameterLayout::Entry>& entries = params_->layout().entries();
  std::vector<GradSlot> slots;
  for (size_t i = 0; i < entries.size(); ++i) {
    const ParameterLayout::Entry& e = entries[i];
    const int64_t next = i + 1 < entries.size() ? entries[i + 1].offset : params_->numel();
    slots.push_back({{e.offset, next - e.offset}, e.layer, e.sharding.sum_grad_over_tp});
    if (!counts_in_global_norm(e.sharding, shard_layout_.rank())) continue;
    if (!norm_ranges_.empty() &&
        norm_ranges_.back().offset + norm_ranges_.back().count == e.offset) {
      norm_ranges_.back().count += next - e.offset;
    } else {
      norm_ranges_.push_back({e.offset, next - e.offset});
    }
  }
  ready_ = primal::ready_order(slots, int(config_.layers.size()));
  zero_device(adam_m_.data(), adam_m_.size(), stream_.get());
  zero_device(adam_v_.data(), adam_v_.size(), stream_.get());
  sums_ =
      DeviceBuffer<double>(allocator_, 3 * int64_t(config_.num_primal_layers()) + 1, stream_.get());
  stream_.synchronize();
}

template <typename T>
DeviceTransformer<T>::~DeviceTransformer() {
  // Kernels may still read the buffers that are about to return to the cache.
  cudaStreamSynchronize(stream_.get());
}

// x = [cls;] (tok_emb[tokens] or patches Wp^T + bp) + pos_emb[0..S)
template <typename T>
void DeviceTransformer<T>::embed_forward(Context& c, const Batch& batch) {
  const int B = batch.B, N = batch.N, C = config_.width, S = seq_.N;
  const int64_t inputs = int64_t(B) * N;
  cudaStream_t s = c.ex.stream;
  const T* in = nullptr;
  if (patch_) {
    check(int64_t(batch.patches.size()) == inputs * config_.patch_dim,
          "cuda::DeviceTransformer: the batch needs B N patch_dim patch values");
    const int64_t n = inputs * config_.patch_dim;
    renew(patches_f_, c, n);
    copy_to_device(patches_f_.data(), batch.patches.data(), patches_f_.bytes(), s);
    const T* patches;
    if constexpr (std::is_same_v<T, float>) {
      patches = patches_f_.data();
    } else {
      renew(patches_, c, n);
      convert<T, float>(c.ex, patches_f_.data(), patches_.data(), n);
      patches = patches_.data();
    }
    renew(patch_out_, c, inputs * C);
    patch_->forward(c, patches, patch_out_.data(), inputs);
    in = patch_out_.data();
  } else {
    // Tokens, and each token's rows for the backward.
    check(int64_t(batch.tokens.size()) == inputs,
          "cuda::DeviceTransformer: the batch needs B N tokens");
    token_rows(batch.tokens.data(), inputs, config_.vocab, token_offsets_, token_rows_);
    renew(tokens_, c, inputs);
    renew(offsets_d_, c, config_.vocab + 1);
    renew(rows_d_, c, inputs);
    copy_to_device(tokens_.data(), batch.tokens.data(), tokens_.bytes(), s);
    copy_to_device(offsets_d_.data(), token_offsets_.data(), offsets_d_.bytes(), s);
    copy_to_device(rows_d_.data(), token_rows_.data(), rows_d_.bytes(), s);
  }
  renew(embedded_, c, int64_t(B) * S * C);
  embedding_forward<T, float>(c.ex, patch_ ? nullptr : tokens_.data(),
                              patch_ ? nullptr : params_->value(*host_.embedding().tokens()), in,
                              first_ ? params_->value(*host_.embedding().cls()) : nullptr,
                              params_->value(*host_.embedding().positions()), embedded_.data(), B,
                              N, first_, C);
}

// dpos[s] += sum_b dx[b, s];  dcls += sum_b dx[b, 0];  dtok[t] += dx at t's rows;
// patches: through the patch Linear (no input gradient)
template <typename T>
void DeviceTransformer<T>::embed_backward(Context& c, const float* dx) {
  const int B = seq_.B, S = seq_.N, N = batch_N_, C = config_.width;
  position_backward<float>(c.ex, dx, params_->grad(*host_.embedding().positions()), B, S, C);
  if (first_) cls_backward<float>(c.ex, dx, params_->grad(*host_.embedding().cls()), B, S, C);
  if (!patch_) {
    token_backward<float>(c.ex, dx, offsets_d_.data(), rows_d_.data(),
                          params_->grad(*host_.embedding().tokens()), config_.vocab, N, first_, C);
    return;
  }
  // The input rows of dx (without the CLS slot), as T, then the patch Linear's backward.
  const int64_t n = int64_t(B) * N * C;
  DeviceBuffer<float> rows = scratch<float>(c, n);
  PRIMAL_CUDA_CHECK(cudaMemcpy2DAsync(rows.data(), sizeof(float) * size_t(N) * C,
                                      dx + int64_t(first_) * C, sizeof(float) * size_t(S) * C,
                                      sizeof(float) * size_t(N) * C, size_t(B),
                                      cudaMemcpyDeviceToDevice, c.ex.stream));
  const T* din;
  const T* patches;
  DeviceBuffer<T> din_low;
  if constexpr (std::is_same_v<T, float>) {
    din = rows.data();
    patches = patches_f_.data();
  } else {
    din_low = scratch<T>(c, n);
    convert<T, float>(c.ex, rows.data(), din_low.data(), n);
    din = din_low.data();
    patches = patches_.data();
  }
  patch_->backward(c, patches, din, static_cast<T*>(nullptr), int64_t(B) * N);
}

// pooled = x[:, 0] (CLS) or the mean over real rows (MEAN);  logits = fc2(ReLU(fc1(pooled)))
template <typename T>
void DeviceTransformer<T>::head_forward(Context& c) {
  Head& h = *head_;
  const int B = seq_.B, S = seq_.N, C = config_.width, F = config_.head_width;
  const int K = config_.num_classes;
  renew(h.pooled, c, int64_t(B) * C);
  renew(h.hidden_pre, c, int64_t(B) * F);
  renew(h.act, c, int64_t(B) * F);
  pool_forward<T>(c.ex, final_x_.data(), device_seq_.lengths, h.pooled.data(), B, S, C,
                  config_.pooling == Pooling::kCls);
  h.fc1.forward(c, h.pooled.data(), h.hidden_pre.data(), B);
  relu_forward<T>(c.ex, h.hidden_pre.data(), h.act.data(), int64_t(B) * F);
  renew(logits_, c, int64_t(B) * K);
  h.fc2.template forward<float>(c, h.act.data(), logits_.data(), B);  // fp32 logits in both modes
}

// dact = dlogits W2 (0 where fc1's output <= 0);  dpooled = dact W1;
// CLS: dx[b, 0] = dpooled;  MEAN: dx[b, n] = dpooled / len_b on real rows
template <typename T>
void DeviceTransformer<T>::head_backward(Context& c, const T* dlogits, T* dx) {
  Head& h = *head_;
  const int B = seq_.B, S = seq_.N, C = config_.width, F = config_.head_width;
  const int K = config_.num_classes;
  DeviceBuffer<T> dact = scratch<T>(c, int64_t(B) * F), dpooled = scratch<T>(c, int64_t(B) * C);
  blas_.gemm<T, T>(Trans::kNo, Trans::kNo, B, F, K, 1.f, dlogits, K, h.fc2.w, F, 0.f, dact.data(),
                   F);
  blas_.gemm<T, float>(Trans::kYes, Trans::kNo, K, F, B, 1.f, dlogits, K, h.act.data(), F, 1.f,
                       h.fc2.dw, F);
  bias_backward<float>(c.ex, logits_.data(), h.fc2.db, B, K);  // the fp32 dlogits
  relu_backward<T>(c.ex, h.hidden_pre.data(), dact.data(), dact.data(), int64_t(B) * F);
  h.fc1.backward(c, h.pooled.data(), dact.data(), dpooled.data(), B);
  pool_backward<T>(c.ex, dpooled.data(), device_seq_.lengths, dx, B, S, C,
                   config_.pooling == Pooling::kCls);
}

// x = embed(input);  layers;  x = LN_f(x) (0 on padded rows);
// logits = x tok_emb^T (LM) or head(pool(x)) (classifier);  CE = mean over predictions;
// KSVD from the layers' partial sums;  loss = CE + eta KSVD
template <typename T>
LossTerms DeviceTransformer<T>::forward(const Batch& batch, int64_t step, bool training) {
  const int B = batch.B, N = batch.N, C = config_.width;
  first_ = config_.has_cls() ? 1 : 0;
  batch_N_ = N;
  const int S = N + first_;
  const int64_t R = int64_t(B) * S;
  check(R <= INT32_MAX, "cuda::DeviceTransformer: more than 2^31 rows");
  if (S > config_.max_len) {
    throw Error("Embedding: " + std::to_string(S) + " positions but the position table has " +
                std::to_string(config_.max_len));
  }
  const bool lm = config_.head == HeadKind::kLm;
  const int64_t targets = lm ? int64_t(B) * N : B;
  check_targets(batch.targets, targets, lm ? config_.vocab : config_.num_classes);
  Context c{blas_, {stream_.get(), &allocator_}, *params_, nullptr, tp_};
  cudaStream_t s = stream_.get();

  seq_ =
      Sequence{B, S, nullptr, config_.causal(), config_.seed, step, batch.sample_offset, training};
  device_seq_ = seq_;
  if (!batch.lengths.empty()) {
    check(int(batch.lengths.size()) == B, "cuda::DeviceTransformer: the batch needs B lengths");
    lengths_.resize(size_t(B));
    for (int b = 0; b < B; ++b) lengths_[b] = batch.lengths[b] + first_;
    seq_.lengths = lengths_.data();
    renew(lengths_d_, c, B);
    copy_to_device(lengths_d_.data(), lengths_.data(), lengths_d_.bytes(), s);
    device_seq_.lengths = lengths_d_.data();
  }
  if (reads_sampled_positions_) {
    sampled_positions(seq_.lengths, B, S, config_.sampled_len(), sampled_);
    renew(sampled_d_, c, int64_t(sampled_.size()));
    copy_to_device(sampled_d_.data(), sampled_.data(), sampled_d_.bytes(), s);
    c.sampled = sampled_d_.data();
  }
  renew(targets_, c, targets);
  copy_to_device(targets_.data(), batch.targets.data(), targets_.bytes(), s);
  zero_device(sums_.data(), sums_.size(), s);

  embed_forward(c, batch);
  const float* x = embedded_.data();
  int primal = 0;
  for (auto& layer : layers_) {
    double* ksvd = attention_kind(layer.kind()).ksvd_loss ? sums_.data() + 3 * primal++ : nullptr;
    x = layer.forward(c, x, device_seq_, ksvd);
  }
  last_x_ = x;
  renew(final_x_, c, R * C);
  norm_.forward(c, x, final_x_.data(), R);
  zero_padded_rows<T>(c.ex, final_x_.data(), device_seq_.lengths, B, S, C);

  if (lm) {
    // Tied LM head, fp32 logits in both modes.
    const int V = config_.vocab;
    renew(logits_, c, R * V);
    blas_.gemm<T, float>(Trans::kNo, Trans::kYes, int(R), V, C, 1.f, final_x_.data(), C,
                         params_->gemm_value<T>(*host_.embedding().tokens()), C, 0.f,
                         logits_.data(), V);
    cross_entropy_forward<float>(c.ex, logits_.data(), targets_.data(), R, V,
                                 sums_.data() + 3 * primal);
  } else {
    head_forward(c);
    cross_entropy_forward<float>(c.ex, logits_.data(), targets_.data(), B, config_.num_classes,
                                 sums_.data() + 3 * primal);
  }
  predictions_ = targets;

  // Each rank's heads gave a part of the KSVD sums (the CE sum is the same on every rank).
  if (tp_ && tp_->size() > 1 && primal > 0) tp_->all_reduce_sum(sums_.data(), 3 * primal, s);
  // One synchronisation: the KSVD partials and the CE sum come back together.
  host_sums_.resize(size_t(sums_.size()));
  copy_to_host(host_sums_.data(), sums_.data(), sums_.bytes(), s);
  wait("the loss and the KSVD sums");
  ksvd_sums_.assign(host_sums_.begin(), host_sums_.begin() + 3 * primal);
  ksvd_sums_.push_back(double(seq_.real_tokens()));
  if (reduce_ksvd) reduce_ksvd(ksvd_sums_);
  partials_.clear();
  for (int l = 0; l < primal; ++l) {
    partials_.push_back({ksvd_sums_[3 * l], ksvd_sums_[3 * l + 1], ksvd_sums_[3 * l + 2]});
  }
  ksvd_loss(partials_, ksvd_sums_.back(), config_.heads, config_.eta, ksvd_);
  LossTerms out;
  out.ce = host_sums_.back() / double(predictions_);
  out.predictions = predictions_;
  out.ksvd = ksvd_.value;
  out.ksvd_terms = ksvd_.terms;
  out.loss = out.ce + config_.eta * out.ksvd;
  return out;
}

// dlogits = (p - onehot) / predictions;  LM: dx_f = dlogits tok_emb, dtok_emb += dlogits^T x_f;
// classifier: the head's backward;  dx_f = 0 on padded rows;  LN_f backward;  the layers in
// reverse;  the embedding's backward
template <typename T>
void DeviceTransformer<T>::backward() {
  const int B = seq_.B, S = seq_.N, C = config_.width;
  const int64_t R = seq_.rows();
  const int K = config_.head == HeadKind::kLm ? config_.vocab : config_.num_classes;
  Context c{blas_, {stream_.get(), &allocator_}, *params_, nullptr, tp_};  // layers kept samples
  cudaStream_t s = stream_.get();
  const float scale = float(1.0 / double(predictions_));
  cross_entropy_backward<float>(c.ex, logits_.data(), targets_.data(), scale, logits_.data(),
                                predictions_, K);
  const T* dlogits;
  DeviceBuffer<T> dlogits_low;
  if constexpr (std::is_same_v<T, float>) {
    dlogits = logits_.data();
  } else {
    dlogits_low = scratch<T>(c, predictions_ * K);
    convert<T, float>(c.ex, logits_.data(), dlogits_low.data(), predictions_ * K);
    dlogits = dlogits_low.data();
  }
  DeviceBuffer<float> dout = scratch<float>(c, R * C), din = scratch<float>(c, R * C);
  {
    DeviceBuffer<T> dx = scratch<T>(c, R * C);
    if (config_.head == HeadKind::kLm) {
      blas_.gemm<T, T>(Trans::kNo, Trans::kNo, int(R), C, K, 1.f, dlogits, K,
                       params_->gemm_value<T>(*host_.embedding().tokens()), C, 0.f, dx.data(), C);
      blas_.gemm<T, float>(Trans::kYes, Trans::kNo, K, C, int(R), 1.f, dlogits, K, final_x_.data(),
                           C, 1.f, params_->grad(*host_.embedding().tokens()), C);
    } else {
      head_backward(c, dlogits, dx.data());
    }
    zero_padded_rows<T>(c.ex, dx.data(), device_seq_.lengths, B, S, C);
    zero_device(dout.data(), R * C, s);
    norm_.backward(c, last_x_, dx.data(), dout.data(), R);
  }
  size_t primal = ksvd_.grads.size();
  for (auto it = layers_.rbegin(); it != layers_.rend(); ++it) {
    KsvdGrad g;
    if (attention_kind(it->kind()).ksvd_loss) {
      g = ksvd_.grads[--primal];
      g.de *= ksvd_data_grad_scale;
    }
    it->backward(c, dout.data(), din.data(), g);
    std::swap(dout, din);
    if (on_grads_final) on_grads_final(int(layers_.rend() - it) - 1);
  }
  embed_backward(c, dout.data());
  if (on_grads_final) on_grads_final(-1);
}

template <typename T>
LossTerms DeviceTransformer<T>::forward_backward(const Batch& batch, int64_t step) {
  params_->zero_grads();
  LossTerms out = forward(batch, step);
  backward();
  for (int layer = -1; layer < int(layers_.size()); ++layer) sum_grads_over_tp(layer);
  return out;
}

template <typename T>
void DeviceTransformer<T>::sum_grads_over_tp(int layer) {
  if (!tp_ || tp_->size() == 1) return;
  for (const GradRange& r : ready_.tp_summed_of_layer[layer + 1]) {
    tp_->all_reduce_sum(params_->grads() + r.offset, r.count, stream_.get());
  }
}

// norm = sqrt(sum g^2) (sum_tp of this rank's counted gradients);
// g *= max_norm / (norm + 1e-6) where that is below 1
template <typename T>
double DeviceTransformer<T>::clip_grad_norm(double max_norm) {
  em::check_max_norm(max_norm);
  const Exec ex{stream_.get(), &allocator_};
  DeviceBuffer<double> sum(allocator_, 1, ex.stream);
  zero_device(sum.data(), 1, ex.stream);
  for (const GradRange& r : norm_ranges_) {
    sum_of_squares(ex, params_->grads() + r.offset, r.count, sum.data());
  }
  if (tp_ && tp_->size() > 1) tp_->all_reduce_sum(sum.data(), 1, ex.stream);
  double host = 0;
  copy_to_host(&host, sum.data(), sizeof host, ex.stream);
  wait("the gradient norm");
  const double norm = std::sqrt(host);
  const double coef = em::clip_coefficient(norm, max_norm);
  if (coef < 1) scale_inplace(ex, params_->grads(), params_->numel(), float(coef));
  return norm;
}

// Per run of parameters sharing a decay flag: em::adamw_update on every element.
template <typename T>
void DeviceTransformer<T>::adamw_step(double lr, const em::AdamWOptions& o) {
  const em::AdamWStepScalars<float> scalars =
      em::adamw_step_scalars<float>(lr, o, adamw_steps_ + 1);
  ++adamw_steps_;
  const Exec ex{stream_.get(), &allocator_};
  for (const ParameterLayout::Run& run : params_->layout().decay_runs()) {
    cuda::adamw_step(ex, params_->values() + run.begin, params_->grads() + run.begin,
                     adam_m_.data() + run.begin, adam_v_.data() + run.begin, run.end - run.begin,
                     scalars.of(run.decay));
  }
  params_->refresh_bf16();
}

// The moments of each parameter between the device's aligned buffers and the host layout;
// the gaps between parameters stay 0.
template <typename T>
void DeviceTransformer<T>::download_adamw(float* exp_avg, float* exp_avg_sq) const {
  for (const ParameterLayout::Entry& e : params_->layout().entries()) {
    const size_t bytes = sizeof(float) * size_t(e.numel);
    copy_to_host(exp_avg + e.host_offset, adam_m_.data() + e.offset, bytes, stream_.get());
    copy_to_host(exp_avg_sq + e.host_offset, adam_v_.data() + e.offset, bytes, stream_.get());
  }
  wait("the AdamW state's host copy");
}

template <typename T>
void DeviceTransformer<T>::upload_adamw(const float* exp_avg, const float* exp_avg_sq,
                                        int64_t steps) {
  check(steps >= 0, "DeviceTransformer::upload_adamw: negative step count");
  for (const ParameterLayout::Entry& e : params_->layout().entries()) {
    const size_t bytes = sizeof(float) * size_t(e.numel);
    copy_to_device(adam_m_.data() + e.offset, exp_avg + e.host_offset, bytes, stream_.get());
    copy_to_device(adam_v_.data() + e.offset, exp_avg_sq + e.host_offset, bytes, stream_.get());
  }
  wait("the AdamW state's upload");
  adamw_steps_ = steps;
}

template struct DeviceLinear<float>;
template struct DeviceLinear<bf16>;
template void DeviceLinear<float>::forward<float>(Context&, const float*, float*, int64_t) const;
template void DeviceLinear<bf16>::forward<bf16>(Context&, const bf16*, bf16*, int64_t) const;
template void DeviceLinear<bf16>::forward<float>(Context&, const bf16*, float*, int64_t) const;
template void DeviceLinear<float>::backward<float>(Context&, const float*, const float*, float*,
                                                   int64_t) const;
template void DeviceLinear<bf16>::backward<bf16>(Context&, const bf16*, const bf16*, bf16*,
                                                 int64_t) const;
template void DeviceLinear<bf16>::backward<float>(Context&, const bf16*, const bf16*, float*,
                                                  int64_t) const;
template struct DeviceLayerNorm<float>;
template struct DeviceLayerNorm<bf16>;
template class DeviceTransformerLayer<float>;
template class DeviceTransformerLayer<bf16>;
template class DeviceTransformer<float>;
template class DeviceTransformer<bf16>;

}  // namespace primal::cuda
