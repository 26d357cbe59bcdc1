// Global-norm clipping: the norm of a naive double sum, torch's scaling rule, bitwise the same
// norm for any thread count, and the pieces a distributed version composes.
#include "trainer/grad_clip.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

namespace primal {
namespace {

// Three parameters, gradients of varied size and sign from a fixed formula.
template <typename T>
void build_store(ParameterStore<T>& store, int64_t rows = 37) {
  store.add("w", {rows, 53}, Split::kReplicated, Init::kNormal);
  store.add("b", {53}, Split::kReplicated, Init::kZeros);
  store.add("g", {11}, Split::kReplicated, Init::kOnes);
  store.finalize(3);
  for (int64_t i = 0; i < store.numel(); ++i) {
    store.grads()[i] = T(std::sin(0.37 * double(i)) * std::exp(double(i % 17) - 8.0));
  }
}

template <typename T>
double naive_norm(ParameterStore<T>& store) {
  double sum = 0;
  for (const auto& p : store.all()) {
    for (int64_t i = 0; i < p.grad.numel(); ++i) sum += double(p.grad[i]) * double(p.grad[i]);
  }
  return std::sqrt(sum);
}

TEST(GradClip, NormEqualsNaiveDoubleComputation) {
  ParameterStore<float> store;
  build_store(store);
  const double naive = naive_norm(store);
  EXPECT_NEAR(global_grad_norm(store), naive, 1e-14 * naive);
  ParameterStore<double> dstore;
  build_store(dstore);
  EXPECT_NEAR(global_grad_norm(dstore), naive_norm(dstore), 1e-14 * naive_norm(dstore));
  // Fewer elements than chunks.
  ParameterStore<float> tiny;
  tiny.add("v", {2}, Split::kReplicated, Init::kZeros);
  tiny.finalize(1);
  tiny.grads()[0] = 3;
  tiny.grads()[1] = -4;
  EXPECT_EQ(global_grad_norm(tiny), 5.0);
}

TEST(GradClip, ClipScalesTheGlobalNormToMaxNormAndReturnsThePreClipNorm) {
  ParameterStore<float> store;
  build_store(store);
  const std::vector<float> before(store.grads().data(), store.grads().data() + store.numel());
  const double norm = naive_norm(store);
  const double max_norm = norm / 10;
  EXPECT_NEAR(clip_grad_norm(store, max_norm), norm, 1e-14 * norm);
  const float coef = float(max_norm / (norm + 1e-6));  // torch's clip_coef
  for (int64_t i = 0; i < store.numel(); ++i) {
    EXPECT_EQ(store.grads()[i], before[i] * coef) << i;
  }
  EXPECT_NEAR(global_grad_norm(store), max_norm, 1e-6 * max_norm);
}

// torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1: [3, 4] to max_norm 1.
TEST(GradClip, SmallExampleAsTorch) {
  ParameterStore<double> store;
  store.add("v", {2}, Split::kReplicated, Init::kZeros);
  store.finalize(1);
  store.grads()[0] = 3;
  store.grads()[1] = 4;
  EXPECT_EQ(clip_grad_norm(store, 1.0), 5.0);
  EXPECT_EQ(store.grads()[0], 3 * (1.0 / (5.0 + 1e-6)));
  EXPECT_EQ(store.grads()[1], 4 * (1.0 / (5.0 + 1e-6)));
}

TEST(GradClip, GradientsBelowMaxNormAreLeftBitwiseUnchanged) {
  ParameterStore<float> store;
  build_store(store);
  const std::vector<float> before(store.grads().data(), store.grads().data() + store.numel());
  const double norm = global_grad_norm(store);
  EXPECT_EQ(clip_grad_norm(store, norm * 2), norm);
  EXPECT_EQ(clip_grads_to_norm(store, norm, norm + 1e-6), 1.0);  // coef exactly 1: no scaling
  EXPECT_EQ(std::memcmp(before.data(), store.grads().data(), before.size() * sizeof(float)), 0);
}

TEST(GradClip, NormIsBitwiseIdenticalForOneTwoAndThreeThreads) {
  ParameterStore<float> store;
  build_store(store, 2000);  // ~106k elements: the parallel path
  const int saved = omp_get_max_threads();
  std::vector<double> norms;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    norms.push_back(global_grad_norm(store));
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(std::memcmp(&norms[0], &norms[1], sizeof(double)), 0);
  EXPECT_EQ(std::memcmp(&norms[0], &norms[2], sizeof(double)), 0);
  EXPECT_NEAR(norms[0], naive_norm(store), 1e-13 * norms[0]);
}

// What a data-parallel version does: partial sums of squares from elsewhere, added before the
// sqrt, then the clip with the given norm.
TEST(GradClip, SumOfSquaresPiecesComposeIntoClipGradNorm) {
  ParameterStore<float> a, b;
  build_store(a);
  build_store(b);
  const int64_t n = a.numel(), half = n / 2;
  const float* g = a.grads().data();
  const double total = sum_of_squares(g, half) + sum_of_squares(g + half, n - half);
  EXPECT_NEAR(total, grad_sum_of_squares(a), 1e-14 * total);
  const double norm = std::sqrt(grad_sum_of_squares(a));
  const double coef = clip_grads_to_norm(a, norm, 0.5);
  EXPECT_EQ(coef, 0.5 / (norm + 1e-6));
  EXPECT_EQ(clip_grad_norm(b, 0.5), norm);
  EXPECT_EQ(std::memcmp(a.grads().data(), b.grads().data(), n * sizeof(float)), 0);
}

TEST(GradClip, NonFiniteNormLeavesGradientsAndBadMaxNormThrows) {
  ParameterStore<float> store;
  build_store(store);
  store.grads()[5] = INFINITY;
  const std::vector<float> before(store.grads().data(), store.grads().data() + store.numel());
  EXPECT_TRUE(std::isinf(clip_grad_norm(store, 1.0)));
  EXPECT_EQ(std::memcmp(before.data(), store.grads().data(), before.size() * sizeof(float)), 0);
  for (double bad : {0.0, -1.0, double(NAN), double(INFINITY)}) {
    try {
      clip_grad_norm(store, bad);
      ADD_FAILURE() << "no error for max_norm " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).rfind("grad_clip.max_norm", 0), 0u) << e.what();
    }
  }
}

}  // namespace
}  // namespace primal
