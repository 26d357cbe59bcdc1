// What the gpu tests share: a fixture that skips without a device (with the runtime's reason)
// and otherwise owns a stream, an allocator and cuBLAS handles; host <-> device copies that
// convert to and from the element type; the error measure of the tolerances.
//
// Tolerances: fp32 results within 1e-5 of a double CPU reference, bf16 within 2e-2,
// relative to the largest magnitude of the reference (a norm-wise error: elements near zero
// are compared on the scale of the whole result, as their rounding is).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <type_traits>
#include <vector>

#include "core/cuda/attention.h"

namespace primal::cuda::testing {

template <typename T>
constexpr double tolerance() {
  return std::is_same_v<T, float> ? 1e-5 : 2e-2;
}

inline std::vector<float> random_vector(int64_t n, uint64_t seed, float lo = -1, float hi = 1) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline float to_float(float x) {
  return x;
}
inline float to_float(bf16 x) {
  return __bfloat162float(x);
}
template <typename T>
T from_float(float x) {
  if constexpr (std::is_same_v<T, float>)
    return x;
  else
    return __float2bfloat16_rn(x);
}

// v rounded to T and back: the values a T buffer holds, for the reference to start from.
template <typename T>
std::vector<float> rounded(std::vector<float> v) {
  for (float& x : v) x = to_float(from_float<T>(x));
  return v;
}

// max |got - want| / max |want|.
inline double rel_error(const std::vector<float>& got, const std::vector<double>& want) {
  EXPECT_EQ(got.size(), want.size());
  double err = 0, scale = 1e-30;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    err = std::max(err, std::abs(double(got[i]) - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return err / scale;
}
inline double rel_error(const std::vector<double>& got, const std::vector<double>& want) {
  double err = 0, scale = 1e-30;
  for (size_t i = 0; i < got.size(); ++i) {
    err = std::max(err, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return err / scale;
}

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string reason = no_device_reason();
    if (!reason.empty()) GTEST_SKIP() << reason;
    stream_ = std::make_unique<Stream>();
    allocator_ = std::make_unique<CachingAllocator>();
    blas_ = std::make_unique<Blas>(stream_->get());
    ex_ = {stream_->get(), allocator_.get()};
  }
  void TearDown() override {
    if (stream_) stream_->synchronize();
  }

  // A device buffer of T holding `host` (converted).
  template <typename T>
  DeviceBuffer<T> upload(const std::vector<float>& host) {
    std::vector<T> t(host.size());
    for (size_t i = 0; i < host.size(); ++i) t[i] = from_float<T>(host[i]);
    DeviceBuffer<T> d(*allocator_, int64_t(t.size()), ex_.stream);
    copy_to_device(d.data(), t.data(), d.bytes(), ex_.stream);
    stream_->synchronize();
    return d;
  }
  template <typename T>
  DeviceBuffer<T> upload_raw(const std::vector<T>& host) {
    DeviceBuffer<T> d(*allocator_, int64_t(host.size()), ex_.stream);
    copy_to_device(d.data(), host.data(), d.bytes(), ex_.stream);
    stream_->synchronize();
    return d;
  }
  template <typename T>
  std::vector<float> download(const DeviceBuffer<T>& d) {
    std::vector<T> t(d.size());
    copy_to_host(t.data(), d.data(), d.bytes(), ex_.stream);
    stream_->synchronize();
    std::vector<float> out(t.size());
    for (size_t i = 0; i < t.size(); ++i) out[i] = to_float(t[i]);
    return out;
  }
  template <typename T>
  std::vector<T> download_raw(const DeviceBuffer<T>& d) {
    std::vector<T> t(d.size());
    copy_to_host(t.data(), d.data(), d.bytes(), ex_.stream);
    stream_->synchronize();
    return t;
  }

  std::unique_ptr<Stream> stream_;
  std::unique_ptr<CachingAllocator> allocator_;
  std::unique_ptr<Blas> blas_;
  Exec ex_;
};

template <typename T>
class GpuTypedTest : public GpuTest {};

using ElementTypes = ::testing::Types<float, bf16>;

struct TypeNames {
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, float> ? "fp32" : "bf16";
  }
};

}  // namespace primal::cuda::testing
