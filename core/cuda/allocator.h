// CachingAllocator: device memory for everything a training step creates, without a
// cudaMalloc/cudaFree per tensor (each synchronises the device). Requests are rounded up to a
// size class; a freed block goes onto the free list of its (stream, size class) and serves
// the next request of that class on that stream. Reuse on the same stream is safe without
// events: the stream orders the new user's kernels after the old user's. A block that other
// streams use too (a communication stream reading a gradient, a tensor-parallel collective on
// its own stream) is told so with record_stream(): when it is freed, an event is recorded on
// each of those streams, and the block serves no request until they have passed (PyTorch's
// recordStream). When the device is full, the cached blocks are released (after waiting for
// those events) and the request is retried once.
//
// DeviceBuffer<T>: an owning handle to one allocation (RAII; the memory returns to the cache).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace primal::cuda {

// Where the allocator gets its memory and its marks of other streams' progress:
// cudaMalloc/cudaFree and CUDA events by default; the unit tests plug in host memory and
// events they complete by hand, to check the caching on a machine without a GPU.
class MemorySource {
 public:
  virtual ~MemorySource() = default;
  // nullptr when the memory is exhausted; throws on any other failure.
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* p) = 0;
  // An event: created once and reused, recorded on a stream, queried without blocking,
  // waited for (blocking).
  virtual void* create_event() = 0;
  virtual void destroy_event(void* event) = 0;
  virtual void record_event(void* event, cudaStream_t stream) = 0;
  virtual bool event_done(void* event) = 0;
  virtual void wait_event(void* event) = 0;
};
std::unique_ptr<MemorySource> cuda_memory_source();

class CachingAllocator {
 public:
  explicit CachingAllocator(std::unique_ptr<MemorySource> source = cuda_memory_source());
  ~CachingAllocator();  // releases the cached blocks (live ones are the owners' to return)
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // At least `bytes` (256-byte aligned) for use on `stream`. bytes == 0 gives nullptr.
  void* allocate(size_t bytes, cudaStream_t stream);
  // p (live) is used on `stream` as well as on the stream it was allocated for: once freed, it
  // waits for that stream's work up to then before it is reused. A no-op for its own stream.
  void record_stream(void* p, cudaStream_t stream);
  void deallocate(void* p);
  // Hands every cached (free) block back to the source.
  void empty_cache();

  struct Stats {
    size_t in_use = 0;        // bytes of live blocks (size classes, not requests)
    size_t cached = 0;        // bytes of free blocks kept for reuse (pending ones included)
    size_t pending = 0;       // bytes of freed blocks waiting for other streams' events
    size_t peak_in_use = 0;   // most bytes live at once
    uint64_t requests = 0;    // allocate() calls
    uint64_t cache_hits = 0;  // served from a free list
    uint64_t source_allocations = 0;
  };
  Stats stats() const;
  void reset_peak();

  // The size class of a request: multiples of 512 B up to 1 MiB, above that the next of
  // 2^k, 1.25 2^k, 1.5 2^k, 1.75 2^k (at most 25% unused).
  static size_t size_class(size_t bytes);

 private:
  struct Block {
    size_t size;
    cudaStream_t stream;
    std::vector<cudaStream_t> used_on;  // other streams (record_stream)
  };
  // A freed block and the events recorded on its other streams when it was freed.
  struct Pending {
    void* p;
    Block block;
    std::vector<void*> events;
  };
  using Key = std::pair<cudaStream_t, size_t>;
  void release_cached_locked();
  // Moves the pending blocks whose events have passed to the free lists (all of them, waiting,
  // with wait); their events go back to the pool.
  void collect_pending_locked(bool wait);

  std::unique_ptr<MemorySource> source_;
  mutable std::mutex mutex_;
  std::map<Key, std::vector<void*>> free_;  // (stream, class) -> free blocks
  std::unordered_map<void*, Block> live_;
  std::vector<Pending> pending_;
  std::vector<void*> event_pool_;  // recorded and passed: reused, never destroyed mid-run
  Stats stats_;
};

// One allocation of `count` T from a CachingAllocator, returned to it on destruction.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(CachingAllocator& allocator, int64_t count, cudaStream_t stream)
      : allocator_(&allocator),
        data_(static_cast<T*>(allocator.allocate(sizeof(T) * size_t(count), stream))),
        count_(count) {}
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      std::swap(allocator_, o.allocator_);
      std::swap(data_, o.data_);
      std::swap(count_, o.count_);
    }
    return *this;
  }

  T* data() const { return data_; }
  int64_t size() const { return count_; }
  size_t bytes() const { return sizeof(T) * size_t(count_); }
  // A device Tensor view of the buffer (shape.numel() <= size()).
  Tensor<T> tensor(Shape shape) const {
    check(shape.numel() <= count_, "DeviceBuffer::tensor: shape larger than the buffer");
    return Tensor<T>(data_, shape, Device::kCuda);
  }
  // The buffer is used on `stream` too (CachingAllocator::record_stream).
  void record_stream(cudaStream_t stream) const {
    if (allocator_ && data_) allocator_->record_stream(data_, stream);
  }
  void reset() {
    if (allocator_ && data_) allocator_->deallocate(data_);
    data_ = nullptr;
    count_ = 0;
  }

 private:
  CachingAllocator* allocator_ = nullptr;
  T* data_ = nullptr;
  int64_t count_ = 0;
};

// Host <-> device copies ordered on `stream` (synchronise it before reading `host`).
void copy_to_device(void* device, const void* host, size_t bytes, cudaStream_t stream);
void copy_to_host(void* host, const void* device, size_t bytes, cudaStream_t stream);

}  // namespace primal::cuda
