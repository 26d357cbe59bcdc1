// Collectives, process groups and the async all-reduce of comm/ under mpirun (-np 1, 2, 4).
// Expected values are computed locally from every rank's known contribution, adding in rank
// order: the rank-ordered all-reduce must match them bit for bit.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <vector>

#include "comm/process_groups.h"
#include "tests/mpi/mpi_test_env.h"

namespace primal {
namespace {

using testing::world;

// What world rank w contributes at element i: values of mixed magnitude, so that adding in
// another order changes the last bits.
template <typename T>
T contribution(int w, int64_t i) {
  const double base = std::sin(0.37 * static_cast<double>(i) + 1.3 * w) * (1.0 + 0.25 * w);
  const double small = 1e-4 * static_cast<double>((i * 7919 + w * 104729) % 1000) / 3.0;
  if constexpr (std::is_same_v<T, int64_t>)
    return (i * 31 + w * 1000003) % 100000 - 50000;
  else
    return static_cast<T>(base * std::pow(10.0, static_cast<double>(i % 7) - 3) + small);
}

template <typename T>
std::vector<T> contributions(int w, int64_t count) {
  std::vector<T> v(count);
  for (int64_t i = 0; i < count; ++i) v[i] = contribution<T>(w, i);
  return v;
}

// ((x_m0 + x_m1) + x_m2) + ... over the members (world ranks, in group order), / n if average.
template <typename T>
std::vector<T> expected_reduce(const std::vector<int>& members, int64_t count, ReduceOp op) {
  std::vector<T> out(count);
  for (int64_t i = 0; i < count; ++i) {
    T v = contribution<T>(members[0], i);
    for (size_t k = 1; k < members.size(); ++k) v += contribution<T>(members[k], i);
    if (op == ReduceOp::kAverage) v /= static_cast<T>(members.size());
    out[i] = v;
  }
  return out;
}

template <typename T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

template <typename T>
int64_t first_difference(const std::vector<T>& a, const std::vector<T>& b) {
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return static_cast<int64_t>(i);
  return -1;
}

// A group to test and its members' world ranks in group-rank order (from SPEC §5's formula,
// not from the communicator under test).
struct GroupCase {
  Communicator* comm;
  std::vector<int> members;
  std::string label;
};

// Calls fn for world, and for the tp and dp groups of every tp in {1, 2, 4} that divides the
// world size.
template <typename Fn>
void for_each_group(Fn&& fn) {
  Communicator& w = world();
  const int n = w.size();
  {
    std::vector<int> all(n);
    for (int r = 0; r < n; ++r) all[r] = r;
    fn(GroupCase{&w, all, "world"});
  }
  for (int tp : {1, 2, 4}) {
    if (n % tp != 0) continue;
    ProcessGroups g = make_process_groups(w, tp);
    std::vector<int> tp_members, dp_members;
    for (int t = 0; t < tp; ++t) tp_members.push_back(g.dp_rank * tp + t);
    for (int d = 0; d < n / tp; ++d) dp_members.push_back(d * tp + g.tp_rank);
    fn(GroupCase{g.tp.get(), tp_members, "tp (tp=" + std::to_string(tp) + ")"});
    fn(GroupCase{g.dp.get(), dp_members, "dp (tp=" + std::to_string(tp) + ")"});
  }
}

const int64_t kCounts[] = {0, 1, 3, 7, 1000, 65537, 300001};

template <typename T>
void check_all_reduce(const GroupCase& g, ReduceOp op) {
  for (int64_t count : kCounts) {
    std::vector<T> data = contributions<T>(world().rank(), count);
    g.comm->all_reduce(data.data(), count, op);
    const std::vector<T> want = expected_reduce<T>(g.members, count, op);
    EXPECT_TRUE(bitwise_equal(data, want))
        << g.label << " " << reduce_op_name(op) << " " << typeid(T).name() << " count " << count
        << ": first difference at element " << first_difference(data, want) << " got "
        << (count ? data[std::max<int64_t>(0, first_difference(data, want))] : T{}) << " want "
        << (count ? want[std::max<int64_t>(0, first_difference(data, want))] : T{});
  }
}

TEST(Collectives, AllReduceSumAndAverageMatchRankOrderedSumBitwise) {
  for_each_group([](const GroupCase& g) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
      check_all_reduce<float>(g, op);
      check_all_reduce<double>(g, op);
    }
    check_all_reduce<int64_t>(g, ReduceOp::kSum);
  });
}

// Puts back the world's algorithm settings when a test ends, even on a failed ASSERT.
struct RestoreAlgorithm {
  ~RestoreAlgorithm() {
    world().set_algorithm(MpiOptions{}.algorithm);
    world().set_replicated_max_bytes(MpiOptions{}.replicated_max_bytes);
    world().set_segment_bytes(MpiOptions{}.segment_bytes);
  }
};

TEST(Collectives, SmallBufferBlockAndSegmentChoicesGiveTheSameBits) {
  RestoreAlgorithm restore;
  MpiCommunicator& w = world();
  std::vector<int> all(w.size());
  for (int r = 0; r < w.size(); ++r) all[r] = r;
  // Always blocks, always replicated; segments of 12 bytes (3 floats: a partial last one),
  // 4 KiB, and the default.
  for (size_t threshold : {size_t{0}, size_t{1} << 30}) {
    for (size_t segment : {size_t{12}, size_t{4} << 10, MpiOptions{}.segment_bytes}) {
      w.set_replicated_max_bytes(threshold);
      w.set_segment_bytes(segment);
      for (int64_t count : {int64_t{1}, int64_t{5}, int64_t{5000}, int64_t{100003}}) {
        if (segment < 1024 && count > 5000) continue;  // tens of thousands of messages
        std::vector<float> data = contributions<float>(w.rank(), count);
        w.all_reduce(data.data(), count, ReduceOp::kAverage);
        EXPECT_TRUE(bitwise_equal(data, expected_reduce<float>(all, count, ReduceOp::kAverage)))
            << "threshold " << threshold << " segment " << segment << " count " << count;
        const int64_t per_rank = count;
        std::vector<double> send(per_rank * w.size()), got(per_rank);
        for (int64_t i = 0; i < per_rank * w.size(); ++i)
          send[i] = contribution<double>(w.rank(), i);
        w.reduce_scatter(send.data(), got.data(), per_rank, ReduceOp::kSum);
        const std::vector<double> want =
            expected_reduce<double>(all, per_rank * w.size(), ReduceOp::kSum);
        EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin() + per_rank * w.rank()))
            << "reduce_scatter: threshold " << threshold << " segment " << segment << " count "
            << count;
      }
    }
  }
}

TEST(Collectives, MpiAlgorithmAgreesWithinRounding) {
  RestoreAlgorithm restore;
  MpiCommunicator& w = world();
  w.set_algorithm(AllReduceAlgorithm::kMpi);
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
    for (int64_t count : kCounts) {
      std::vector<double> data = contributions<double>(w.rank(), count);
      std::vector<float> fdata = contributions<float>(w.rank(), count);
      w.all_reduce(data.data(), count, op);
      w.all_reduce(fdata.data(), count, op);
      std::vector<int> all(w.size());
      for (int r = 0; r < w.size(); ++r) all[r] = r;
      const std::vector<double> want = expected_reduce<double>(all, count, op);
      const std::vector<float> fwant = expected_reduce<float>(all, count, op);
      for (int64_t i = 0; i < count; ++i) {
        // Another order of the same additions: off by at most n roundings of the terms' size.
        double terms = 0;
        for (int r : all) terms += std::abs(contribution<double>(r, i));
        const double ulps = 2.0 * w.size() * terms;
        ASSERT_NEAR(data[i], want[i], ulps * 0x1p-52) << "element " << i;
        ASSERT_NEAR(fdata[i], fwant[i], ulps * 0x1p-23) << "element " << i;
      }
    }
  }
}

TEST(Collectives, BroadcastFromEveryRoot) {
  for_each_group([](const GroupCase& g) {
    for (int root = 0; root < g.comm->size(); ++root) {
      std::vector<double> d = contributions<double>(world().rank(), 1001);
      std::vector<int64_t> k = contributions<int64_t>(world().rank(), 5);
      g.comm->broadcast(d.data(), 1001, root);
      g.comm->broadcast(k.data(), 5, root);
      EXPECT_TRUE(bitwise_equal(d, contributions<double>(g.members[root], 1001)))
          << g.label << " root " << root;
      EXPECT_EQ(k, contributions<int64_t>(g.members[root], 5)) << g.label << " root " << root;
    }
  });
}

TEST(Collectives, AllGatherConcatenatesInGroupRankOrder) {
  for_each_group([](const GroupCase& g) {
    const int n = g.comm->size();
    for (int64_t count : {int64_t{1}, int64_t{333}}) {
      std::vector<float> send = contributions<float>(world().rank(), count);
      std::vector<float> recv(count * n, -1.f);
      g.comm->all_gather(send.data(), recv.data(), count);
      for (int r = 0; r < n; ++r) {
        const std::vector<float> want = contributions<float>(g.members[r], count);
        EXPECT_EQ(std::memcmp(recv.data() + r * count, want.data(), count * sizeof(float)), 0)
            << g.label << " block " << r;
      }
      // In place: this rank's block already sits in recv.
      std::vector<float> inplace(count * n, -1.f);
      std::copy(send.begin(), send.end(), inplace.begin() + g.comm->rank() * count);
      g.comm->all_gather(inplace.data() + g.comm->rank() * count, inplace.data(), count);
      EXPECT_EQ(inplace, recv) << g.label << " in place";
    }
    std::vector<int64_t> ranks(n);
    const int64_t me = world().rank();
    g.comm->all_gather(&me, ranks.data(), 1);
    EXPECT_EQ(ranks, std::vector<int64_t>(g.members.begin(), g.members.end())) << g.label;
  });
}

TEST(Collectives, ReduceScatterEqualsTheSliceOfAllReduceBitwise) {
  for_each_group([](const GroupCase& g) {
    const int n = g.comm->size();
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
      for (int64_t per_rank : {int64_t{1}, int64_t{17}, int64_t{40000}}) {
        const std::vector<float> send = contributions<float>(world().rank(), per_rank * n);
        std::vector<float> recv(per_rank, -1.f);
        g.comm->reduce_scatter(send.data(), recv.data(), per_rank, op);
        const std::vector<float> all = expected_reduce<float>(g.members, per_rank * n, op);
        const std::vector<float> want(all.begin() + g.comm->rank() * per_rank,
                                      all.begin() + (g.comm->rank() + 1) * per_rank);
        EXPECT_TRUE(bitwise_equal(recv, want))
            << g.label << " " << reduce_op_name(op) << " per rank " << per_rank;
      }
    }
  });
}

// Ranks spin while they wait when each has a core, and yield when the node is oversubscribed
// (np 4 on the 2-core CI machine), where spinning would starve the rank being waited for.
TEST(Collectives, IdleWaitFollowsRanksPerCore) {
  MpiCommunicator& w = world();
  MPI_Comm node;
  MPI_Comm_split_type(w.mpi_comm(), MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int local = 0;
  MPI_Comm_size(node, &local);
  MPI_Comm_free(&node);
  EXPECT_EQ(w.idle_wait(),
            local > sysconf(_SC_NPROCESSORS_ONLN) ? IdleWait::kYield : IdleWait::kSpin)
      << local << " ranks on this node";
}

TEST(Collectives, BarrierAndBadCallsAreRejectedOnEveryRank) {
  Communicator& w = world();
  w.barrier();
  std::vector<int64_t> k(4, 1);
  EXPECT_THROW(w.all_reduce(k.data(), 4, ReduceOp::kAverage), Error);
  std::vector<float> x(4);
  EXPECT_THROW(w.all_reduce(x.data(), 4, ReduceOp::kSum, Place{Device::kCuda, nullptr}), Error);
  EXPECT_THROW(w.broadcast(x.data(), 4, w.size()), Error);
  w.barrier();
  EXPECT_FALSE(any_rank(w, false));
  EXPECT_TRUE(any_rank(w, w.rank() == w.size() - 1));
}

TEST(ProcessGroups, LayoutIsTpInnermostAsInSpec5) {
  Communicator& w = world();
  const int n = w.size();
  for (int tp : {1, 2, 4}) {
    if (n % tp != 0) continue;
    ProcessGroups g = make_process_groups(w, tp);
    EXPECT_EQ(g.world, &w);
    EXPECT_EQ(g.tp_size, tp);
    EXPECT_EQ(g.dp_size, n / tp);
    EXPECT_EQ(g.tp_rank, w.rank() % tp);
    EXPECT_EQ(g.dp_rank, w.rank() / tp);
    EXPECT_EQ(g.tp->name(), "tp");
    EXPECT_EQ(g.dp->name(), "dp");
    EXPECT_EQ(g.tp->size(), tp);
    EXPECT_EQ(g.dp->size(), n / tp);
    EXPECT_EQ(g.tp->rank(), g.tp_rank);
    EXPECT_EQ(g.dp->rank(), g.dp_rank);
    EXPECT_EQ(g.tp->world_rank(), w.rank());
    // Membership, by all-gathering the world ranks over each group.
    const int64_t me = w.rank();
    std::vector<int64_t> tp_ranks(tp), dp_ranks(n / tp);
    g.tp->all_gather(&me, tp_ranks.data(), 1);
    g.dp->all_gather(&me, dp_ranks.data(), 1);
    for (int t = 0; t < tp; ++t)
      EXPECT_EQ(tp_ranks[t], g.dp_rank * tp + t) << "tp=" << tp << " tp member " << t;
    for (int d = 0; d < n / tp; ++d)
      EXPECT_EQ(dp_ranks[d], d * tp + g.tp_rank) << "tp=" << tp << " dp member " << d;
    // Ranks 0..TP-1 are TP group 0.
    if (w.rank() < tp) {
      EXPECT_EQ(g.dp_rank, 0);
    }
  }
}

TEST(ProcessGroups, WorldNotDivisibleByTpIsOneClearError) {
  Communicator& w = world();
  const int n = w.size();
  const int tp = n + 1;  // never divides n
  try {
    make_process_groups(w, tp);
    ADD_FAILURE() << "no error for tp " << tp;
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "world size " + std::to_string(n) +
                                         " is not divisible by parallel.tp " + std::to_string(tp));
  }
  EXPECT_THROW(make_process_groups(w, 0), Error);
  // Nothing was left half-done: the world still works.
  EXPECT_FALSE(any_rank(w, false));
}

TEST(AsyncAllReduce, OverlapsOtherWorkAndEqualsBlockingBitwise) {
  for_each_group([](const GroupCase& g) {
    const int64_t count = int64_t{4} << 20;  // 16 MB of floats
    std::vector<float> async = contributions<float>(world().rank(), count);
    std::vector<float> blocking = async;

    const auto t0 = std::chrono::steady_clock::now();
    std::unique_ptr<Work> work = g.comm->all_reduce_async(async.data(), count, ReduceOp::kAverage);
    const double issue_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // Other work while the all-reduce is in flight, testing it now and then.
    int incomplete_tests = 0;
    double acc = 0;
    for (int step = 0; step < 64; ++step) {
      for (int i = 0; i < 20000; ++i) acc += std::sqrt(static_cast<double>(i + step));
      if (!work->test()) ++incomplete_tests;
    }
    work->wait();
    EXPECT_TRUE(work->test());
    EXPECT_GT(acc, 0);
    if (g.comm->size() > 1) {
      // Issuing returned before the data could have moved: the first tests saw it in flight.
      EXPECT_GT(incomplete_tests, 0) << g.label;
      EXPECT_LT(issue_s, 0.5) << g.label;
    }
    g.comm->all_reduce(blocking.data(), count, ReduceOp::kAverage);
    EXPECT_TRUE(bitwise_equal(async, blocking))
        << g.label << ": first difference at " << first_difference(async, blocking);
  });
}

TEST(AsyncAllReduce, SeveralInFlightCompleteInAnyOrderAndWorkIsRecycled) {
  Communicator& w = world();
  std::vector<int> all(w.size());
  for (int r = 0; r < w.size(); ++r) all[r] = r;
  const int64_t sizes[] = {100000, 7, 250001, 0, 4096};
  std::vector<std::vector<double>> bufs;
  std::vector<std::unique_ptr<Work>> works;
  for (int64_t s : sizes) bufs.push_back(contributions<double>(w.rank(), s));
  for (int round = 0; round < 3; ++round) {
    for (size_t k = 0; k < bufs.size(); ++k) {
      bufs[k] = contributions<double>(w.rank(), sizes[k]);
      std::unique_ptr<Work> recycled = works.size() > k ? std::move(works[k]) : nullptr;
      Work* before = recycled.get();
      std::unique_ptr<Work> fresh =
          w.all_reduce_async(bufs[k].data(), sizes[k], ReduceOp::kSum, std::move(recycled));
      if (before) {
        EXPECT_EQ(fresh.get(), before) << "a finished Work is re-armed, not replaced";
      }
      if (works.size() > k)
        works[k] = std::move(fresh);
      else
        works.push_back(std::move(fresh));
    }
    // Wait in reverse issue order, with a blocking all-reduce interleaved.
    std::vector<float> extra = contributions<float>(w.rank(), 999);
    w.all_reduce(extra.data(), 999, ReduceOp::kSum);
    EXPECT_TRUE(bitwise_equal(extra, expected_reduce<float>(all, 999, ReduceOp::kSum)));
    for (size_t k = bufs.size(); k-- > 0;) {
      works[k]->wait();
      EXPECT_TRUE(bitwise_equal(bufs[k], expected_reduce<double>(all, sizes[k], ReduceOp::kSum)))
          << "round " << round << " buffer " << k;
    }
  }
}

}  // namespace
}  // namespace primal
