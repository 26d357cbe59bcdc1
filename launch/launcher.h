// Which launcher started this process, and where the process sits in the job: rank, size and
// node-local rank, read from the launcher's environment (OpenMPI's mpirun, MPICH/Hydra,
// Slurm's srun with PMIx or PMI2). The MPI world is the authority on rank and size; this tells
// the node-local rank (which GPU to use) and what to print at start-up.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace primal {

struct LaunchEnvironment {
  std::string launcher;  // "OpenMPI mpirun", "MPICH/Hydra", "Slurm srun", "none"
  int rank = 0, size = 1, local_rank = 0, local_size = 1;
  std::string node;  // host name
};

// getenv by default; tests pass their own lookup.
LaunchEnvironment detect_launch_environment(
    const std::function<const char*(const char*)>& getenv_fn = nullptr);

// "world 4 = tp 2 x dp 2 | rank 1 (tp 1, dp 0) on node vm, local rank 1 of 4 | OpenMPI mpirun"
std::string describe_layout(const LaunchEnvironment& env, int tp, int tp_rank, int dp_rank);

// hosts[r]: the host of world rank r (comm/'s job_hosts(); empty: all on one host). A TP group
// (ranks g*tp .. g*tp+tp-1, SPEC §5) exchanges activations every layer and must stay inside one
// host: returns what is wrong with the first group that spans hosts ("TP group 1 (ranks 2-3)
// spans hosts node0 (rank 2), node1 (rank 3); ..."), or "" when every group is on one host.
std::string tp_group_across_hosts(const std::vector<std::string>& hosts, int tp);

}  // namespace primal
