// The process groups of SPEC §5: world = TP x DP with TP innermost. World rank w has
//   tp_rank = w % TP,  dp_rank = w / TP;
// ranks 0..TP-1 form TP group 0 (one node), and a DP group holds the ranks with the same
// tp_rank. KSVD_sync GLOBAL (SPEC §3.4) reduces over world, the TP all-reduces of row-
// parallel layers over tp, the gradient buckets over dp.
#pragma once

#include <memory>

#include "comm/communicator.h"

namespace primal {

struct ProcessGroups {
  Communicator* world = nullptr;     // not owned
  std::unique_ptr<Communicator> tp;  // named "tp"
  std::unique_ptr<Communicator> dp;  // named "dp"
  int tp_size = 1, dp_size = 1;
  int tp_rank = 0, dp_rank = 0;
};

// Collective over world. Throws primal::Error (on every rank alike) when tp < 1 or the
// world size is not divisible by tp: "world size 3 is not divisible by parallel.tp 2".
ProcessGroups make_process_groups(Communicator& world, int tp);

}  // namespace primal
