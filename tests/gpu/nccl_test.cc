// The NCCL backend under mpirun, one GPU per rank (labels gpu;mpi). Every rank checks that it
// has a device of its own; where any rank has none, every rank reports SKIPPED with the
// reason. Values are small integers times powers of two: every sum is exact, so results are
// compared exactly whatever order NCCL adds in.
#include <gtest/gtest.h>

#include <vector>

#include "comm/nccl/nccl_communicator.h"
#include "core/cuda/allocator.h"
#include "tests/mpi/mpi_test_env.h"

namespace primal {
namespace {

class NcclCollectives : public ::testing::Test {
 protected:
  void SetUp() override {
    MpiCommunicator& world = testing::world();
    const int devices = cuda::device_count();
    const int local = node_local_rank(world);
    const bool missing = local >= devices;
    if (any_rank(world, missing)) {
      GTEST_SKIP() << (devices == 0 ? cuda::no_device_reason()
                                    : "fewer GPUs than ranks on a node (" +
                                          std::to_string(devices) + " visible)");
    }
    select_local_device(world);
    comm_ = std::make_unique<NcclCommunicator>(world, "world");
    stream_ = std::make_unique<cuda::Stream>();
    allocator_ = std::make_unique<cuda::CachingAllocator>();
  }
  void TearDown() override {
    comm_.reset();  // before the allocator and stream: no collective is in flight
  }

  template <typename T>
  cuda::DeviceBuffer<T> upload(const std::vector<T>& host) {
    cuda::DeviceBuffer<T> d(*allocator_, int64_t(host.size()), stream_->get());
    cuda::copy_to_device(d.data(), host.data(), d.bytes(), stream_->get());
    return d;
  }
  template <typename T>
  std::vector<T> download(const cuda::DeviceBuffer<T>& d) {
    std::vector<T> host(d.size());
    cuda::copy_to_host(host.data(), d.data(), d.bytes(), stream_->get());
    stream_->synchronize();
    return host;
  }
  Place place() const { return {Device::kCuda, stream_->get()}; }

  std::unique_ptr<NcclCommunicator> comm_;
  std::unique_ptr<cuda::Stream> stream_;
  std::unique_ptr<cuda::CachingAllocator> allocator_;
};

template <typename T>
T value(int rank, int64_t i) {
  return T((i % 37) * (rank + 1));
}

TEST_F(NcclCollectives, AllReduceSumsAndAveragesEveryType) {
  const int n = comm_->size(), r = comm_->rank();
  const int64_t count = 100003;  // odd: no rank's share is aligned
  std::vector<float> f(count);
  std::vector<double> d(count);
  std::vector<int64_t> k(count);
  for (int64_t i = 0; i < count; ++i)
    f[i] = value<float>(r, i), d[i] = value<double>(r, i), k[i] = value<int64_t>(r, i);
  auto f_d = upload(f);
  auto d_d = upload(d);
  auto k_d = upload(k);
  comm_->all_reduce(f_d.data(), count, ReduceOp::kSum, place());
  comm_->all_reduce(d_d.data(), count, ReduceOp::kAverage, place());
  comm_->all_reduce(k_d.data(), count, ReduceOp::kSum, place());
  const auto fs = download(f_d);
  const auto ds = download(d_d);
  const auto ks = download(k_d);
  const int64_t weight = int64_t(n) * (n + 1) / 2;  // sum over ranks of (rank + 1)
  for (int64_t i = 0; i < count; ++i) {
    ASSERT_EQ(fs[i], float((i % 37) * weight)) << i;
    ASSERT_EQ(ds[i], double((i % 37) * weight) / n) << i;
    ASSERT_EQ(ks[i], (i % 37) * weight) << i;
  }
  EXPECT_THROW(comm_->all_reduce(k_d.data(), count, ReduceOp::kAverage, place()), Error);
  EXPECT_THROW(comm_->all_reduce(f.data(), count, ReduceOp::kSum), Error) << "host buffer";
}

TEST_F(NcclCollectives, BroadcastAllGatherReduceScatter) {
  const int n = comm_->size(), r = comm_->rank();
  const int64_t count = 1000;
  std::vector<float> x(count), all(count * n);
  for (int64_t i = 0; i < count; ++i) x[i] = value<float>(r, i);
  auto x_d = upload(x);
  auto all_d = upload(all);
  comm_->all_gather(x_d.data(), all_d.data(), count, place());
  const auto gathered = download(all_d);
  for (int q = 0; q < n; ++q)
    for (int64_t i = 0; i < count; ++i) ASSERT_EQ(gathered[q * count + i], value<float>(q, i));

  comm_->broadcast(x_d.data(), count, n - 1, place());
  const auto b = download(x_d);
  for (int64_t i = 0; i < count; ++i) ASSERT_EQ(b[i], value<float>(n - 1, i));

  // reduce_scatter of the gathered buffer: block r of the sum over ranks.
  std::vector<float> send(count * n);
  for (int64_t i = 0; i < count * n; ++i) send[i] = value<float>(r, i);
  auto send_d = upload(send);
  comm_->reduce_scatter(send_d.data(), x_d.data(), count, ReduceOp::kSum, place());
  const auto mine = download(x_d);
  const int64_t weight = int64_t(n) * (n + 1) / 2;
  for (int64_t i = 0; i < count; ++i)
    ASSERT_EQ(mine[i], float(((r * count + i) % 37) * weight)) << i;
}

TEST_F(NcclCollectives, AsyncAllReduceRecyclesItsWorkAndSplitGroupsReduceApart) {
  const int n = comm_->size(), r = comm_->rank();
  const int64_t count = 4096;
  std::vector<float> x(count, float(r + 1));
  auto x_d = upload(x);
  std::unique_ptr<Work> work;
  for (int round = 0; round < 3; ++round) {
    work = comm_->all_reduce_async(x_d.data(), count, ReduceOp::kSum, std::move(work), place());
    work->wait();
    EXPECT_TRUE(work->test());
  }
  // ((n(n+1)/2) * n) * n after three rounds of sums.
  const double expected = double(n) * (n + 1) / 2 * n * n;
  EXPECT_EQ(download(x_d)[count - 1], float(expected));

  // Two groups by parity: each sums its own members only.
  auto group = comm_->split(r % 2, r, "parity");
  std::vector<int64_t> one(1, r);
  auto one_d = upload(one);
  group->all_reduce(one_d.data(), 1, ReduceOp::kSum, place());
  int64_t want = 0;
  for (int q = r % 2; q < n; q += 2) want += q;
  EXPECT_EQ(download(one_d)[0], want);
  EXPECT_EQ(group->size(), (n - r % 2 + 1) / 2);
}

}  // namespace
}  // namespace primal
