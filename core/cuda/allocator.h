// CachingAllocator: device memory for everything a training step creates, without a
// cudaMalloc/cudaFree per tensor (each synchronises the device). Requests are rounded up to a
// size class; a freed block goes onto the free list of its (stream, size class) and serves
// the next request of that class on that stream. Reuse on the same stream is safe without
// events: the stream orders the new user's kernels after the old user's. (A block used on
// another stream must be synchronised by its user before it is freed: there is no
// record_stream here.) When the device is full, the cached blocks are released and the
// request is retried once.
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

// Where the allocator gets its memory: cudaMalloc/cudaFree by default; the unit tests plug in
// host memory to check the caching on a machine without a GPU.
class MemorySource {
 public:
  virtual ~MemorySource() = default;
  // nullptr when the memory is exhausted; throws on any other failure.
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* p) = 0;
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
  void deallocate(void* p);
  // Hands every cached (free) block back to the source.
  void empty_cache();

  struct Stats {
    size_t in_use = 0;        // bytes of live blocks (size classes, not requests)
    size_t cached = 0;        // bytes of free blocks kept for reuse
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
  };
  using Key = std::pair<cudaStream_t, size_t>;
  void release_cached_locked();

  std::unique_ptr<MemorySource> source_;
  mutable std::mutex mutex_;
  std::map<Key, std::vector<void*>> free_;  // (stream, class) -> free blocks
  std::unordered_map<void*, Block> live_;
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
