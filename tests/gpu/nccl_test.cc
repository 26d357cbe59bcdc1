// The device communicators under mpirun (labels gpu;mpi): NCCL, one GPU per rank (every rank
// checks that it has a device of its own), and STAGED_MPI, the ranks sharing a GPU; where a
// rank lacks one, every rank reports SKIPPED with the reason. Values are small integers times
// powers of two: every sum is exact, so results are compared exactly whatever order NCCL adds
// in.
#include <gtest/gtest.h>

#include <vector>

#include "comm/nccl/nccl_communicator.h"
#include "core/cuda/allocator.h"
#include "tests/gpu/nccl_fixture.h"

namespace primal {
namespace {

class DeviceCollectives : public testing::NcclFixture,
                          public ::testing::WithParamInterface<DeviceTransport> {
 protected:
  DeviceCollectives() : NcclFixture("world", GetParam()) {}
};

template <typename T>
T value(int rank, int64_t i) {
  return T((i % 37) * (rank + 1));
}

TEST_P(DeviceCollectives, AllReduceSumsAndAveragesEveryType) {
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
  if (GetParam() == DeviceTransport::kNccl) {
    EXPECT_THROW(comm_->all_reduce(f.data(), count, ReduceOp::kSum), Error) << "host buffer";
  }
}

TEST_P(DeviceCollectives, BroadcastAllGatherReduceScatter) {
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

TEST_P(DeviceCollectives, AsyncAllReduceRecyclesItsWorkAndSplitGroupsReduceApart) {
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

INSTANTIATE_TEST_SUITE_P(Transports, DeviceCollectives,
                         ::testing::Values(DeviceTransport::kNccl, DeviceTransport::kStagedMpi),
                         [](const ::testing::TestParamInfo<DeviceTransport>& info) {
                           return info.param == DeviceTransport::kNccl ? "Nccl" : "StagedMpi";
                         });

}  // namespace
}  // namespace primal
