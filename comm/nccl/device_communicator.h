// A Communicator whose collectives take device buffers (Place{Device::kCuda, stream}), and the
// choice between its two backends (parallel.device_transport):
//   NCCL:       comm/nccl/nccl_communicator.h, one GPU per rank, collectives enqueued on the
//               caller's stream;
//   STAGED_MPI: comm/nccl/staged_communicator.h, the device buffers copied to the host and
//               reduced over the MPI group, so that 2-4 ranks sharing one GPU (which NCCL
//               refuses) run the same tensor- and data-parallel code. For tests and small
//               checks: it waits on the host at every collective.
#pragma once

#include <memory>
#include <string>

#include "comm/communicator.h"
#include "comm/mpi/mpi_communicator.h"
#include "core/cuda/device.h"

namespace primal {

class DeviceCommunicator : public Communicator {
 public:
  // Waits on the host until `event` (recorded after collectives of this communicator) has
  // completed, watched like a blocking call: past timeout_s() the job ends with the watchdog's
  // line. `what` names the wait in that message.
  virtual void wait_event(const cuda::Event& event, const char* what) = 0;
};

enum class DeviceTransport { kNccl, kStagedMpi };

// Collective over `mpi` (which must outlive the result): a device communicator of the same
// ranks on the current device.
std::unique_ptr<DeviceCommunicator> make_device_communicator(MpiCommunicator& mpi, std::string name,
                                                             DeviceTransport transport);

}  // namespace primal
