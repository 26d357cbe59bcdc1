// make_device_step in a build without the CUDA backend (PRIMAL_CUDA=OFF). Config validation
// (LoadedConfig::validate_layout) refuses train.device CUDA first; this is the same message
// for a caller that did not validate.
#include "core/error.h"
#include "trainer/device_step.h"

namespace primal {

std::unique_ptr<TrainingStep> make_device_step(const LoadedConfig& config,
                                               const ParameterStore<float>&, AdamW<float>&,
                                               ProcessGroups*) {
  throw Error(config.where("train.device"),
              "CUDA: this build has no CUDA backend (built with PRIMAL_CUDA=OFF)");
}

}  // namespace primal
