// The caching allocator's bookkeeping on host memory (a MemorySource backed by malloc, with
// events the test completes by hand): size classes, reuse per (stream, class), statistics,
// blocks used on other streams held back until those streams pass, and the retry after
// releasing the cache when the source is full. Runs everywhere (label unit): no GPU involved.
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>
#include <vector>

#include "core/cuda/allocator.h"

namespace primal::cuda {
namespace {

// Host memory with a capacity, counting what it hands out.
class HostSource final : public MemorySource {
 public:
  // destroyed (optional) counts destroyed events, also after the allocator that owns this
  // source is gone.
  explicit HostSource(size_t capacity, int* destroyed = nullptr)
      : capacity_(capacity), destroyed_(destroyed) {}
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

  // Events: one per id, done once the test says its stream has passed the point it was
  // recorded at (pass(stream) marks every event recorded on it so far).
  void* create_event() override {
    events_.push_back({});
    return reinterpret_cast<void*>(events_.size());
  }
  void destroy_event(void*) override {
    if (destroyed_) ++*destroyed_;
  }
  void record_event(void* event, cudaStream_t stream) override {
    Event& e = events_.at(index(event));
    e = {stream, false};
    ++records_;
  }
  bool event_done(void* event) override { return events_.at(index(event)).done; }
  void wait_event(void* event) override {
    ++waits_;
    events_.at(index(event)).done = true;
  }
  void pass(cudaStream_t stream) {
    for (Event& e : events_)
      if (e.stream == stream) e.done = true;
  }
  int events_created() const { return int(events_.size()); }
  int records() const { return records_; }
  int waits() const { return waits_; }

 private:
  struct Event {
    cudaStream_t stream = nullptr;
    bool done = true;
  };
  static size_t index(void* event) { return reinterpret_cast<uintptr_t>(event) - 1; }
  size_t capacity_, used_ = 0;
  int allocations_ = 0;
  std::map<void*, size_t> sizes_;
  std::vector<Event> events_;
  int records_ = 0, waits_ = 0;
  int* destroyed_;
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

// A block also used on a communication stream is not handed out again (not even on its own
// stream) until that stream has passed the point where the block was freed; one event per
// other stream, recorded once, reused afterwards.
TEST(CachingAllocator, ABlockUsedOnAnotherStreamWaitsForIt) {
  auto owned = std::make_unique<HostSource>(size_t{1} << 30);
  HostSource& source = *owned;
  CachingAllocator alloc(std::move(owned));
  const cudaStream_t compute = fake_stream(1), comm = fake_stream(2);
  void* a = alloc.allocate(4096, compute);
  alloc.record_stream(a, comm);
  alloc.record_stream(a, comm);     // once per stream
  alloc.record_stream(a, compute);  // its own stream: nothing to wait for
  alloc.deallocate(a);
  EXPECT_EQ(source.records(), 1);
  EXPECT_EQ(alloc.stats().pending, 4096u);
  void* b = alloc.allocate(4096, compute);
  EXPECT_NE(b, a) << "reused while the communication stream may still read it";
  source.pass(comm);
  void* c = alloc.allocate(4096, compute);
  EXPECT_EQ(c, a) << "the stream has passed: the block is free again";
  EXPECT_EQ(alloc.stats().pending, 0u);
  // The event returns to the pool: the next cross-stream block records it again.
  alloc.record_stream(c, comm);
  alloc.deallocate(c);
  EXPECT_EQ(source.events_created(), 1);
  EXPECT_EQ(source.records(), 2);
  alloc.deallocate(b);
  // A block never shared is reused at once, as before.
  void* d = alloc.allocate(4096, compute);
  EXPECT_EQ(d, b);
  alloc.deallocate(d);
}

// Emptying the cache (and the retry when the source is full) waits for the pending blocks'
// events before it hands them back: nothing is released under a stream that may use it.
TEST(CachingAllocator, EmptyingTheCacheWaitsForPendingBlocks) {
  int destroyed = 0;
  {
    auto owned = std::make_unique<HostSource>(size_t{1} << 30, &destroyed);
    HostSource& source = *owned;
    CachingAllocator alloc(std::move(owned));
    void* a = alloc.allocate(size_t{1} << 20, fake_stream(1));
    DeviceBuffer<float> shared(alloc, 1024, fake_stream(1));
    shared.record_stream(fake_stream(3));
    alloc.record_stream(a, fake_stream(2));
    alloc.deallocate(a);
    shared.reset();
    EXPECT_EQ(alloc.stats().pending, (size_t{1} << 20) + 4096);
    alloc.empty_cache();
    EXPECT_EQ(source.waits(), 2);
    EXPECT_EQ(alloc.stats().pending, 0u);
    EXPECT_EQ(alloc.stats().cached, 0u);
    EXPECT_EQ(source.used(), 0u);
  }
  EXPECT_EQ(destroyed, 2) << "the pooled events die with the allocator";
}

}  // namespace
}  // namespace primal::cuda
