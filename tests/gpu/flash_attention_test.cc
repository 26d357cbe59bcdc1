// The flash attention kernels (core/cuda/flash_attention.h) against the N x N path
// (softmax_attention_*_reference, itself tested against the CPU math in attention_test.cc):
// y and dqkv, fp32 within 1e-5 and bf16 within 2e-2 of the largest magnitude. The reference
// runs in fp32 on the same (T-rounded) inputs, so a bf16 run is measured against the exact
// attention of its own inputs. N = 1, odd, not a multiple of the tile, a multiple; causal,
// padded, both; head dimensions 32 and 64 (the configs'), and 8, 100, 128 (zero-padded in
// shared memory); the backward bitwise repeatable.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "core/cuda/attention.h"
#include "core/cuda/flash_attention.h"
#include "tests/gpu/gpu_test_util.h"

namespace primal::cuda::testing {
namespace {

struct Case {
  int B, N, H, d;
  bool causal;
  std::vector<int32_t> lengths;  // empty: every position real
  std::string name() const {
    return "B " + std::to_string(B) + " N " + std::to_string(N) + " H " + std::to_string(H) +
           " d " + std::to_string(d) + (causal ? " causal" : "") +
           (lengths.empty() ? "" : " padded");
  }
};

template <typename T>
class FlashAttention : public GpuTypedTest<T> {
 protected:
  struct Result {
    std::vector<float> y, dqkv;
  };

  // The flash kernels' y and dqkv (twice the backward when `repeat`, checked bit for bit).
  Result flash(const Case& c, const std::vector<float>& qkv, const std::vector<float>& dy,
               bool repeat = false) {
    const int64_t rows = int64_t(c.B) * c.N, C = int64_t(c.H) * c.d;
    auto qkv_d = this->template upload<T>(qkv), dy_d = this->template upload<T>(dy);
    auto len_d = this->upload_raw(c.lengths.empty() ? std::vector<int32_t>{0} : c.lengths);
    const int32_t* lengths = c.lengths.empty() ? nullptr : len_d.data();
    DeviceBuffer<T> y(*this->allocator_, rows * C, this->ex_.stream);
    DeviceBuffer<float> lse(*this->allocator_, int64_t(c.B) * c.H * c.N, this->ex_.stream);
    DeviceBuffer<T> dqkv(*this->allocator_, rows * 3 * C, this->ex_.stream);
    flash_attention_forward<T>(this->ex_, qkv_d.data(), lengths, c.causal, c.B, c.N, c.H, c.d,
                               y.data(), lse.data());
    flash_attention_backward<T>(this->ex_, qkv_d.data(), lengths, c.causal, y.data(), lse.data(),
                                dy_d.data(), c.B, c.N, c.H, c.d, dqkv.data());
    if (repeat) {
      const std::vector<T> first = this->download_raw(dqkv);
      flash_attention_backward<T>(this->ex_, qkv_d.data(), lengths, c.causal, y.data(), lse.data(),
                                  dy_d.data(), c.B, c.N, c.H, c.d, dqkv.data());
      const std::vector<T> second = this->download_raw(dqkv);
      EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(T)), 0) << c.name();
    }
    return {this->download(y), this->download(dqkv)};
  }

  // The N x N path in fp32 on the same values.
  Result reference(const Case& c, const std::vector<float>& qkv, const std::vector<float>& dy) {
    const int64_t rows = int64_t(c.B) * c.N, C = int64_t(c.H) * c.d;
    auto qkv_d = this->template upload<float>(qkv), dy_d = this->template upload<float>(dy);
    auto len_d = this->upload_raw(c.lengths.empty() ? std::vector<int32_t>{0} : c.lengths);
    const int32_t* lengths = c.lengths.empty() ? nullptr : len_d.data();
    DeviceBuffer<float> probs(*this->allocator_, int64_t(c.B) * c.H * c.N * c.N, this->ex_.stream);
    DeviceBuffer<float> y(*this->allocator_, rows * C, this->ex_.stream);
    DeviceBuffer<float> dqkv(*this->allocator_, rows * 3 * C, this->ex_.stream);
    softmax_attention_forward_reference<float>(*this->blas_, this->ex_, qkv_d.data(), lengths,
                                               c.causal, c.B, c.N, c.H, c.d, probs.data(),
                                               y.data());
    softmax_attention_backward_reference<float>(*this->blas_, this->ex_, qkv_d.data(), probs.data(),
                                                dy_d.data(), c.B, c.N, c.H, c.d, dqkv.data());
    return {this->download(y), this->download(dqkv)};
  }

  void expect_match(const Case& c, bool repeat = false) {
    const int64_t rows = int64_t(c.B) * c.N, C = int64_t(c.H) * c.d;
    // Values in [-2, 2]: scores of a few units, a softmax far from uniform.
    const auto qkv = rounded<T>(random_vector(rows * 3 * C, 11, -2, 2));
    const auto dy = rounded<T>(random_vector(rows * C, 12));
    const Result got = flash(c, qkv, dy, repeat), want = reference(c, qkv, dy);
    const std::vector<double> y(want.y.begin(), want.y.end());
    const std::vector<double> dqkv(want.dqkv.begin(), want.dqkv.end());
    EXPECT_LT(rel_error(got.y, y), tolerance<T>()) << c.name();
    EXPECT_LT(rel_error(got.dqkv, dqkv), tolerance<T>()) << c.name();
  }
};
TYPED_TEST_SUITE(FlashAttention, ElementTypes, TypeNames);

TYPED_TEST(FlashAttention, CausalMatchesReference) {
  for (const int d : {32, 64})
    for (const int N : {1, 37, 100, 256}) this->expect_match({2, N, 3, d, true, {}});
}

TYPED_TEST(FlashAttention, PaddedMatchesReference) {
  for (const int d : {32, 64})
    for (const int N : {1, 37, 100, 256})
      this->expect_match({3, N, 2, d, false, {N, std::max(1, N / 2 + 1), 1}});
}

TYPED_TEST(FlashAttention, CausalPaddedAndFullMatchReference) {
  for (const int d : {32, 64}) {
    this->expect_match({3, 100, 2, d, true, {100, 64, 3}});
    this->expect_match({2, 100, 2, d, false, {}});
  }
}

// Head dimensions other than the kernels' 16, 32, 64, 128 are zero-padded up to one of them.
TYPED_TEST(FlashAttention, OtherHeadDimsMatchReference) {
  for (const int d : {8, 100, 128}) {
    this->expect_match({2, 37, 2, d, true, {}});
    this->expect_match({2, 100, 2, d, false, {100, 51}});
  }
}

TYPED_TEST(FlashAttention, BackwardIsBitwiseRepeatable) {
  this->expect_match({2, 256, 2, 64, true, {}}, true);
  this->expect_match({3, 100, 2, 32, false, {100, 51, 1}}, true);
}

// The check comes before any device call: no GPU needed.
TEST(FlashAttentionHeadDim, AboveLimitIsAnErrorNamingD) {
  try {
    flash_attention_forward<float>(Exec{}, nullptr, nullptr, true, 1, 8, 1, 129, nullptr, nullptr);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("d = 129"), std::string::npos) << e.what();
  }
}

// Six products of 2 tile^2 d per visited tile pair: 12 N^2 d without a mask when the tile
// divides N, the diagonal tiles and those below it when causal (no GPU needed).
TEST(FlashAttentionFlops, CountTheVisitedTiles) {
  EXPECT_EQ(flash_attention_flops(true, 2, 256, 3, 64, false), 12.0 * 256 * 256 * 64 * 2 * 3);
  EXPECT_EQ(flash_attention_flops(true, 1, 256, 1, 64, true), 12.0 * 64 * 64 * 64 * (4 * 5 / 2));
  EXPECT_EQ(flash_attention_flops(false, 1, 100, 1, 64, true), 12.0 * 32 * 32 * 64 * (4 * 5 / 2));
}

}  // namespace
}  // namespace primal::cuda::testing
