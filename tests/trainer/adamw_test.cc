// AdamW against torch.optim.AdamW's own numbers (adamw_expected.h, written once by
// adamw_reference.py from torch), and its contract: decay flags, state buffers, threads.
#include "trainer/adamw.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "tests/trainer/adamw_expected.h"

namespace primal {
namespace {

namespace ref = adamw_reference;

// The parameters, options, initial values, gradients and learning rates of
// adamw_reference.py: keep in sync with PARAMS, RUNS, init_value, grad_value, learning_rate.
struct RefParam {
  const char* name;
  Shape shape;
  bool decay;
};
const RefParam kRefParams[] = {{"w1", {7, 5}, true},
                               {"b1", {13}, false},
                               {"w2", {4, 16}, true},
                               {"ln", {3}, false},
                               {"emb", {16, 9}, true}};

struct RefRun {
  AdamWOptions options;
  std::vector<std::string> no_decay;  // decay overridden to false
};
const RefRun kRefRuns[ref::kRuns] = {{{0.9, 0.999, 1e-8, 0.01}, {}},
                                     {{0.8, 0.95, 1e-6, 0.1}, {"w2"}}};

double init_value(int64_t k, int64_t i) {
  return double((i * 29 + k * 11) % 97 - 48) / 32.0;
}
double grad_value(int64_t k, int64_t i, int64_t t) {
  return double((i * 37 + t * 101 + k * 53) % 201 - 100) / 64.0 * std::ldexp(1.0, int(t % 5 - 2));
}
double learning_rate(int64_t t) {
  return 1e-3 * double(1 + t % 3);
}

template <typename T>
void build_reference_store(ParameterStore<T>& store) {
  for (const RefParam& p : kRefParams) {
    store.add(p.name, p.shape, Split::kReplicated, p.decay ? Init::kNormal : Init::kZeros);
  }
  store.finalize(1);
  int64_t k = 0;
  for (auto& p : store.all()) {
    for (int64_t i = 0; i < p.value.numel(); ++i) p.value[i] = T(init_value(k, i));
    ++k;
  }
}

template <typename T>
void set_reference_grads(ParameterStore<T>& store, int64_t t) {
  int64_t k = 0;
  for (auto& p : store.all()) {
    for (int64_t i = 0; i < p.grad.numel(); ++i) p.grad[i] = T(grad_value(k, i, t));
    ++k;
  }
}

float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

struct Agreement {
  double max_rel = 0;
  int64_t differ = 0, total = 0;
};

// Every element of got within relative error 1e-6 of the torch value (exactly 0 where torch
// has 0); tallies bitwise differences for the report.
void expect_close(const Tensor<float>& got, const uint32_t* want, const std::string& what,
                  Agreement& agreement) {
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double a = got[i], b = from_bits(want[i]);
    const double rel = a == b ? 0.0 : std::abs(a - b) / std::abs(b);
    agreement.max_rel = std::max(agreement.max_rel, rel);
    agreement.differ += a != b;
    ++agreement.total;
    ASSERT_LT(rel, 1e-6) << what << " element " << i << ": " << a << " vs torch " << b;
  }
}

TEST(AdamW, MatchesTorchAdamWOnEveryElementAfterEveryCheckedStep) {
  Agreement agreement;
  for (int r = 0; r < ref::kRuns; ++r) {
    ParameterStore<float> store;
    build_reference_store(store);
    ASSERT_EQ(store.numel(), ref::kNumel);
    AdamW<float> opt(store, kRefRuns[r].options);
    for (const auto& name : kRefRuns[r].no_decay) opt.set_weight_decay(name, false);
    int check = 0;
    for (int64_t t = 1; t <= ref::kSteps; ++t) {
      set_reference_grads(store, t);
      opt.step(learning_rate(t));
      EXPECT_EQ(opt.steps(), t);
      if (check < ref::kChecks && ref::kCheckSteps[check] == t) {
        expect_close(store.values(), ref::kParams[r][check],
                     "run " + std::to_string(r) + " step " + std::to_string(t), agreement);
        ++check;
      }
    }
    EXPECT_EQ(check, ref::kChecks);
    expect_close(opt.exp_avg(), ref::kExpAvg[r], "exp_avg run " + std::to_string(r), agreement);
    expect_close(opt.exp_avg_sq(), ref::kExpAvgSq[r], "exp_avg_sq run " + std::to_string(r),
                 agreement);
  }
  std::printf("AdamW vs torch: %lld values, %lld differ bitwise, max relative error %.3g\n",
              (long long)agreement.total, (long long)agreement.differ, agreement.max_rel);
  RecordProperty("bitwise_differences", int(agreement.differ));
}

// The same run in double follows the formula in the header, computed here in long double.
TEST(AdamW, DoubleFollowsTheUpdateFormula) {
  ParameterStore<double> store;
  build_reference_store(store);
  const AdamWOptions o{0.8, 0.95, 1e-6, 0.1};
  AdamW<double> opt(store, o);
  const int64_t n = store.numel();
  std::vector<long double> p(n), m(n, 0), v(n, 0);
  std::vector<char> decay(n);
  for (const auto& prm : store.all()) {
    const int64_t off = prm.value.data() - store.values().data();
    for (int64_t i = 0; i < prm.value.numel(); ++i) {
      p[off + i] = prm.value[i];
      decay[off + i] = prm.weight_decay;
    }
  }
  for (int64_t t = 1; t <= 20; ++t) {
    set_reference_grads(store, t);
    const long double lr = learning_rate(t);
    for (int64_t i = 0; i < n; ++i) {
      const long double g = store.grads()[i];
      if (decay[i]) p[i] *= 1 - lr * o.weight_decay;
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
      const long double bc1 = 1 - std::pow((long double)o.beta1, (long double)t);
      const long double bc2 = 1 - std::pow((long double)o.beta2, (long double)t);
      p[i] -= lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + o.eps);
    }
    opt.step(double(lr));
  }
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_NEAR(store.values()[i], double(p[i]), 1e-13 * std::abs(double(p[i])) + 1e-15) << i;
  }
}

// With zero gradients the moments stay 0 and the update term is 0: only decay moves p.
TEST(AdamW, OnlyParametersWithDecayFlagAreDecayed) {
  ParameterStore<float> store;
  build_reference_store(store);
  AdamW<float> opt(store, {0.9, 0.999, 1e-8, 0.5});
  EXPECT_TRUE(opt.weight_decay("w1"));
  EXPECT_FALSE(opt.weight_decay("b1"));
  opt.set_weight_decay("w1", false);
  opt.set_weight_decay("ln", true);
  std::vector<float> before(store.values().data(), store.values().data() + store.numel());
  store.zero_grads();
  opt.step(0.1);
  for (const auto& prm : store.all()) {
    const int64_t off = prm.value.data() - store.values().data();
    const bool decays = prm.name == "w2" || prm.name == "emb" || prm.name == "ln";
    for (int64_t i = 0; i < prm.value.numel(); ++i) {
      const float want = decays ? before[off + i] * float(1 - 0.1 * 0.5) : before[off + i];
      EXPECT_EQ(prm.value[i], want) << prm.name << "[" << i << "]";
    }
  }
  EXPECT_THROW(opt.set_weight_decay("nope", true), Error);
}

TEST(AdamW, StateBuffersAreParallelToTheParameterBuffer) {
  ParameterStore<float> store;
  build_reference_store(store);
  AdamW<float> opt(store, {});
  ASSERT_EQ(opt.exp_avg().numel(), store.numel());
  ASSERT_EQ(opt.exp_avg_sq().numel(), store.numel());
  set_reference_grads(store, 1);
  opt.step(1e-3);
  for (int64_t i = 0; i < store.numel(); ++i) {
    const float g = store.grads()[i];
    EXPECT_EQ(opt.exp_avg()[i], std::fma(g, float(1 - 0.9), 0.0f)) << i;
    EXPECT_EQ(opt.exp_avg_sq()[i], float(1 - 0.999) * g * g) << i;
  }
}

TEST(AdamW, BitwiseIdenticalForOneAndTwoThreads) {
  auto run = [](int threads) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    ParameterStore<float> store;
    store.add("big", {301, 199}, Split::kReplicated, Init::kNormal);
    store.add("bias", {199}, Split::kReplicated, Init::kZeros);
    store.add("big2", {150, 151}, Split::kReplicated, Init::kNormal);
    store.finalize(7);
    AdamW<float> opt(store, {});
    for (int64_t t = 1; t <= 3; ++t) {
      for (int64_t i = 0; i < store.numel(); ++i) store.grads()[i] = float(grad_value(0, i, t));
      opt.step(1e-3 * double(t));
    }
    omp_set_num_threads(saved);
    return std::vector<float>(store.values().data(), store.values().data() + store.numel());
  };
  const std::vector<float> one = run(1), two = run(2);
  ASSERT_EQ(one.size(), two.size());
  ASSERT_GT(one.size(), size_t(1) << 14);  // large enough for the parallel path
  EXPECT_EQ(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)), 0);
}

TEST(AdamW, RejectsBadOptionsAndLearningRatesNamingTheField) {
  ParameterStore<float> store;
  build_reference_store(store);
  auto message = [&](AdamWOptions o) {
    try {
      AdamW<float> opt(store, o);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({1.0, 0.999, 1e-8, 0.01}).find("adamw.beta1"), std::string::npos);
  EXPECT_NE(message({0.9, -0.1, 1e-8, 0.01}).find("adamw.beta2"), std::string::npos);
  EXPECT_NE(message({0.9, 0.999, -1, 0.01}).find("adamw.eps"), std::string::npos);
  EXPECT_NE(message({0.9, 0.999, 1e-8, NAN}).find("adamw.weight_decay"), std::string::npos);
  AdamW<float> opt(store, {});
  EXPECT_THROW(opt.step(-1e-3), Error);
  EXPECT_THROW(opt.step(INFINITY), Error);
  EXPECT_EQ(opt.steps(), 0);
  ParameterStore<float> unfinalized;
  unfinalized.add("w", {2}, Split::kReplicated, Init::kNormal);
  EXPECT_THROW(AdamW<float>(unfinalized, {}), Error);
}

}  // namespace
}  // namespace primal
