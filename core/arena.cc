#include "core/arena.h"

#include <sys/mman.h>

#include <algorithm>
#include <new>

namespace primal {
namespace {
constexpr size_t kAlign = 64;
size_t round_up(size_t n, size_t to = kAlign) {
  return (n + to - 1) / to * to;
}
// Blocks are mapped on 2 MiB boundaries, and the part of each that the steps use is moved onto
// transparent huge pages (reset()): a step streams through hundreds of MB of activations, and
// with 4 KiB pages the TLB misses (costly under a hypervisor's nested paging) slowed a cold
// streaming pass (GELU's backward) by a third. Only whole used 2 MiB pages are advised: the
// kernel's khugepaged fills an advised huge page's untouched rest, which would make resident
// memory creep past what the steps use. Where the kernel has no THP the advice fails and
// changes nothing.
constexpr size_t kHugePage = size_t{2} << 20;

std::byte* map_block(size_t size) {
  void* p =
      mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  const auto addr = reinterpret_cast<uintptr_t>(p);
  const uintptr_t aligned = round_up(addr, kHugePage);
  if (aligned > addr) munmap(p, aligned - addr);
  if (aligned - addr < kHugePage) {
    munmap(reinterpret_cast<void*>(aligned + size), kHugePage - (aligned - addr));
  }
  return reinterpret_cast<std::byte*>(aligned);
}
}  // namespace

void Arena::Unmap::operator()(std::byte* p) const {
  munmap(p, size);
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
    // Untouched pages are not resident until a step uses them.
    std::byte* begin = map_block(size);
    blocks_.push_back({std::unique_ptr<std::byte, Unmap>(begin, Unmap{size}), begin, size});
    ++growth_count_;
  }
  void* p = blocks_[block_].begin + offset_;
  offset_ += bytes;
  blocks_[block_].high = std::max(blocks_[block_].high, offset_);
  peak_bytes_ = std::max(peak_bytes_, used_before_ + offset_);
  return p;
}

void Arena::reset() {
  // Nothing allocated before survives a reset, so the used whole 2 MiB pages not yet on huge
  // pages are dropped and advised: the next step faults them back in as huge pages.
  for (Block& b : blocks_) {
    const size_t used = b.high / kHugePage * kHugePage;
    if (used > b.advised) {
      madvise(b.begin + b.advised, used - b.advised, MADV_DONTNEED);
      madvise(b.begin + b.advised, used - b.advised, MADV_HUGEPAGE);
      b.advised = used;
    }
  }
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
