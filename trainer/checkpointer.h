// Checkpoints of a training run on one process or as a (TP x DP) job: who writes what, the
// few collectives that keep every rank in step, background writes, and resuming with fallback.
//
// Writers: every rank. Data-parallel replicas hold the same parameters and moments bit for
// bit, so DP rank d of TP rank t writes part d of TP rank t's shard (trainer/checkpoint.h):
// each replica writes 1/DP of the bytes, and a save takes about 1/DP of one writer's time
// where the file system scales. World rank 0 makes the temporary directory and commits
// (manifest, rename, latest).
// Every error of a save or a load is shared, so all ranks throw the same CheckpointError and
// the job ends with one message instead of hanging.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "comm/process_groups.h"
#include "configs/config.h"
#include "trainer/adamw.h"
#include "trainer/checkpoint.h"

namespace primal {

// A save that failed (a full disk, a read-only or failing file system; the message names the
// file), thrown on every rank at the same point: the job can end in order, with one message
// and no abort. The checkpoint that `latest` named is untouched.
class CheckpointSaveError : public CheckpointError {
 public:
  using CheckpointError::CheckpointError;
};

class Checkpointer {
 public:
  // groups null: one process. params and optimizer must outlive the Checkpointer.
  Checkpointer(const LoadedConfig& config, ProcessGroups* groups, ParameterStore<float>& params,
               AdamW<float>& optimizer);
  // Joins a background writer; its checkpoint is not committed (`latest` stays the previous).
  ~Checkpointer();

  // checkpoint.dir, or <logging.dir>/checkpoints.
  const std::string& root() const { return root_; }

  struct Resumed {
    bool found = false;
    int64_t step = 0;
    std::string dir;
  };
  // Collective. what == "auto": the newest valid checkpoint of root(); a bad one (the warning
  // names the file) is passed over for the next older one; none at all: found == false. Any
  // other what: exactly that checkpoint (a step directory, or a root through its `latest`).
  // Restores the parameters, the AdamW moments and step count. Throws CheckpointError, the
  // same on every rank.
  Resumed resume(const std::string& what);

  // Collective: saves the state after `step` optimizer steps (lr: the last step's rate). In
  // the background with checkpoint.async_save (a pending save is committed first).
  void save(int64_t step, double lr);
  // Collective: waits for a background save's writers and commits it.
  void wait();
  // Collective, once per step: whether any rank asked to stop (stop_here), in one small
  // all-reduce that also tells whether every background writer is done; commits the pending
  // save then.
  bool agree(bool stop_here);
  // The step of the last checkpoint committed to or loaded from root() (-1: none).
  int64_t last_step() const { return last_step_; }

 private:
  struct Pending;
  int world_rank() const;
  // Collective: text as world rank `from` has it.
  std::string broadcast(const std::string& text, int from);
  // Collective: the message of the lowest rank whose `mine` is non-empty ("" when none).
  std::string first_error(const std::string& mine);
  void finish();  // collective: gathers the shards' CRCs, world rank 0 commits
  // Every rank, with the same error: world rank 0 abandons the save's temporary files, then
  // every rank throws CheckpointSaveError.
  [[noreturn]] void save_failed(int64_t step, const std::string& tmp, const std::string& error);

  const LoadedConfig& config_;
  ProcessGroups* groups_;
  ParameterStore<float>& params_;
  AdamW<float>& optimizer_;
  std::string root_;
  int tp_size_ = 1, dp_size_ = 1, dp_rank_ = 0;
  int64_t last_step_ = -1;
  std::unique_ptr<Pending> pending_;
};

}  // namespace primal
