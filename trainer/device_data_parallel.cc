// device_data_parallel.h on NCCL (comm/nccl): built where PRIMAL_CUDA found NCCL. The wiring
// is tests/gpu/nccl_buckets_test.cc's DataParallel, checked there against one process.
#include "trainer/device_data_parallel.h"

#include <span>
#include <string>
#include <vector>

#include "comm/mpi/mpi_communicator.h"
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

template <typename T>
class NcclDataParallel final : public DeviceDataParallel {
 public:
  NcclDataParallel(const LoadedConfig& config, ProcessGroups& groups,
                   cuda::DeviceTransformer<T>& model)
      : model_(model), nccl_(mpi_of(config, *groups.dp), "dp"), ksvd_(nccl_, model.stream()) {
    const config::Parallel& parallel = config.proto().parallel();
    nccl_.set_timeout_s(parallel.watchdog_s());
    ReadyOrder order = model.ready_order();
    ready_of_layer_ = std::move(order.of_layer);
    buckets_ = std::make_unique<DeviceGradientBuckets>(
        nccl_, model.params().grads(), model.params().numel(), std::move(order.ranges),
        model.stream(), size_t(parallel.bucket_mb() * (1 << 20)), ReduceOp::kAverage);
    buckets_->set_record_events(false);
    const int n = nccl_.size();
    if (parallel.ksvd_sync() == config::Parallel::GLOBAL) {
      // SPEC §3.4 over the global batch: on the compute stream, in forward, so before the
      // step's buckets on every rank (device_gradient_buckets.h's ordering rule).
      model.reduce_ksvd = [this, n](std::span<double> sums) {
        ksvd_.all_reduce(sums, ReduceOp::kSum);
        divide_shared_ksvd_sums(sums, n, 1);
      };
      model.ksvd_data_grad_scale = n;
    }
    model.on_grads_final = [this](int layer) {
      if (!last_) return;
      for (int i : ready_of_layer_[layer + 1]) buckets_->mark_ready(i);
    };
    model.wait_host = [this](const char* what) {
      wait_event_.record(model_.stream());
      nccl_.wait_event(wait_event_, what);
    };
  }

  ~NcclDataParallel() override {
    model_.reduce_ksvd = nullptr;
    model_.on_grads_final = nullptr;
    model_.wait_host = nullptr;
    model_.ksvd_data_grad_scale = 1;
  }

  void before_backward(bool last) override {
    last_ = last;
    if (last) buckets_->begin_backward();
  }

  void after_backward() override {
    if (last_) buckets_->wait_all();
    last_ = false;
  }

  std::string describe() const override {
    return "data parallel over " + std::to_string(nccl_.size()) + " GPUs (NCCL, " +
           std::to_string(buckets_->num_buckets()) + " gradient buckets)";
  }

 private:
  cuda::DeviceTransformer<T>& model_;
  NcclCommunicator nccl_;
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

std::unique_ptr<DeviceDataParallel> make_device_data_parallel(
    const LoadedConfig& config, ProcessGroups& groups, cuda::DeviceTransformer<float>& model) {
  return std::make_unique<NcclDataParallel<float>>(config, groups, model);
}

std::unique_ptr<DeviceDataParallel> make_device_data_parallel(
    const LoadedConfig& config, ProcessGroups& groups, cuda::DeviceTransformer<cuda::bf16>& model) {
  return std::make_unique<NcclDataParallel<cuda::bf16>>(config, groups, model);
}

}  // namespace primal
