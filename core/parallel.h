// When OpenMP pays: a parallel region costs microseconds to start and wake its threads, so
// loops over less work than this many elements run on the calling thread. Every loop gives the
// same bits either way (element-wise work, or reductions in fixed chunks).
#pragma once

#include <cstdint>

namespace primal {

inline constexpr int64_t kParallelGrain = int64_t{1} << 14;

}  // namespace primal
