#include "comm/process_groups.h"

#include <string>

namespace primal {

ProcessGroups make_process_groups(Communicator& world, int tp) {
  const int n = world.size();
  if (tp < 1) throw Error("parallel.tp must be at least 1, got " + std::to_string(tp));
  if (n % tp != 0)
    throw Error("world size " + std::to_string(n) + " is not divisible by parallel.tp " +
                std::to_string(tp));
  ProcessGroups g;
  g.world = &world;
  g.tp_size = tp;
  g.dp_size = n / tp;
  g.tp_rank = world.rank() % tp;
  g.dp_rank = world.rank() / tp;
  // Same dp_rank -> same TP group, ordered by tp_rank; same tp_rank -> same DP group.
  g.tp = world.split(g.dp_rank, g.tp_rank, "tp");
  g.dp = world.split(g.tp_rank, g.dp_rank, "dp");
  return g;
}

}  // namespace primal
