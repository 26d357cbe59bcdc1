// mpi_watchdog_test: a job in which one rank fails, for run_failure_test.py to time.
//   --mode never-joins  rank 1 never joins the all-reduce the others wait in (watchdog)
//   --mode throw        rank 1 throws at step 3 inside run_or_abort
//   --mode uncaught     rank 1 throws at step 3 and nothing catches it (terminate handler)
//   --mode kill         rank 1 kills itself (SIGKILL) at step 3
//   --timeout S         the watchdog timeout (default 60)
//   --tag T             ignored: lets the wrapper find this job's processes
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "comm/mpi/mpi_communicator.h"
#include "comm/process_groups.h"

namespace {

int steps(primal::Communicator& world, const std::string& mode) {
  primal::ProcessGroups groups = primal::make_process_groups(world, 1);
  std::vector<float> grads(1 << 16, 1.f);
  for (int step = 0; step < 10; ++step) {
    if (world.rank() == 1 && step == 3) {
      if (mode == "never-joins") {
        for (int s = 0; s < 120; ++s) sleep(1);  // busy elsewhere; never joins
      } else if (mode == "kill") {
        std::raise(SIGKILL);
      } else {
        throw primal::Error("injected failure at step 3");
      }
    }
    groups.dp->all_reduce(grads.data(), static_cast<int64_t>(grads.size()),
                          primal::ReduceOp::kAverage);
  }
  if (world.rank() == 0) std::printf("all steps done: the failure was not injected\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = "throw";
  double timeout = 60;
  for (int i = 1; i + 1 < argc; ++i) {
    if (!std::strcmp(argv[i], "--mode"))
      mode = argv[++i];
    else if (!std::strcmp(argv[i], "--timeout"))
      timeout = std::stod(argv[++i]);
    else if (!std::strcmp(argv[i], "--tag"))
      ++i;
  }
  primal::MpiRuntime mpi(&argc, &argv, primal::MpiOptions{.timeout_s = timeout});
  if (mode == "uncaught") return steps(mpi.world(), mode);
  return primal::run_or_abort([&] { return steps(mpi.world(), mode); });
}
