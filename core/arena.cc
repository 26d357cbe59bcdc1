#include "core/arena.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <new>

namespace primal {
namespace {
constexpr size_t kAlign = 64;
size_t round_up(size_t n, size_t to = kAlign) {
  return (n + to - 1) / to * to;
}
// Blocks are whole, aligned 2 MiB pages, and the large ones are advised for transparent huge
// pages: a step streams through hundreds of MB of activations, and with 4 KiB pages the TLB
// misses (costly under a hypervisor's nested paging) slowed a cold streaming pass (GELU's
// backward) by a third. Small blocks are left to 4 KiB pages: the kernel may later fill a
// huge page's untouched rest (khugepaged), which would make a small run's resident memory
// creep. Where the kernel has no THP the advice fails and changes nothing.
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kHugePageAdviceFrom = size_t{16} << 20;
}  // namespace

void Arena::FreeBlock::operator()(std::byte* p) const {
  std::free(p);
}

Arena::Arena(size_t first_block_bytes) : first_block_bytes_(first_block_bytes) {}

void* Arena::alloc_bytes(size_t bytes) {
  bytes = round_up(std::max<size_t>(bytes, 1));
  // Move on to the next block when this one is full; reuse blocks kept from earlier steps.
  while (block_ < blocks_.size() && offset_ + bytes > blocks_[block_].size) {
    used_before_ += offset_;
    ++block_;
    offset_ = 0;
  }
  if (block_ == blocks_.size()) {
    size_t last = blocks_.empty() ? first_block_bytes_ : blocks_.back().size * 2;
    const size_t size = round_up(std::max(bytes, last), kHugePage);
    // Uninitialised: pages stay untouched (not resident) until a step uses them.
    auto* begin = static_cast<std::byte*>(std::aligned_alloc(kHugePage, size));
    if (!begin) throw std::bad_alloc();
    if (size >= kHugePageAdviceFrom) madvise(begin, size, MADV_HUGEPAGE);
    blocks_.push_back({std::unique_ptr<std::byte, FreeBlock>(begin), begin, size});
    ++growth_count_;
  }
  void* p = blocks_[block_].begin + offset_;
  offset_ += bytes;
  peak_bytes_ = std::max(peak_bytes_, used_before_ + offset_);
  return p;
}

void Arena::reset() {
  block_ = 0;
  offset_ = 0;
  used_before_ = 0;
  for (auto& t : threads_) t->reset();
}

void Arena::reserve_threads(int threads) {
  while (int(threads_.size()) < threads) {
    threads_.push_back(std::make_unique<Arena>(first_block_bytes_));
    ++growth_count_;
  }
}

size_t Arena::growth_count() const {
  size_t n = growth_count_;
  for (const auto& t : threads_) n += t->growth_count();
  return n;
}

size_t Arena::reserved_bytes() const {
  size_t n = 0;
  for (const Block& b : blocks_) n += b.size;
  for (const auto& t : threads_) n += t->reserved_bytes();
  return n;
}

size_t Arena::peak_bytes() const {
  size_t n = peak_bytes_;
  for (const auto& t : threads_) n += t->peak_bytes();
  return n;
}

}  // namespace primal
