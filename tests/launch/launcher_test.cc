#include "launch/launcher.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace primal {
namespace {

LaunchEnvironment detect(std::map<std::string, std::string> vars) {
  return detect_launch_environment([&](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

TEST(Launcher, OpenMpiVariablesWinOverTheBatchStepsSlurmProcid) {
  // mpirun inside an sbatch allocation: every rank sees SLURM_PROCID=0 of the batch step.
  LaunchEnvironment e = detect({{"OMPI_COMM_WORLD_RANK", "3"},
                                {"OMPI_COMM_WORLD_SIZE", "4"},
                                {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                                {"SLURM_PROCID", "0"},
                                {"SLURM_STEP_ID", "0"}});
  EXPECT_EQ(e.launcher, "OpenMPI mpirun");
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.size, 4);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_size, 2);
}

TEST(Launcher, SrunWithPmixAndPmi2) {
  LaunchEnvironment e = detect({{"SLURM_PROCID", "5"},
                                {"SLURM_NTASKS", "8"},
                                {"SLURM_LOCALID", "1"},
                                {"SLURM_STEP_ID", "2"},
                                {"SLURM_NTASKS_PER_NODE", "4"},
                                {"PMIX_RANK", "5"}});
  EXPECT_EQ(e.launcher, "Slurm srun (PMIx)");
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.size, 8);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_size, 4);
  e = detect({{"SLURM_PROCID", "1"},
              {"SLURM_NTASKS", "2"},
              {"SLURM_LOCALID", "1"},
              {"SLURM_STEP_ID", "0"},
              {"PMI_RANK", "1"}});
  EXPECT_EQ(e.launcher, "Slurm srun");
  EXPECT_EQ(e.rank, 1);
}

TEST(Launcher, HydraAndNone) {
  LaunchEnvironment e = detect(
      {{"PMI_RANK", "2"}, {"PMI_SIZE", "3"}, {"MPI_LOCALRANKID", "2"}, {"MPI_LOCALNRANKS", "3"}});
  EXPECT_EQ(e.launcher, "MPICH/Hydra");
  EXPECT_EQ(e.rank, 2);
  EXPECT_EQ(e.size, 3);
  EXPECT_EQ(e.local_rank, 2);
  e = detect({});
  EXPECT_EQ(e.launcher, "none");
  EXPECT_EQ(e.size, 1);
  EXPECT_EQ(describe_layout(e, 1, 0, 0).rfind("world 1 = tp 1 x dp 1 | rank 0 (tp 0, dp 0)", 0),
            0u);
}

// TP groups are consecutive ranks (SPEC §5): each must lie on one host. The first group that
// does not is named with its ranks and where they run.
TEST(Launcher, TpGroupsMustStayInsideAHost) {
  EXPECT_EQ(tp_group_across_hosts({}, 2), "") << "one host";
  EXPECT_EQ(tp_group_across_hosts({"node0", "node0", "node1", "node1"}, 2), "");
  EXPECT_EQ(tp_group_across_hosts({"node0", "node1", "node0", "node1"}, 1), "") << "TP 1";
  EXPECT_EQ(
      tp_group_across_hosts({"node0", "node1", "node0", "node1"}, 2)
          .rfind("TP group 0 (ranks 0-1) spans hosts node0 (rank 0), node1 (rank 1); a TP group "
                 "must stay inside one host",
                 0),
      0u);
  const std::string three = tp_group_across_hosts({"a", "a", "a", "a", "a", "a", "b", "b"}, 4);
  EXPECT_EQ(three.rfind("TP group 1 (ranks 4-7) spans hosts a (ranks 4-5), b (ranks 6-7)", 0), 0u)
      << three;
  EXPECT_NE(three.find("a multiple of 4"), std::string::npos) << three;
}

}  // namespace
}  // namespace primal
