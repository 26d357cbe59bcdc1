#include "model/attention_kinds.h"

#include <algorithm>

#include "core/error.h"

namespace primal {

// Defined in each kind's own file.
extern const AttentionKindSpec kSoftmaxAttentionKind, kPrimalAttentionKind, kLinearAttentionKind;

namespace {

const AttentionKindSpec* const kAttentionKinds[] = {
    &kSoftmaxAttentionKind,
    &kPrimalAttentionKind,
    &kLinearAttentionKind,
};

}  // namespace

std::span<const AttentionKindSpec* const> attention_kinds() {
  return kAttentionKinds;
}

const AttentionKindSpec& attention_kind(AttentionKind kind) {
  for (const AttentionKindSpec* spec : kAttentionKinds)
    if (spec->kind == kind) return *spec;
  throw Error("attention kind " + std::to_string(int(kind)) + " has no registry entry");
}

const AttentionKindSpec* find_attention_kind(std::string_view name) {
  for (const AttentionKindSpec* spec : kAttentionKinds)
    if (name == spec->name) return spec;
  return nullptr;
}

std::string attention_kind_names() {
  std::string out;
  for (const AttentionKindSpec* spec : kAttentionKinds) {
    if (!out.empty()) out += ", ";
    out += spec->name;
  }
  return out;
}

int ModelConfig::num_primal_layers() const {
  return int(std::count_if(layers.begin(), layers.end(),
                           [](AttentionKind k) { return attention_kind(k).ksvd_loss; }));
}

}  // namespace primal
