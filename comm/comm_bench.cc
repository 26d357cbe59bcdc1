// primal_comm_bench: all-reduce bus bandwidth of comm/'s paths against a plain MPI_Allreduce
// of the same bytes.
//   mpirun -np 2 primal_comm_bench [--sizes-mb 1,4,16,64] [--bucket-mb 25] [--param-mb 1]
//                                  [--segment-kb 1024] [--replicated-kb 64] [--rounds 21]
// bus bandwidth = 2(n-1)/n * bytes / time (the nccl-tests convention): what each rank's link
// carries, comparable across rank counts.
//   raw        MPI_Allreduce(MPI_IN_PLACE, MPI_SUM) on the whole buffer
//   all_reduce Communicator::all_reduce (average), rank-ordered algorithm
//   bucketed   GradientBuckets (average): the buffer cut into param-mb parameters, marked
//              ready one after another as backward would, buckets of bucket-mb, wait_all
//   bucket/mpi the same with AllReduceAlgorithm::kMpi (MPI_Iallreduce per bucket)
// Side by side: each round times a batch of calls of every path, one after another (the order
// rotating from round to round), so that a slow spell of the shared machine hits all of them.
// Reported: the median over rounds of each path's time per call (the slowest rank's), and the
// median and range over rounds of the ratio raw / bucketed measured within one round.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "comm/gradient_buckets.h"
#include "comm/mpi/mpi_communicator.h"

namespace primal {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Seconds per call of fn over `calls` calls, the slowest rank's.
template <typename Fn>
double time_per_call(MpiCommunicator& world, int calls, Fn&& fn) {
  world.barrier();
  const double t0 = now_s();
  for (int r = 0; r < calls; ++r) fn();
  double t = (now_s() - t0) / calls;
  MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, world.mpi_comm());
  return t;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

std::vector<double> parse_list(const std::string& s) {
  std::vector<double> v;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) v.push_back(std::stod(item));
  return v;
}

int run(MpiCommunicator& world, int argc, char** argv) {
  std::vector<double> sizes_mb = {1, 4, 16, 64};
  double bucket_mb = 25, param_mb = 1;
  int rounds = 21;
  for (int i = 1; i + 1 < argc; ++i) {
    if (!std::strcmp(argv[i], "--sizes-mb"))
      sizes_mb = parse_list(argv[++i]);
    else if (!std::strcmp(argv[i], "--bucket-mb"))
      bucket_mb = std::stod(argv[++i]);
    else if (!std::strcmp(argv[i], "--param-mb"))
      param_mb = std::stod(argv[++i]);
    else if (!std::strcmp(argv[i], "--segment-kb"))
      world.set_segment_bytes(static_cast<size_t>(std::stod(argv[++i]) * 1024));
    else if (!std::strcmp(argv[i], "--replicated-kb"))
      world.set_replicated_max_bytes(static_cast<size_t>(std::stod(argv[++i]) * 1024));
    else if (!std::strcmp(argv[i], "--rounds"))
      rounds = std::max(1, std::stoi(argv[++i]));
  }
  const int n = world.size();
  const double bus = n > 1 ? 2.0 * (n - 1) / n : 1.0;
  if (world.rank() == 0) {
    std::printf(
        "all-reduce bus bandwidth, %d ranks (waiting by %s), buckets of %g MiB, parameters of "
        "%g MiB, %d rounds (GB/s = 1e9 B/s; median time per call in us)\n",
        n, world.idle_wait() == IdleWait::kYield ? "yielding" : "spinning", bucket_mb, param_mb,
        rounds);
    std::printf("%9s %17s %17s %17s %17s %12s %14s\n", "MiB", "raw MPI_Allreduce", "all_reduce",
                "bucketed", "bucketed(mpi)", "raw/bucketed", "(range)");
  }
  for (double mb : sizes_mb) {
    const auto bytes = static_cast<size_t>(mb * (1 << 20));
    const auto count = static_cast<int64_t>(bytes / sizeof(float));
    // About 16 MiB of traffic per path and round.
    const int calls = std::max(1, static_cast<int>((16.0 * (1 << 20)) / bytes));
    std::vector<float> buf(count, 1.0f);

    // Parameters of param_mb in reverse registration order, as backward makes them final.
    const auto param = std::max<int64_t>(1, static_cast<int64_t>(param_mb * (1 << 20) / 4));
    std::vector<GradRange> ready;
    for (int64_t off = 0; off < count; off += param)
      ready.push_back({off, std::min(param, count - off)});
    std::reverse(ready.begin(), ready.end());
    GradientBuckets buckets(world, buf.data(), count, ready,
                            static_cast<size_t>(bucket_mb * (1 << 20)));
    buckets.set_record_events(false);
    auto bucketed_step = [&] {
      buckets.begin_backward();
      for (int i = 0; i < buckets.num_params(); ++i) buckets.mark_ready(i);
      buckets.wait_all();
    };
    const std::function<void()> paths[] = {
        [&] {
          MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(count), MPI_FLOAT, MPI_SUM,
                        world.mpi_comm());
        },
        [&] { world.all_reduce(buf.data(), count, ReduceOp::kAverage); },
        bucketed_step,
        [&] {
          world.set_algorithm(AllReduceAlgorithm::kMpi);
          bucketed_step();
          world.set_algorithm(AllReduceAlgorithm::kRankOrdered);
        },
    };
    constexpr int kPaths = 4;
    for (const auto& path : paths) path();  // warm-up: connections, scratch, caches
    std::vector<double> times[kPaths], ratios;
    for (int round = 0; round < rounds; ++round) {
      double t[kPaths];
      for (int k = 0; k < kPaths; ++k) {
        const int p = (round + k) % kPaths;
        t[p] = time_per_call(world, calls, paths[p]);
        times[p].push_back(t[p]);
      }
      ratios.push_back(t[0] / t[2]);
    }
    const double raw = median(times[0]), ours = median(times[1]), bucketed = median(times[2]),
                 bucketed_mpi = median(times[3]);
    const auto [lo, hi] = std::minmax_element(ratios.begin(), ratios.end());

    if (world.rank() == 0) {
      auto cell = [&](double t) {
        char s[32];
        std::snprintf(s, sizeof s, "%6.2f (%8.1f)", bus * bytes / t / 1e9, t * 1e6);
        return std::string(s);
      };
      std::printf("%9.4g %17s %17s %17s %17s %11.2fx  (%.2f-%.2fx)\n", mb, cell(raw).c_str(),
                  cell(ours).c_str(), cell(bucketed).c_str(), cell(bucketed_mpi).c_str(),
                  median(ratios), *lo, *hi);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace primal

int main(int argc, char** argv) {
  primal::MpiRuntime mpi(&argc, &argv);
  return primal::run_or_abort([&] { return primal::run(mpi.world(), argc, argv); });
}
