// device_data_parallel.h in a build with the CUDA backend but without NCCL (comm/nccl was not
// built). Config validation (LoadedConfig::validate_layout) refuses train.device CUDA on more
// than one process first; this is the same message for a caller that did not validate.
#include "core/error.h"
#include "trainer/device_data_parallel.h"

namespace primal {
namespace {

[[noreturn]] void no_nccl(const LoadedConfig& config) {
  throw Error(config.where("train.device"),
              "CUDA with more than one process needs NCCL, and this build has none (NCCL was "
              "not found when it was configured)");
}

}  // namespace

int select_data_parallel_device(const LoadedConfig& config, ProcessGroups&) {
  no_nccl(config);
}

std::unique_ptr<cuda::DeviceTensorParallelGroup> make_device_tensor_parallel(
    const LoadedConfig& config, ProcessGroups&) {
  no_nccl(config);
}

std::unique_ptr<DeviceDataParallel> make_device_data_parallel(const LoadedConfig& config,
                                                              ProcessGroups&,
                                                              cuda::DeviceTransformer<float>&) {
  no_nccl(config);
}

std::unique_ptr<DeviceDataParallel> make_device_data_parallel(
    const LoadedConfig& config, ProcessGroups&, cuda::DeviceTransformer<cuda::bf16>&) {
  no_nccl(config);
}

}  // namespace primal
