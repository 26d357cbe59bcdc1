#include "launch/launcher.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>

namespace primal {
namespace {

int read_int(const std::function<const char*(const char*)>& get, const char* name, int fallback) {
  const char* v = get(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  return end && *end == '\0' ? int(x) : fallback;
}

}  // namespace

LaunchEnvironment detect_launch_environment(
    const std::function<const char*(const char*)>& getenv_fn) {
  const auto get = getenv_fn ? getenv_fn : [](const char* n) { return std::getenv(n); };
  LaunchEnvironment env;
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  env.node = host;
  // Order matters: under mpirun inside an sbatch allocation every rank also sees the batch
  // step's SLURM_PROCID=0, so the MPI launcher's own variables come first.
  if (get("OMPI_COMM_WORLD_RANK")) {
    env.launcher = "OpenMPI mpirun";
    env.rank = read_int(get, "OMPI_COMM_WORLD_RANK", 0);
    env.size = read_int(get, "OMPI_COMM_WORLD_SIZE", 1);
    env.local_rank = read_int(get, "OMPI_COMM_WORLD_LOCAL_RANK", 0);
    env.local_size = read_int(get, "OMPI_COMM_WORLD_LOCAL_SIZE", 1);
  } else if (get("PMI_RANK") && !get("SLURM_PROCID")) {
    env.launcher = "MPICH/Hydra";
    env.rank = read_int(get, "PMI_RANK", 0);
    env.size = read_int(get, "PMI_SIZE", 1);
    env.local_rank = read_int(get, "MPI_LOCALRANKID", 0);
    env.local_size = read_int(get, "MPI_LOCALNRANKS", 1);
  } else if (get("SLURM_PROCID") && get("SLURM_STEP_ID")) {
    // srun (PMIx: PMIX_RANK is set too; PMI2: PMI_RANK).
    env.launcher = get("PMIX_RANK") ? "Slurm srun (PMIx)" : "Slurm srun";
    env.rank = read_int(get, "SLURM_PROCID", 0);
    env.size = read_int(get, "SLURM_NTASKS", 1);
    env.local_rank = read_int(get, "SLURM_LOCALID", 0);
    env.local_size =
        read_int(get, "SLURM_NTASKS_PER_NODE", read_int(get, "SLURM_TASKS_PER_NODE", 1));
  } else {
    env.launcher = "none";
  }
  return env;
}

std::string describe_layout(const LaunchEnvironment& env, int tp, int tp_rank, int dp_rank) {
  const int world = env.size;
  return "world " + std::to_string(world) + " = tp " + std::to_string(tp) + " x dp " +
         std::to_string(world / tp) + " | rank " + std::to_string(env.rank) + " (tp " +
         std::to_string(tp_rank) + ", dp " + std::to_string(dp_rank) + ") on node " + env.node +
         ", local rank " + std::to_string(env.local_rank) + " of " +
         std::to_string(env.local_size) + " | launcher: " + env.launcher;
}

std::string tp_group_across_hosts(const std::vector<std::string>& hosts, int tp) {
  const int world = static_cast<int>(hosts.size());
  for (int first = 0; first + tp <= world; first += tp) {
    const int last = first + tp - 1;
    if (std::all_of(hosts.begin() + first, hosts.begin() + last + 1,
                    [&](const std::string& h) { return h == hosts[first]; }))
      continue;
    // The group's runs of ranks on one host: "node0 (ranks 0-1), node1 (rank 2)".
    std::string spans;
    for (int r = first; r <= last;) {
      int end = r;
      while (end < last && hosts[end + 1] == hosts[r]) ++end;
      spans += std::string(spans.empty() ? "" : ", ") + hosts[r] +
               (end > r ? " (ranks " + std::to_string(r) + "-" + std::to_string(end) + ")"
                        : " (rank " + std::to_string(r) + ")");
      r = end + 1;
    }
    return "TP group " + std::to_string(first / tp) + " (ranks " + std::to_string(first) + "-" +
           std::to_string(last) + ") spans hosts " + spans +
           "; a TP group must stay inside one host: place consecutive ranks on one host "
           "(mpirun --map-by ppr:N:node, Slurm --ntasks-per-node=N) with N a multiple of " +
           std::to_string(tp) + ", or lower parallel.tp";
  }
  return "";
}

}  // namespace primal
