// The world communicator of a gtest executable run under mpirun (see mpi_test_main.cc).
#pragma once

#include "comm/mpi/mpi_communicator.h"

namespace primal::testing {

MpiCommunicator& world();

}  // namespace primal::testing
