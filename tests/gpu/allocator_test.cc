// The caching allocator's bookkeeping on host memory (a MemorySource backed by malloc): size
// classes, reuse per (stream, class), statistics, and the retry after releasing the cache
// when the source is full. Runs everywhere (label unit): no GPU involved.
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>

#include "core/cuda/allocator.h"

namespace primal::cuda {
namespace {

// Host memory with a capacity, counting what it hands out.
class HostSource final : public MemorySource {
 public:
  explicit HostSource(size_t capacity) : capacity_(capacity) {}
  void* allocate(size_t bytes) override {
    if (used_ + bytes > capacity_) return nullptr;
    used_ += bytes;
    void* p = std::aligned_alloc(256, bytes);
    sizes_[p] = bytes;
    ++allocations_;
    return p;
  }
  void release(void* p) override {
    used_ -= sizes_.at(p);
    sizes_.erase(p);
    std::free(p);
  }
  size_t used() const { return used_; }
  int allocations() const { return allocations_; }

 private:
  size_t capacity_, used_ = 0;
  int allocations_ = 0;
  std::map<void*, size_t> sizes_;
};

cudaStream_t fake_stream(int i) {
  return reinterpret_cast<cudaStream_t>(uintptr_t(0x1000 * i));
}

TEST(CachingAllocator, SizeClassesWasteAtMostAQuarter) {
  EXPECT_EQ(CachingAllocator::size_class(1), 512u);
  EXPECT_EQ(CachingAllocator::size_class(512), 512u);
  EXPECT_EQ(CachingAllocator::size_class(513), 1024u);
  EXPECT_EQ(CachingAllocator::size_class(size_t{1} << 20), size_t{1} << 20);
  EXPECT_EQ(CachingAllocator::size_class((size_t{1} << 20) + 1), (size_t{5} << 20) / 4);
  EXPECT_EQ(CachingAllocator::size_class(size_t{3} << 29), size_t{3} << 29);
  for (size_t bytes = 1; bytes < (size_t{1} << 34); bytes = bytes * 3 + 7) {
    const size_t c = CachingAllocator::size_class(bytes);
    EXPECT_GE(c, bytes);
    if (bytes > (size_t{1} << 20)) {
      EXPECT_LE(c, bytes + bytes / 4) << bytes;
    }
    EXPECT_EQ(CachingAllocator::size_class(c), c) << "classes are fixed points";
  }
}

TEST(CachingAllocator, ReusesFreedBlocksOfTheSameStreamAndClass) {
  auto source = std::make_unique<HostSource>(size_t{1} << 30);
  HostSource* src = source.get();
  CachingAllocator alloc(std::move(source));
  void* a = alloc.allocate(1000, fake_stream(1));
  alloc.deallocate(a);
  EXPECT_EQ(alloc.allocate(900, fake_stream(1)), a) << "same class (1024), same stream";
  void* b = alloc.allocate(900, fake_stream(2));
  EXPECT_NE(b, a) << "another stream never gets a block still in use";
  alloc.deallocate(a);
  void* c = alloc.allocate(900, fake_stream(2));
  EXPECT_NE(c, a) << "a block freed on stream 1 is not handed to stream 2";
  EXPECT_EQ(src->allocations(), 3);
  const auto st = alloc.stats();
  EXPECT_EQ(st.in_use, 2048u);
  EXPECT_EQ(st.cached, 1024u);
  EXPECT_EQ(st.peak_in_use, 2048u);
  EXPECT_EQ(st.requests, 4u);
  EXPECT_EQ(st.cache_hits, 1u);
  alloc.deallocate(b);
  alloc.deallocate(c);
  alloc.empty_cache();
  EXPECT_EQ(src->used(), 0u);
  EXPECT_EQ(alloc.stats().cached, 0u);
}

TEST(CachingAllocator, ReleasesTheCacheAndRetriesWhenFull) {
  auto source = std::make_unique<HostSource>(size_t{4} << 20);
  HostSource* src = source.get();
  CachingAllocator alloc(std::move(source));
  void* a = alloc.allocate(size_t{3} << 20, nullptr);
  alloc.deallocate(a);                                 // cached: 3 MiB of the 4 held
  void* b = alloc.allocate(size_t{2} << 20, nullptr);  // another class: needs the cache back
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(alloc.stats().cached, 0u);
  EXPECT_EQ(src->used(), size_t{2} << 20);
  try {
    alloc.allocate(size_t{3} << 20, nullptr);
    FAIL() << "expected an out-of-memory error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of device memory allocating 3 MiB"),
              std::string::npos)
        << e.what();
  }
  alloc.deallocate(b);
}

TEST(CachingAllocator, DeviceBufferReturnsItsBlockAndMoves) {
  CachingAllocator alloc(std::make_unique<HostSource>(size_t{1} << 30));
  {
    DeviceBuffer<float> x(alloc, 1000, nullptr);
    EXPECT_EQ(alloc.stats().in_use, 4096u);
    DeviceBuffer<float> y = std::move(x);
    EXPECT_EQ(x.data(), nullptr);
    EXPECT_EQ(y.size(), 1000);
    const Tensor<float> t = y.tensor({10, 100});
    EXPECT_EQ(t.device(), Device::kCuda);
    EXPECT_THROW(y.tensor({10, 101}), Error);
  }
  EXPECT_EQ(alloc.stats().in_use, 0u);
  EXPECT_EQ(alloc.stats().cached, 4096u);
  EXPECT_THROW(alloc.deallocate(reinterpret_cast<void*>(0x40)), Error);
}

}  // namespace
}  // namespace primal::cuda
