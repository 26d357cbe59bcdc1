// Blocks of rows (or of whole samples) that the layers run on, in parallel over threads.
//
// A layer cuts its rows into blocks whose temporaries fit in cache (Mlp, PrimalAttention) and
// runs them through for_each_block: the blocks are dealt to kBlockSlots slots (block b to slot
// b mod slots), each slot runs its blocks in order, and the slots are shared out among the
// threads, each with its own scratch arena. What a block adds into a parameter gradient goes
// into its slot's accumulator (GradSlots), and the slots are added into the gradients in slot
// order afterwards: the bits do not depend on the thread count. Inside a block everything runs
// on its thread (nested OpenMP regions are serial); with one block, or one thread, the block
// loop is serial and the GEMMs and loops inside it use the threads instead.
#pragma once

#include <omp.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>

#include "core/arena.h"
#include "core/parallel.h"
#include "core/progress.h"
#include "model/parameters.h"
#include "model/tensor_parallel.h"

namespace primal {

inline constexpr int kBlockSlots = 8;

// Under tensor parallelism a layer's whole batch is one block: the collectives inside a block
// (a row-parallel output's sum, a norm's input gradient's) are then called once per layer,
// from one thread.
inline bool whole_batch_is_one_block(const TensorParallelGroup* tp) {
  return tp && tp->size() > 1;
}

inline int block_slots(int64_t blocks) {
  return int(std::clamp<int64_t>(blocks, 1, kBlockSlots));
}

// body(Arena& scratch, int slot, int64_t block) for every block; a block's arena
// allocations are released after it.
template <typename Body>
void for_each_block(Arena& arena, int64_t blocks, Body body) {
  const int slots = block_slots(blocks);
  const int threads = omp_in_parallel() ? 1 : std::min(omp_get_max_threads(), slots);
  auto run_slot = [&](Arena& scratch, int slot) {
    for (int64_t b = slot; b < blocks; b += slots) {
      const Arena::Mark temporaries = scratch.mark();
      body(scratch, slot, b);
      scratch.release(temporaries);
      progress();  // communication in flight moves between blocks
    }
  };
  if (threads <= 1) {
    for (int slot = 0; slot < slots; ++slot) run_slot(arena, slot);
    return;
  }
  arena.reserve_threads(threads);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int slot = 0; slot < slots; ++slot) run_slot(arena.thread_arena(omp_get_thread_num()), slot);
}

// Zeroed gradient accumulators, one per slot for each of a few parameters. A null parameter
// (a layer's optional part that is absent, e.g. its norm) gets none.
template <typename T>
class GradSlots {
 public:
  static constexpr int kMaxParams = 12;
  GradSlots(Arena& arena, int slots, std::initializer_list<Parameter<T>*> params) : slots_(slots) {
    check(params.size() <= kMaxParams, "GradSlots: too many parameters");
    int64_t total = 0;
    for (Parameter<T>* p : params) {
      offset_[count_] = total;
      params_[count_++] = p;
      if (p) total += p->grad.numel();
    }
    stride_ = total;
    storage_ = arena.zeros<T>({slots, total});
  }
  // The accumulator of parameter i (in the constructor's order) for a slot.
  T* grad(int slot, int i) const { return storage_.data() + slot * stride_ + offset_[i]; }
  // Adds the slots into the parameters' gradients, slot 0 first.
  void add_to_grads() const {
    for (int i = 0; i < count_; ++i) {
      if (!params_[i]) continue;
      T* g = params_[i]->grad.data();
      const int64_t n = params_[i]->grad.numel();
      for (int slot = 0; slot < slots_; ++slot) {
        const T* a = grad(slot, i);
#pragma omp parallel for simd schedule(static) if (n > kParallelGrain)
        for (int64_t j = 0; j < n; ++j) g[j] += a[j];
      }
    }
  }

 private:
  int slots_, count_ = 0;
  int64_t stride_ = 0;
  std::array<Parameter<T>*, kMaxParams> params_{};
  std::array<int64_t, kMaxParams> offset_{};
  Tensor<T> storage_;
};

}  // namespace primal
