#include "core/cuda/device.h"

#include <cstdio>

#include "core/cuda/check.h"

namespace primal::cuda {

void throw_error(const char* file, int line, const char* call, const std::string& what) {
  const char* base = file;
  for (const char* p = file; *p; ++p)
    if (*p == '/') base = p + 1;
  throw Error(std::string(base) + ":" + std::to_string(line),
              std::string(call) + " failed: " + what);
}

void check_cublas(cublasStatus_t status, const char* file, int line, const char* call) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw_error(file, line, call,
              std::string(cublasGetStatusName(status)) + ": " + cublasGetStatusString(status));
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

std::string no_device_reason() {
  int n = 0;
  const cudaError_t status = cudaGetDeviceCount(&n);
  if (status != cudaSuccess) {
    cudaGetLastError();
    return std::string("no CUDA device: ") + cudaGetErrorName(status) + " (" +
           cudaGetErrorString(status) + ")";
  }
  if (n == 0) return "no CUDA device: the runtime sees 0 devices";
  return "";
}

void set_device(int device) {
  PRIMAL_CUDA_CHECK(cudaSetDevice(device));
}

int current_device() {
  int d = 0;
  PRIMAL_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

DeviceInfo device_info(int device) {
  cudaDeviceProp prop{};
  PRIMAL_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return {prop.name, prop.major, prop.minor, prop.multiProcessorCount, prop.totalGlobalMem};
}

Stream::Stream() {
  PRIMAL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}

Stream::~Stream() {
  if (stream_) cudaStreamDestroy(stream_);
}

Stream& Stream::operator=(Stream&& o) noexcept {
  if (this != &o) {
    if (stream_) cudaStreamDestroy(stream_);
    stream_ = o.stream_;
    o.stream_ = nullptr;
  }
  return *this;
}

void Stream::synchronize() const {
  PRIMAL_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

Event::Event(bool timing) {
  PRIMAL_CUDA_CHECK(cudaEventCreateWithFlags(&event_, timing ? 0 : cudaEventDisableTiming));
}

Event::~Event() {
  if (event_) cudaEventDestroy(event_);
}

void Event::record(cudaStream_t stream) {
  PRIMAL_CUDA_CHECK(cudaEventRecord(event_, stream));
}

void Event::wait(cudaStream_t stream) const {
  PRIMAL_CUDA_CHECK(cudaStreamWaitEvent(stream, event_, 0));
}

bool Event::query() const {
  const cudaError_t status = cudaEventQuery(event_);
  if (status == cudaErrorNotReady) return false;
  PRIMAL_CUDA_CHECK(status);
  return true;
}

void Event::synchronize() const {
  PRIMAL_CUDA_CHECK(cudaEventSynchronize(event_));
}

float Event::elapsed_ms(const Event& start) const {
  float ms = 0;
  PRIMAL_CUDA_CHECK(cudaEventElapsedTime(&ms, start.event_, event_));
  return ms;
}

}  // namespace primal::cuda
