// primal_comm_bench: all-reduce bus bandwidth of comm/'s paths against a plain MPI_Allreduce
// of the same bytes.
//   mpirun -np 2 primal_comm_bench [--sizes-mb 1,4,16,64] [--bucket-mb 25] [--param-mb 1]
// bus bandwidth = 2(n-1)/n * bytes / time (the nccl-tests convention): what each rank's link
// carries, comparable across rank counts. Times are the slowest rank's mean per call.
//   raw        MPI_Allreduce(MPI_IN_PLACE, MPI_SUM) on the whole buffer
//   all_reduce Communicator::all_reduce (average), rank-ordered algorithm
//   bucketed   GradientBuckets (average): the buffer cut into param-mb parameters, marked
//              ready one after another as backward would, buckets of bucket-mb, wait_all
//   bucket/mpi the same with AllReduceAlgorithm::kMpi (MPI_Iallreduce per bucket)
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstring>
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

// Mean seconds per call of fn over reps calls (after one warm-up), the slowest rank's.
template <typename Fn>
double time_per_call(MpiCommunicator& world, int reps, Fn&& fn) {
  fn();
  world.barrier();
  const double t0 = now_s();
  for (int r = 0; r < reps; ++r) fn();
  double t = (now_s() - t0) / reps;
  MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, world.mpi_comm());
  return t;
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
  for (int i = 1; i + 1 < argc; ++i) {
    if (!std::strcmp(argv[i], "--sizes-mb"))
      sizes_mb = parse_list(argv[++i]);
    else if (!std::strcmp(argv[i], "--bucket-mb"))
      bucket_mb = std::stod(argv[++i]);
    else if (!std::strcmp(argv[i], "--param-mb"))
      param_mb = std::stod(argv[++i]);
  }
  const int n = world.size();
  const double bus = n > 1 ? 2.0 * (n - 1) / n : 1.0;
  if (world.rank() == 0) {
    std::printf(
        "all-reduce bus bandwidth, %d ranks, buckets of %g MiB, parameters of %g MiB "
        "(GB/s = 1e9 B/s; time per call in us)\n",
        n, bucket_mb, param_mb);
    std::printf("%9s %17s %17s %17s %17s %12s\n", "MiB", "raw MPI_Allreduce", "all_reduce",
                "bucketed", "bucketed(mpi)", "bucket/raw");
  }
  for (double mb : sizes_mb) {
    const auto bytes = static_cast<size_t>(mb * (1 << 20));
    const auto count = static_cast<int64_t>(bytes / sizeof(float));
    const int reps = std::max(3, std::min(50, static_cast<int>((256.0 * (1 << 20)) / bytes)));
    std::vector<float> buf(count, 1.0f);

    const double raw = time_per_call(world, reps, [&] {
      MPI_Allreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(count), MPI_FLOAT, MPI_SUM,
                    world.mpi_comm());
    });
    const double ours = time_per_call(
        world, reps, [&] { world.all_reduce(buf.data(), count, ReduceOp::kAverage); });

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
    const double bucketed = time_per_call(world, reps, bucketed_step);
    world.set_algorithm(AllReduceAlgorithm::kMpi);
    const double bucketed_mpi = time_per_call(world, reps, bucketed_step);
    world.set_algorithm(AllReduceAlgorithm::kRankOrdered);

    if (world.rank() == 0) {
      auto cell = [&](double t) {
        char s[32];
        std::snprintf(s, sizeof s, "%6.2f (%8.1f)", bus * bytes / t / 1e9, t * 1e6);
        return std::string(s);
      };
      std::printf("%9.4g %17s %17s %17s %17s %11.2fx\n", mb, cell(raw).c_str(), cell(ours).c_str(),
                  cell(bucketed).c_str(), cell(bucketed_mpi).c_str(), raw / bucketed);
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
