// After the first step, AdamW::step and clip_grad_norm allocate nothing (operator new is
// replaced here to count; its own executable).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "trainer/adamw.h"
#include "trainer/grad_clip.h"

namespace {
std::atomic<bool> counting{false};
std::atomic<long> allocations{0};
}  // namespace

void* operator new(std::size_t n) {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}

namespace primal {
namespace {

TEST(TrainerNoAllocation, AdamWStepAndGradClipAllocateNothing) {
  ParameterStore<float> store;
  store.add("w", {300, 100}, Split::kReplicated, Init::kNormal);  // the parallel paths
  store.add("b", {100}, Split::kReplicated, Init::kZeros);
  store.finalize(1);
  AdamW<float> opt(store, {});
  auto step = [&](int t) {
    for (int64_t i = 0; i < store.numel(); ++i) store.grads()[i] = float((i * 7 + t) % 13) - 6;
    clip_grad_norm(store, 1.0);
    opt.step(1e-3);
  };
  step(1);
  allocations = 0;
  counting = true;
  for (int t = 2; t <= 10; ++t) step(t);
  counting = false;
  EXPECT_EQ(allocations.load(), 0);
  EXPECT_EQ(opt.steps(), 10);
}

}  // namespace
}  // namespace primal
