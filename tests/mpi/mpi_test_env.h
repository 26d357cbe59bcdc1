// The world communicator of a gtest executable run under mpirun (see mpi_test_main.cc), and
// the scratch directory that every rank of a test shares.
#pragma once

#include <filesystem>
#include <string>

#include "comm/mpi/mpi_communicator.h"
#include "tests/common/scratch_dir.h"

namespace primal::testing {

MpiCommunicator& world();

// Collective: <temp>/<prefix>np<world size>_<current test's name> (one job's, whatever other
// world sizes run the same test at the same time), emptied and created by world rank 0 (which
// also writes prose_corpus there, if not empty), the same path on every rank.
inline std::filesystem::path shared_test_dir(const std::string& prefix,
                                             const std::string& prose_corpus = "") {
  const std::string job = prefix + "np" + std::to_string(world().size()) + "_";
  if (world().rank() == 0) {
    const std::filesystem::path dir = fresh_test_dir(job);
    if (!prose_corpus.empty()) write_prose_corpus(dir / prose_corpus);
  }
  world().barrier();
  return std::filesystem::temp_directory_path() /
         (job + ::testing::UnitTest::GetInstance()->current_test_info()->name());
}

// Collective: world rank 0 removes a shared_test_dir once every rank is done with it.
inline void remove_shared_test_dir(const std::filesystem::path& dir) {
  world().barrier();
  if (world().rank() == 0) std::filesystem::remove_all(dir);
}

}  // namespace primal::testing
