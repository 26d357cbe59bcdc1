// main() of the gtest executables that run under mpirun: every rank runs every test; rank 0
// prints gtest's report, the other ranks print only their failures (prefixed with the rank);
// the failure count is all-reduced so that every rank exits non-zero if any rank failed.
#include <gtest/gtest.h>

#include <cstdio>

#include "comm/mpi/mpi_communicator.h"
#include "tests/mpi/mpi_test_env.h"

namespace primal::testing {
namespace {

MpiCommunicator* g_world = nullptr;

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "rank %d: %s:%d: Failure\n%s\n", rank_,
                 r.file_name() ? r.file_name() : "?", r.line_number(), r.message());
  }

 private:
  int rank_;
};

}  // namespace

MpiCommunicator& world() {
  return *g_world;
}

}  // namespace primal::testing

int main(int argc, char** argv) {
  // A test that fails on one rank can leave the others waiting in a collective: the watchdog
  // turns that into an abort instead of a hang.
  primal::MpiRuntime mpi(&argc, &argv, primal::MpiOptions{.timeout_s = 60});
  primal::testing::g_world = &mpi.world();
  ::testing::InitGoogleTest(&argc, argv);
  const int rank = mpi.world().rank();
  if (rank != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new primal::testing::RankFailurePrinter(rank));
  }
  const bool failed_here = RUN_ALL_TESTS() != 0;
  const bool failed = primal::any_rank(mpi.world(), failed_here);
  if (rank == 0)
    std::printf("[mpi] %d rank(s): %s\n", mpi.world().size(),
                failed ? "FAILED on at least one rank" : "passed on every rank");
  return failed ? 1 : 0;
}
