// Counts C++ allocations (the global operator new, which std containers use) while a scope of
// interest runs: include it in exactly ONE source file of a test executable, since it
// replaces the program's operator new and delete.
//
//   primal::testing::AllocationCounter counter;   // starts counting
//   ... the work that must not allocate ...
//   EXPECT_EQ(counter.stop(), 0);
#pragma once

#include <atomic>
#include <cstdlib>
#include <new>

namespace primal::testing {

inline std::atomic<bool> g_counting{false};
inline std::atomic<long> g_allocations{0};

class AllocationCounter {
 public:
  AllocationCounter() {
    g_allocations = 0;
    g_counting = true;
  }
  ~AllocationCounter() { g_counting = false; }
  // Stops counting; the allocations made since construction.
  long stop() {
    g_counting = false;
    return g_allocations.load();
  }
};

}  // namespace primal::testing

// Out of line, like the deletes below: inlined into std::allocator, GCC would see malloc and
// flag the sized delete's free() as mismatched.
__attribute__((noinline)) void* operator new(std::size_t n) {
  if (primal::testing::g_counting.load(std::memory_order_relaxed)) {
    primal::testing::g_allocations.fetch_add(1);
  }
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
__attribute__((noinline)) void operator delete(void* p) noexcept {
  std::free(p);
}
__attribute__((noinline)) void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
