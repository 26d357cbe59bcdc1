// Tensor<T>: a non-owning, row-major view of T values on one device.
// Storage comes from an Arena (activations, reused every step) or a ParameterStore
// (weights and gradients); a Tensor never frees anything.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>

#include "core/error.h"

namespace primal {

enum class Device { kCpu, kCuda };

class Shape {
 public:
  static constexpr int kMaxRank = 4;
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) {
    check(dims.size() <= kMaxRank, "Shape: rank above 4");
    for (int64_t d : dims) dims_[rank_++] = d;
  }
  int rank() const { return rank_; }
  int64_t operator[](int i) const { return dims_[i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= dims_[i];
    return n;
  }
  bool operator==(const Shape& o) const {
    return rank_ == o.rank_ && std::equal(dims_.begin(), dims_.begin() + rank_, o.dims_.begin());
  }
  std::string str() const {
    std::string s = "[";
    for (int i = 0; i < rank_; ++i) s += (i ? ", " : "") + std::to_string(dims_[i]);
    return s + "]";
  }

 private:
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

template <typename T>
class Tensor {
 public:
  Tensor() = default;
  Tensor(T* data, Shape shape, Device device = Device::kCpu)
      : data_(data), shape_(shape), device_(device) {}

  T* data() const { return data_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i]; }
  int64_t numel() const { return shape_.numel(); }
  Device device() const { return device_; }
  bool empty() const { return data_ == nullptr; }
  T& operator[](int64_t i) const { return data_[i]; }

  Tensor reshape(Shape shape) const {
    if (shape.numel() != numel())
      throw Error("Tensor::reshape: " + shape_.str() + " -> " + shape.str());
    return Tensor(data_, shape, device_);
  }
  void zero() const { std::memset(data_, 0, sizeof(T) * numel()); }
  void copy_from(const Tensor& src) const {
    if (src.numel() != numel())
      throw Error("Tensor::copy_from: " + src.shape_.str() + " into " + shape_.str());
    std::memcpy(data_, src.data_, sizeof(T) * numel());
  }

 private:
  T* data_ = nullptr;
  Shape shape_;
  Device device_ = Device::kCpu;
};

}  // namespace primal
