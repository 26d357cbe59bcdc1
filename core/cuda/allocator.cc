#include "core/cuda/allocator.h"

#include <algorithm>
#include <bit>
#include <string>

#include "core/cuda/check.h"

namespace primal::cuda {
namespace {

class CudaMemorySource final : public MemorySource {
 public:
  void* allocate(size_t bytes) override {
    void* p = nullptr;
    const cudaError_t status = cudaMalloc(&p, bytes);
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // not sticky: clear it and let the allocator retry
      return nullptr;
    }
    PRIMAL_CUDA_CHECK(status);
    return p;
  }
  void release(void* p) override { PRIMAL_CUDA_CHECK(cudaFree(p)); }
  void* create_event() override {
    cudaEvent_t e = nullptr;
    PRIMAL_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }
  void destroy_event(void* event) override { cudaEventDestroy(static_cast<cudaEvent_t>(event)); }
  void record_event(void* event, cudaStream_t stream) override {
    PRIMAL_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event), stream));
  }
  bool event_done(void* event) override {
    const cudaError_t status = cudaEventQuery(static_cast<cudaEvent_t>(event));
    if (status == cudaErrorNotReady) {
      cudaGetLastError();  // not an error: still running
      return false;
    }
    PRIMAL_CUDA_CHECK(status);
    return true;
  }
  void wait_event(void* event) override {
    PRIMAL_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event)));
  }
};

constexpr size_t kSmallStep = 512;
constexpr size_t kSmallMax = size_t{1} << 20;

std::string mib(size_t bytes) {
  return std::to_string(bytes >> 20) + " MiB";
}

}  // namespace

std::unique_ptr<MemorySource> cuda_memory_source() {
  return std::make_unique<CudaMemorySource>();
}

size_t CachingAllocator::size_class(size_t bytes) {
  if (bytes <= kSmallMax)
    return std::max(kSmallStep, (bytes + kSmallStep - 1) / kSmallStep * kSmallStep);
  // Quarter steps between powers of two.
  const size_t pow2 = std::bit_floor(bytes);
  const size_t quarter = pow2 / 4;
  return (bytes + quarter - 1) / quarter * quarter;
}

CachingAllocator::CachingAllocator(std::unique_ptr<MemorySource> source)
    : source_(std::move(source)) {}

CachingAllocator::~CachingAllocator() {
  std::lock_guard<std::mutex> lock(mutex_);
  try {
    release_cached_locked();
    for (void* e : event_pool_) source_->destroy_event(e);
  } catch (const Error&) {
    // The CUDA context is already gone (process exit): the driver has reclaimed the memory.
  }
}

void* CachingAllocator::allocate(size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return nullptr;
  const size_t size = size_class(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.requests;
  if (!pending_.empty()) collect_pending_locked(/*wait=*/false);
  void* p = nullptr;
  auto it = free_.find({stream, size});
  if (it != free_.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    stats_.cached -= size;
    ++stats_.cache_hits;
  } else {
    p = source_->allocate(size);
    if (!p) {  // full: give the cache back and try once more
      release_cached_locked();
      p = source_->allocate(size);
    }
    if (!p)
      throw Error("CachingAllocator", "out of device memory allocating " + mib(size) + " (" +
                                          std::to_string(size) + " bytes; " + mib(stats_.in_use) +
                                          " in use)");
    ++stats_.source_allocations;
  }
  live_[p] = {size, stream, {}};
  stats_.in_use += size;
  stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
  return p;
}

void CachingAllocator::record_stream(void* p, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_.find(p);
  check(it != live_.end(), "CachingAllocator::record_stream: pointer not allocated here");
  Block& block = it->second;
  if (stream == block.stream) return;
  if (std::find(block.used_on.begin(), block.used_on.end(), stream) == block.used_on.end())
    block.used_on.push_back(stream);
}

void CachingAllocator::deallocate(void* p) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_.find(p);
  check(it != live_.end(), "CachingAllocator::deallocate: pointer not allocated here");
  Block block = std::move(it->second);
  live_.erase(it);
  stats_.in_use -= block.size;
  stats_.cached += block.size;
  if (block.used_on.empty()) {
    free_[{block.stream, block.size}].push_back(p);
    return;
  }
  // Other streams may still be using it: an event on each, reused from the pool.
  Pending pending{p, std::move(block), {}};
  for (cudaStream_t s : pending.block.used_on) {
    void* event = nullptr;
    if (event_pool_.empty()) {
      event = source_->create_event();
    } else {
      event = event_pool_.back();
      event_pool_.pop_back();
    }
    source_->record_event(event, s);
    pending.events.push_back(event);
  }
  stats_.pending += pending.block.size;
  pending_.push_back(std::move(pending));
}

void CachingAllocator::collect_pending_locked(bool wait) {
  size_t kept = 0;
  for (size_t i = 0; i < pending_.size(); ++i) {
    Pending& pending = pending_[i];
    bool done = true;
    for (void* e : pending.events) {
      if (wait)
        source_->wait_event(e);
      else if (!source_->event_done(e))
        done = false;
      if (!done) break;
    }
    if (!done) {
      if (kept != i) pending_[kept] = std::move(pending);
      ++kept;
      continue;
    }
    event_pool_.insert(event_pool_.end(), pending.events.begin(), pending.events.end());
    stats_.pending -= pending.block.size;
    free_[{pending.block.stream, pending.block.size}].push_back(pending.p);
  }
  pending_.resize(kept);
}

void CachingAllocator::release_cached_locked() {
  collect_pending_locked(/*wait=*/true);
  for (auto& [key, blocks] : free_) {
    for (void* p : blocks) source_->release(p);
    stats_.cached -= key.second * blocks.size();
  }
  free_.clear();
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  release_cached_locked();
}

CachingAllocator::Stats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.peak_in_use = stats_.in_use;
}

void copy_to_device(void* device, const void* host, size_t bytes, cudaStream_t stream) {
  PRIMAL_CUDA_CHECK(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream));
}

void copy_to_host(void* host, const void* device, size_t bytes, cudaStream_t stream) {
  PRIMAL_CUDA_CHECK(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream));
}

}  // namespace primal::cuda
