// The model's parameters on the device: one flat fp32 value buffer and one flat fp32 gradient
// buffer holding every parameter of the CPU ParameterStore<float> (same names, shapes and
// order), each starting at a multiple of kAlign elements: cuBLASLt picks its kernels for
// 256-byte aligned operands, and the bias and weight pointers of a Linear are parameters. The
// gaps stay 0 (their gradients too, so neither the clip nor AdamW changes them). In bf16 mode a
// bf16 copy of the values is what the GEMMs read (refreshed after every upload and optimizer
// step); the fp32 values are the master weights and everything else (LayerNorm, Lambda, the
// KSVD trace, AdamW) reads them. Under tensor parallelism the store is this rank's (SPEC §5)
// and the buffers hold its shards: each entry knows its full shape, its local shape and its
// sharding.
#pragma once

#include <string>
#include <vector>

#include "core/cuda/allocator.h"
#include "core/cuda/kernels.h"
#include "model/parameters.h"

namespace primal::cuda {

// Where each parameter lies in the flat buffers: host bookkeeping only (tested without a GPU).
class ParameterLayout {
 public:
  // Every parameter starts at a multiple of kAlign elements: 512 bytes of fp32, 256 of bf16.
  static constexpr int64_t kAlign = 128;

  struct Entry {
    std::string name;
    Shape shape;        // full (SPEC §4)
    Shape local_shape;  // this rank's shard: what the buffers hold
    Sharding sharding;
    int64_t offset;       // in the device buffers
    int64_t host_offset;  // in the CPU store's buffers
    int64_t numel;
    bool decay;  // Parameter::weight_decay
    int layer;   // Parameter::layer
  };
  // A maximal range of the flat buffers whose parameters share a decay flag (trainer/adamw.cc
  // walks the same runs).
  struct Run {
    int64_t begin, end;
    bool decay;
  };

  // store: finalized (any tensor-parallel rank).
  explicit ParameterLayout(const ParameterStore<float>& store);

  const std::vector<Entry>& entries() const { return entries_; }
  const Entry& at(const std::string& name) const;  // throws naming a missing parameter
  int64_t numel() const { return numel_; }         // of the device buffers, gaps included
  int64_t host_numel() const { return host_numel_; }
  const std::vector<Run>& decay_runs() const { return runs_; }

 private:
  std::vector<Entry> entries_;
  std::vector<Run> runs_;
  int64_t numel_ = 0, host_numel_ = 0;
};

class DeviceParameters {
 public:
  // Allocates the buffers (values, grads, and the bf16 copy when bf16_copy) and uploads
  // store's values; the gradients start at 0.
  DeviceParameters(const ParameterStore<float>& store, CachingAllocator& allocator,
                   cudaStream_t stream, bool bf16_copy);

  const ParameterLayout& layout() const { return layout_; }
  int64_t numel() const { return layout_.numel(); }

  // Host copies (they synchronise the stream). The store must have this layout.
  void upload(const ParameterStore<float>& store);  // values; refreshes the bf16 copy
  void download(ParameterStore<float>& store) const;
  void download_grads(ParameterStore<float>& store) const;

  void zero_grads();
  // The bf16 copy := the fp32 values (after the optimizer changed them).
  void refresh_bf16();

  float* values() const { return values_.data(); }
  float* grads() const { return grads_.data(); }
  // A parameter of the host store's model (the registry: its name finds it here).
  float* value(const Parameter<float>& p) const {
    return values_.data() + layout_.at(p.name).offset;
  }
  float* grad(const Parameter<float>& p) const { return grads_.data() + layout_.at(p.name).offset; }
  // What a GEMM of element type T reads: the fp32 values (T = float) or the bf16 copy.
  template <typename T>
  const T* gemm_value(const Parameter<float>& p) const;

 private:
  // host[e.host_offset ..] := device[e.offset ..] for every parameter, then synchronise.
  void copy_out(const float* device, float* host) const;

  ParameterLayout layout_;
  Exec ex_;
  DeviceBuffer<float> values_, grads_;
  DeviceBuffer<bf16> values_bf16_;
};

template <>
const float* DeviceParameters::gemm_value<float>(const Parameter<float>& p) const;
template <>
const bf16* DeviceParameters::gemm_value<bf16>(const Parameter<float>& p) const;

}  // namespace primal::cuda
