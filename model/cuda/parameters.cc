#include "model/cuda/parameters.h"

#include <cuda_runtime_api.h>

#include "core/cuda/check.h"

namespace primal::cuda {

ParameterLayout::ParameterLayout(const ParameterStore<float>& store) {
  const auto& all = store.all();
  check(!all.empty() && !all.front().value.empty(),
        "cuda::ParameterLayout: the ParameterStore is not finalized");
  const float* base = all.front().value.data();
  for (const auto& p : all) {
    const int64_t host_offset = p.value.data() - base, numel = p.value.numel();
    check(host_offset == host_numel_,
          "cuda::ParameterLayout: " + p.name + " is not where the store's layout puts it");
    const int64_t offset = (numel_ + kAlign - 1) / kAlign * kAlign;
    entries_.push_back({p.name, p.shape, p.local_shape, p.sharding, offset, host_offset, numel,
                        p.weight_decay, p.layer});
    // A run spans the gap before a parameter of its own flag (the gap's zeros stay zeros).
    if (!runs_.empty() && runs_.back().decay == p.weight_decay) {
      runs_.back().end = offset + numel;
    } else {
      runs_.push_back({offset, offset + numel, p.weight_decay});
    }
    numel_ = offset + numel;
    host_numel_ += numel;
  }
  check(host_numel_ == store.numel(),
        "cuda::ParameterLayout: the store's buffers are not contiguous");
}

const ParameterLayout::Entry& ParameterLayout::at(const std::string& name) const {
  for (const Entry& e : entries_)
    if (e.name == name) return e;
  throw Error("cuda::ParameterLayout: no parameter named " + name);
}

DeviceParameters::DeviceParameters(const ParameterStore<float>& store, CachingAllocator& allocator,
                                   cudaStream_t stream, bool bf16_copy)
    : layout_(store),
      ex_{stream, &allocator},
      values_(allocator, layout_.numel(), stream),
      grads_(allocator, layout_.numel(), stream) {
  if (bf16_copy) values_bf16_ = DeviceBuffer<bf16>(allocator, layout_.numel(), stream);
  PRIMAL_CUDA_CHECK(cudaMemsetAsync(values_.data(), 0, values_.bytes(), stream));  // the gaps
  zero_grads();
  upload(store);
  PRIMAL_CUDA_CHECK(cudaStreamSynchronize(stream));
}

namespace {

void check_same_layout(const ParameterLayout& layout, const ParameterStore<float>& store) {
  check(store.numel() == layout.host_numel() && store.all().size() == layout.entries().size(),
        "cuda::DeviceParameters: the host ParameterStore has another layout");
  auto p = store.all().begin();
  for (const ParameterLayout::Entry& e : layout.entries()) {
    check(p->name == e.name && p->value.numel() == e.numel,
          "cuda::DeviceParameters: the host ParameterStore has another layout at " + e.name);
    ++p;
  }
}

}  // namespace

void DeviceParameters::upload(const ParameterStore<float>& store) {
  check_same_layout(layout_, store);
  const float* host = store.all().front().value.data();
  for (const ParameterLayout::Entry& e : layout_.entries()) {
    copy_to_device(values_.data() + e.offset, host + e.host_offset, sizeof(float) * size_t(e.numel),
                   ex_.stream);
  }
  refresh_bf16();
  PRIMAL_CUDA_CHECK(cudaStreamSynchronize(ex_.stream));
}

void DeviceParameters::download(ParameterStore<float>& store) const {
  check_same_layout(layout_, store);
  copy_out(values_.data(), store.values().data());
}

void DeviceParameters::download_grads(ParameterStore<float>& store) const {
  check_same_layout(layout_, store);
  copy_out(grads_.data(), store.grads().data());
}

void DeviceParameters::copy_out(const float* device, float* host) const {
  for (const ParameterLayout::Entry& e : layout_.entries()) {
    copy_to_host(host + e.host_offset, device + e.offset, sizeof(float) * size_t(e.numel),
                 ex_.stream);
  }
  PRIMAL_CUDA_CHECK(cudaStreamSynchronize(ex_.stream));
}

void DeviceParameters::zero_grads() {
  PRIMAL_CUDA_CHECK(cudaMemsetAsync(grads_.data(), 0, grads_.bytes(), ex_.stream));
}

void DeviceParameters::refresh_bf16() {
  if (values_bf16_.data()) convert<bf16, float>(ex_, values_.data(), values_bf16_.data(), numel());
}

template <>
const float* DeviceParameters::gemm_value<float>(const Parameter<float>& p) const {
  return value(p);
}

template <>
const bf16* DeviceParameters::gemm_value<bf16>(const Parameter<float>& p) const {
  check(values_bf16_.data() != nullptr, "cuda::DeviceParameters: no bf16 copy (fp32 mode)");
  return values_bf16_.data() + layout_.at(p.name).offset;
}

}  // namespace primal::cuda
