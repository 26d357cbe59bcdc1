// Arena: bump allocation for everything a training step creates (activations, their
// gradients, scratch). reset() at the start of a step rewinds it; because a step makes the
// same requests in the same order every time, the blocks obtained during the first step
// serve every later one and the step loop allocates nothing from the system.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace primal {

class Arena {
 public:
  explicit Arena(size_t first_block_bytes = size_t{1} << 20);
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // Uninitialised storage for shape, 64-byte aligned.
  template <typename T>
  Tensor<T> alloc(Shape shape) {
    return Tensor<T>(static_cast<T*>(alloc_bytes(sizeof(T) * shape.numel())), shape);
  }
  // Zero-filled storage for shape.
  template <typename T>
  Tensor<T> zeros(Shape shape) {
    Tensor<T> t = alloc<T>(shape);
    t.zero();
    return t;
  }

  void reset();

  // A point in the arena's allocation stack: release(mark) frees everything allocated after
  // it, so a layer's backward temporaries can be reused by the next layer's.
  struct Mark {
    size_t block, offset, used_before;
  };
  Mark mark() const { return {block_, offset_, used_before_}; }
  void release(const Mark& m) {
    block_ = m.block;
    offset_ = m.offset;
    used_before_ = m.used_before;
  }
  // Scratch arenas for the threads of a parallel loop over blocks (one each, so that a
  // block's temporaries need no lock). reserve_threads runs outside the parallel region (it
  // allocates only the first time a count is seen); reset() resets them with this arena.
  void reserve_threads(int threads);
  Arena& thread_arena(int thread) { return *threads_[thread]; }

  // Times the arena (or one of its thread arenas) asked the system for a new block;
  // constant after warm-up.
  size_t growth_count() const;
  size_t reserved_bytes() const;
  // Most bytes in use at once since construction, this arena's plus each thread arena's.
  size_t peak_bytes() const;

 private:
  struct Unmap {
    size_t size;
    void operator()(std::byte* p) const;
  };
  struct Block {
    std::unique_ptr<std::byte, Unmap> storage;
    std::byte* begin;
    size_t size;
    size_t high = 0;     // most bytes of it a step has used
    size_t advised = 0;  // bytes from begin on huge pages (see reset())
  };
  void* alloc_bytes(size_t bytes);

  std::vector<Block> blocks_;
  std::vector<std::unique_ptr<Arena>> threads_;
  size_t block_ = 0;        // block being filled
  size_t offset_ = 0;       // bytes used in blocks_[block_]
  size_t used_before_ = 0;  // bytes used in blocks before block_
  size_t first_block_bytes_;
  size_t growth_count_ = 0;
  size_t peak_bytes_ = 0;
};

}  // namespace primal
