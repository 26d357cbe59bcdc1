// The attention kinds a Transformer layer can be (SPEC §3), one entry each in a registry.
// What the rest of the code asks of a kind is its entry here (its name, its CPU layer, its
// GEMM FLOPs, whether it adds KSVD terms) or a virtual of its layer (model/attention.h:
// the incremental generation step, the matrix the spectrum tool analyses); the device layer
// is the kind's entry in model/cuda's table. Nothing else decides by kind.
//
// A new kind: its layer's files (which define its AttentionKindSpec with attention_kind_spec),
// its line in model/attention_kinds.cc, and its value in AttentionKind and in the config's
// enum (configs/primal.proto: the same name).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "model/attention.h"
#include "model/config.h"
#include "model/parameters.h"
#include "model/tensor_parallel.h"

namespace primal {

// GEMM FLOPs of one layer's attention, forward and backward, on B samples of S positions (the
// CLS slot included): what the layer issues to gemm() (docs/telemetry.md).
struct AttentionFlops {
  int64_t forward = 0, backward = 0;
};

// A model config a kind cannot run: the field of model to blame ("low_rank") and why; an
// empty field: none.
struct ConfigProblem {
  std::string field, message;
};

template <typename T>
using AttentionFactory = std::unique_ptr<Attention<T>> (*)(ParameterStore<T>& params,
                                                           const std::string& name,
                                                           const ModelConfig& config,
                                                           TensorParallelGroup* tp);

struct AttentionKindSpec {
  AttentionKind kind;
  const char* name;       // the config's spelling ("PRIMAL"), also in spectrum CSVs and benchmarks
  bool ksvd_loss;         // its layers add KSVD terms (SPEC §3.4) to the loss
  const char* plot_dash;  // its lines in spectrum plots: an SVG stroke-dasharray, "" for solid
  AttentionFactory<float> make_float;
  AttentionFactory<double> make_double;
  AttentionFlops (*gemm_flops)(const ModelConfig& config, int64_t B, int64_t S);
  ConfigProblem (*config_problem)(const ModelConfig& config);  // null: any config runs

  template <typename T>
  std::unique_ptr<Attention<T>> make(ParameterStore<T>& params, const std::string& layer_name,
                                     const ModelConfig& config, TensorParallelGroup* tp) const {
    if constexpr (std::is_same_v<T, float>) {
      return make_float(params, layer_name, config, tp);
    } else {
      return make_double(params, layer_name, config, tp);
    }
  }
};

// Layer<T> is built from (params, name, config, tp).
template <template <typename> class Layer, typename T>
std::unique_ptr<Attention<T>> make_attention_layer(ParameterStore<T>& params,
                                                   const std::string& name,
                                                   const ModelConfig& config,
                                                   TensorParallelGroup* tp) {
  return std::make_unique<Layer<T>>(params, name, config, tp);
}

template <template <typename> class Layer>
constexpr AttentionKindSpec attention_kind_spec(
    AttentionKind kind, const char* name, bool ksvd_loss, const char* plot_dash,
    AttentionFlops (*gemm_flops)(const ModelConfig&, int64_t, int64_t),
    ConfigProblem (*config_problem)(const ModelConfig&) = nullptr) {
  return {kind,
          name,
          ksvd_loss,
          plot_dash,
          &make_attention_layer<Layer, float>,
          &make_attention_layer<Layer, double>,
          gemm_flops,
          config_problem};
}

// The entry of a kind (every AttentionKind has one).
const AttentionKindSpec& attention_kind(AttentionKind kind);
// The entry named name (the config's spelling), or null.
const AttentionKindSpec* find_attention_kind(std::string_view name);
// Every kind, in the registry's order (benchmarks run each).
std::span<const AttentionKindSpec* const> attention_kinds();
// Every kind's name, for messages: "SOFTMAX, PRIMAL".
std::string attention_kind_names();

}  // namespace primal
