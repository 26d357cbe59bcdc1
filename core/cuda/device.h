// Devices, streams and events of the CUDA runtime, and the element types of the kernels.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

namespace primal::cuda {

using bf16 = __nv_bfloat16;

// Visible CUDA devices; 0 when there is none or no driver (never throws).
int device_count();
// Why no CUDA device can be used here ("no CUDA device: <runtime's reason>"), or "" when one
// can: the message of a skipped test.
std::string no_device_reason();
void set_device(int device);
int current_device();

struct DeviceInfo {
  std::string name;
  int major = 0, minor = 0;  // compute capability
  int multiprocessors = 0;
  size_t memory_bytes = 0;
};
DeviceInfo device_info(int device);

// An owned, non-blocking stream on the device current at construction.
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  Stream(Stream&& o) noexcept : stream_(o.stream_) { o.stream_ = nullptr; }
  Stream& operator=(Stream&& o) noexcept;

  cudaStream_t get() const { return stream_; }
  operator cudaStream_t() const { return stream_; }
  void synchronize() const;

 private:
  cudaStream_t stream_ = nullptr;
};

// An owned event: ordering between streams (wait) and completion tests from the host.
class Event {
 public:
  explicit Event(bool timing = false);
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  cudaEvent_t get() const { return event_; }
  void record(cudaStream_t stream);
  // Work enqueued on `stream` from now on starts after what this event recorded.
  void wait(cudaStream_t stream) const;
  // Whether the recorded work has completed (throws on a failed kernel).
  bool query() const;
  void synchronize() const;
  // Milliseconds from `start` to this event (both recorded with timing = true).
  float elapsed_ms(const Event& start) const;

 private:
  cudaEvent_t event_ = nullptr;
};

}  // namespace primal::cuda
