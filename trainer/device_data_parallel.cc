// device_data_parallel.h on the device communicators (comm/nccl): built where PRIMAL_CUDA found
// NCCL. The data-parallel wiring is tests/gpu/nccl_buckets_test.cc's DataParallel, checked
// there against one process.
#include "trainer/device_data_parallel.h"

#include <span>
#include <string>
#include <vector>

#include "comm/mpi/mpi_communicator.h"
#include "comm/nccl/device_communicator.h"
#include "comm/nccl/device_gradient_buckets.h"
#include "comm/nccl/nccl_communicator.h"
#include "comm/nccl/staged_all_reduce.h"
#include "core/error.h"

namespace primal {
namespace {

// The MPI communicator under one of the trainer's groups: NCCL's is built from it.
MpiCommunicator& mpi_of(const LoadedConfig& config, Communicator& group) {
  auto* mpi = dynamic_cast<MpiCommunicator*>(&group);
  if (!mpi) {
    throw Error(config.where("train.device"),
                "CUDA on more than one process runs under MPI (mpirun); the " + group.name() +
                    " group of this job is not an MPI communicator");
  }
  return *mpi;
}

// The device communicator of one of the trainer's groups, with the watchdog's timeout.
std::unique_ptr<DeviceCommunicator> device_communicator(const LoadedConfig& config,
                                                        Communicator& group) {
  const config::Parallel& parallel = config.proto().parallel();
  std::unique_ptr<DeviceCommunicator> comm = make_device_communicator(
      mpi_of(config, group), group.name(),
      parallel.device_transport() == config::Parallel::STAGED_MPI ? DeviceTransport::kStagedMpi
                                                                  : DeviceTransport::kNccl);
  comm->set_timeout_s(parallel.watchdog_s());
  return comm;
}

// The device model's tensor-parallel group: each sum enqueued on the model's stream (an async
// all-reduce whose Work is recycled: stream order is all the model needs, and the model's
// host waits, watched through wait(), catch a peer that never comes).
class DeviceTensorParallel final : public cuda::DeviceTensorParallelGroup {
 public:
  DeviceTensorParallel(const LoadedConfig& config, ProcessGroups& groups)
      : comm_(device_communicator(config, *groups.tp)) {}
  int rank() const override { return comm_->rank(); }
  int size() const override { return comm_->size(); }
  void all_reduce_sum(float* data, int64_t count, cudaStream_t stream) override {
    enqueue(data, count, stream);
  }
  void all_reduce_sum(double* data, int64_t count, cudaStream_t stream) override {
    enqueue(data, count, stream);
  }
  void wait(cudaStream_t stream, const char* what) override {
    event_.record(stream);
    comm_->wait_event(event_, what);
  }

 private:
  template <CommScalar T>
  void enqueue(T* data, int64_t count, cudaStream_t stream) {
    work_ = comm_->all_reduce_async(data, count, ReduceOp::kSum, std::move(work_),
                                    Place{Device::kCuda, stream});
  }

  std::unique_ptr<DeviceCommunicator> comm_;
  std::unique_ptr<Work> work_;
  cuda::Event event_;  // the model's watched host waits
};

template <typename T>
class BucketedDataParallel final : public DeviceDataParallel {
 public:
  BucketedDataParallel(const LoadedConfig& config, ProcessGroups& groups,
                       cuda::DeviceTransformer<T>& model)
      : model_(model),
        comm_(device_communicator(config, *groups.dp)),
        transport_(
            config::Parallel::DeviceTransport_Name(config.proto().parallel().device_transport())),
        ksvd_(*comm_, model.stream()) {
    const config::Parallel& parallel = config.proto().parallel();
    const ReadyOrder& order = model.ready_order();
    ready_of_layer_ = order.of_layer;
    buckets_ = std::make_unique<DeviceGradientBuckets>(
        *comm_, model.params().grads(), model.params().numel(), order.ranges, model.stream(),
        size_t(parallel.bucket_mb() * (1 << 20)), ReduceOp::kAverage);
    buckets_->set_record_events(false);
    const int n = comm_->size();
    if (parallel.ksvd_sync() == config::Parallel::GLOBAL) {
      // SPEC §3.4 over the global batch: on the compute stream, in forward, so before the
      // step's buckets on every rank (device_gradient_buckets.h's ordering rule).
      model.reduce_ksvd = [this, n](std::span<double> sums) {
        ksvd_.all_reduce(sums, ReduceOp::kSum);
        divide_shared_ksvd_sums(sums, n, 1);
      };
      model.ksvd_data_grad_scale = n;
    }
    model.wait_host = [this](const char* what) {
      wait_event_.record(model_.stream());
      comm_->wait_event(wait_event_, what);
    };
  }

  ~BucketedDataParallel() override {
    model_.reduce_ksvd = nullptr;
    model_.wait_host = nullptr;
    model_.ksvd_data_grad_scale = 1;
  }

  void before_backward(bool last) override {
    last_ = last;
    if (last) buckets_->begin_backward();
  }

  void grads_final(int layer) override {
    for (int i : ready_of_layer_[layer + 1]) buckets_->mark_ready(i);
  }

  void after_backward() override {
    if (last_) buckets_->wait_all();
    last_ = false;
  }

  std::string describe() const override {
    return "data parallel over " + std::to_string(comm_->size()) + " ranks (" + transport_ + ", " +
           std::to_string(buckets_->num_buckets()) + " gradient buckets)";
  }

 private:
  cuda::DeviceTransformer<T>& model_;
  std::unique_ptr<DeviceCommunicator> comm_;
  std::string transport_;  // "NCCL" or "STAGED_MPI"
  StagedAllReduce ksvd_;
  std::unique_ptr<DeviceGradientBuckets> buckets_;
  std::vector<std::vector<int>> ready_of_layer_;
  cuda::Event wait_event_;  // the model's watched host waits
  bool last_ = false;       // the backward under way is the step's last micro-batch's
};

}  // namespace

int select_data_parallel_device(const LoadedConfig& config, ProcessGroups& groups) {
  return select_local_device(mpi_of(config, *groups.world));
}

std::unique_ptr<cuda::DeviceTensorParallelGroup> make_device_tensor_parallel(
    const LoadedConfig& config, ProcessGroups& groups) {
  return std::make_unique<DeviceTensorParallel>(config, groups);
}

std::unique_ptr<DeviceDataParallel> make_device_data_parallel(
    const LoadedConfig& config, ProcessGroups& groups, cuda::DeviceTransformer<float>& model) {
  return std::make_unique<BucketedDataParallel<float>>(config, groups, model);
}

std::unique_ptr<DeviceDataParallel> make_device_data_parallel(
    const LoadedConfig& config, ProcessGroups& groups, cuda::DeviceTransformer<cuda::bf16>& model) {
  return std::make_unique<BucketedDataParallel<cuda::bf16>>(config, groups, model);
}

}  // namespace primal
