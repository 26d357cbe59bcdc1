// Loading, overriding and validating a run's config (configs/primal.proto, text format).
// Every problem becomes one primal::Error that names where the value came from
// (file:line, or the --set flag) and the field path, before anything is written.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "configs/primal.pb.h"
#include "core/element_math.h"
#include "model/config.h"

namespace primal {

// Whether this binary has the CUDA backend (built with PRIMAL_CUDA=ON): train.device CUDA
// needs it.
bool built_with_cuda();
// Whether it has the NCCL backend too (comm/nccl was built): train.device CUDA on more than
// one process (data parallelism across GPUs) needs it.
bool built_with_nccl();

// Input positions per sample of the data a config names (without a CLS slot): data.seq_len
// for TEXT, LISTOPS and KJV_TESTAMENT (seq_len_sets_positions), 1024 pixels for PATHFINDER,
// for FASHION_MNIST 784 pixels (model.input TOKENS) or (28 / patch_size)^2 patches.
bool seq_len_sets_positions(const config::Data& data);
int positions_per_sample(const config::Config& config);

class LoadedConfig {
 public:
  // Parses path, then applies overrides ("optimizer.lr=3e-4"; repeated fields take a comma
  // list), then validates. Throws primal::Error. With require_data false, data.path need not
  // exist (a command that reads no data: primal import).
  static LoadedConfig load(const std::string& path, const std::vector<std::string>& overrides,
                           bool require_data = true);
  // The same from text that `origin` names in messages (a checkpoint's manifest). With
  // require_data false, data.path need not exist (the data of a run elsewhere).
  static LoadedConfig parse(const std::string& text, const std::string& origin,
                            const std::vector<std::string>& overrides, bool require_data = true);

  const config::Config& proto() const { return proto_; }
  const std::string& path() const { return path_; }
  // "FILE:LINE: path" for a field set in the file, "--set path" for an override, and
  // "FILE: path (default)" otherwise.
  std::string where(const std::string& field_path) const;
  // The model's shape and options, from model { ... } and the train seed.
  ModelConfig model() const;
  // optimizer.{beta1, beta2, eps, weight_decay}: AdamW's hyper-parameters, for the host
  // optimizer and the device model alike.
  em::AdamWOptions adamw() const;
  // Checks parallel.tp against a job of world_size processes: it must divide the world, the
  // heads and the MLP width, and DP = world / tp must divide the micro-batch. With
  // train.device CUDA: the binary has the CUDA backend, and the job is one process, tp 1.
  void validate_layout(int world_size) const;

 private:
  LoadedConfig() = default;
  void apply_override(const std::string& assignment);
  void validate(bool require_data = true) const;

  config::Config proto_;
  std::string path_;
  struct Locations;
  std::shared_ptr<Locations> locations_;
  std::vector<std::string> overridden_;
};

}  // namespace primal
