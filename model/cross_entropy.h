// Softmax cross-entropy over rows of logits, fused with its backward.
#pragma once

#include <cstdint>
#include <vector>

#include "core/arena.h"

namespace primal {

// loss_r = logsumexp(logits_r) - logits_r[target_r]. Overwrites logits with the softmax
// probabilities (what the backward needs) and returns sum_r loss_r, accumulated in double
// in a fixed order.
template <typename T>
double cross_entropy_forward(Arena& arena, const Tensor<T>& logits, const int32_t* targets);
// A batch's targets before the loss reads them (on the CPU and on the device): `count` of them,
// each a class in [0, classes), since the loss indexes the logits with it. Throws an Error
// naming the first that is not.
void check_targets(const std::vector<int32_t>& targets, int64_t count, int classes);
// dlogits = scale (p - onehot(target))   (overwrites, given the probabilities)
template <typename T>
void cross_entropy_backward(const Tensor<T>& probs, const int32_t* targets, T scale,
                            const Tensor<T>& dlogits);

}  // namespace primal
