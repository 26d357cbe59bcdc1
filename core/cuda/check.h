// Error checks of the CUDA runtime, cuBLAS and NCCL: a failed call throws primal::Error
// naming the file and line of the call, the call itself and the library's error string.
//   PRIMAL_CUDA_CHECK(cudaMemcpyAsync(...));
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <string>

#include "core/error.h"

namespace primal::cuda {

[[noreturn]] void throw_error(const char* file, int line, const char* call,
                              const std::string& what);

inline void check_cuda(cudaError_t status, const char* file, int line, const char* call) {
  if (status != cudaSuccess)
    throw_error(file, line, call,
                std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status));
}
void check_cublas(cublasStatus_t status, const char* file, int line, const char* call);

// The last launch error (a bad configuration) of the kernel just launched.
inline void check_launch(const char* file, int line, const char* kernel) {
  check_cuda(cudaGetLastError(), file, line, kernel);
}

}  // namespace primal::cuda

#define PRIMAL_CUDA_CHECK(call) ::primal::cuda::check_cuda((call), __FILE__, __LINE__, #call)
#define PRIMAL_CUBLAS_CHECK(call) ::primal::cuda::check_cublas((call), __FILE__, __LINE__, #call)
#define PRIMAL_CUDA_CHECK_LAUNCH(name) ::primal::cuda::check_launch(__FILE__, __LINE__, name)
