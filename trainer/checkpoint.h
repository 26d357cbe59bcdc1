// Sharded checkpoints on disk (SPEC §6; the format and its guarantees: docs/checkpoints.md).
//
//   <root>/step_<NNNNNNNN>/manifest.pb          checkpoint.Manifest (trainer/checkpoint.proto)
//   <root>/step_<NNNNNNNN>/shard_<t>_of_<TP>.bin one per tensor-parallel rank t: a 64-byte
//                                               header, then records of float32 (values, then
//                                               AdamW exp_avg, then exp_avg_sq)
//   ... shard_<t>_of_<TP>.part_<d>_of_<DP>.bin  with DP > 1: TP rank t's parameters cut into
//                                               DP runs of about equal size, part d (the
//                                               header, then its parameters' records) written
//                                               by DP rank d; part 0 keeps the name above
//   <root>/latest                               "step_<NNNNNNNN>\n", replaced last
//
// A save is a sequence of phases, so that a job of many ranks can split it between them and a
// process killed between any two leaves the previous checkpoint loadable:
//   begin_checkpoint   (one rank)  a fresh <root>/.step_N.tmp/
//   write_shard        (every rank) its part of its TP rank's shard, fsynced
//   commit_checkpoint  (one rank)  manifest.pb, fsync, rename to step_N, `latest`, prune
// Loading reads only the records that overlap the slices the loading rank holds, checks each
// record's CRC-32C, and assembles any slice: a checkpoint saved under one (TP, DP) layout
// loads under another. Nothing here talks to other ranks (trainer/checkpointer.h does).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "configs/config.h"
#include "core/error.h"
#include "model/parameters.h"
#include "trainer/checkpoint.pb.h"

namespace primal {

inline constexpr uint32_t kCheckpointFormatVersion = 1;

// A missing, damaged, incomplete or incompatible checkpoint; the message names the file.
class CheckpointError : public Error {
 public:
  using Error::Error;
};

// "step_00000020": the directory of the checkpoint after `step` optimizer steps.
std::string checkpoint_step_name(int64_t step);
// The step of a directory named "step_<digits>" (exactly), or -1.
int64_t checkpoint_step_of(const std::string& name);
// "shard_1_of_2.bin": the file of tensor-parallel rank tp_rank, or of its part 0 when its
// shard is written in parts; part 2 of 4: "shard_1_of_2.part_2_of_4.bin".
std::string shard_file_name(int tp_rank, int tp_size, int part = 0, int parts = 1);

// ---- Saving

// One rank's buffers, parallel to its ParameterStore::values(): the live ones, or a snapshot
// of them taken for a background write. exp_avg / exp_avg_sq null: zeros (a fresh optimizer).
struct ShardSource {
  const float* values = nullptr;
  const float* exp_avg = nullptr;
  const float* exp_avg_sq = nullptr;
};

// What write_shard wrote: the file's size and CRC and every record's CRC, in file order.
struct WrittenShard {
  int64_t bytes = 0;
  uint32_t crc32c = 0;
  std::vector<uint32_t> record_crcs;
};

// Phase 1: makes an empty <root>/.step_<N>.tmp (and root), removing temporary directories
// that killed saves left behind (never a complete checkpoint). Returns its path.
std::string begin_checkpoint(const std::string& root, int64_t step);

// Phase 2: writes part `part` of `parts` of tensor-parallel rank params.tp().rank's shard
// into tmp_dir, fsynced (parts = 1: the whole shard; with data parallelism DP rank d writes
// part d). Replicated parameters are written by TP rank 0 only: they are equal on every rank.
// source needs only the part's records (a background save copies no more).
WrittenShard write_shard(const std::string& tmp_dir, const ParameterStore<float>& params,
                         const ShardSource& source, int64_t step, int part = 0, int parts = 1);

// The elements of params' buffers (values, and the same ranges of each moment) that part
// `part` of `parts` of this rank's shard holds: [begin, end) pairs, in order.
std::vector<std::pair<int64_t, int64_t>> shard_part_ranges(const ParameterStore<float>& params,
                                                           int part, int parts);

// The manifest of a checkpoint whose ranks wrote shards[t * parts + d] (TP rank t, part d;
// parts = 1: one file per TP rank). The manifest names the DP rank that wrote each file.
// params: any rank's store (names, full shapes and shardings are the same on every rank).
checkpoint::Manifest build_manifest(const ParameterStore<float>& params,
                                    const std::vector<WrittenShard>& shards, int dp_size,
                                    const checkpoint::TrainingState& state,
                                    const std::string& config_text, int parts = 1);

// Phase 3: writes manifest.pb into tmp_dir, fsyncs, renames tmp_dir to <root>/step_<N>,
// replaces <root>/latest, and deletes all but the `keep` newest checkpoints of steps <= N
// (keep <= 0 deletes nothing). An existing step_<N> (say, the damaged checkpoint a resume
// fell back from) is renamed to step_<N>.replaced-<k>, never deleted. Prints warnings on
// stderr.
void commit_checkpoint(const std::string& root, const std::string& tmp_dir,
                       const checkpoint::Manifest& manifest, int keep);

// After a save failed in any phase: removes tmp_dir and a partial replacement of `latest`, so
// that a full disk gets back the space they took. Best effort: on a read-only or failed file
// system they stay until the next begin_checkpoint (tmp_dir) or commit (`latest`'s).
void abandon_checkpoint(const std::string& root, const std::string& tmp_dir);

// ---- Loading

// A root whose `latest` names a step directory: that one; any other directory: itself (a step
// directory; read_manifest names a missing manifest.pb). Throws CheckpointError otherwise.
std::string resolve_checkpoint(const std::string& path);
// The checkpoints of root to try, newest first: the one `latest` names, then every older
// step_<N>. Empty when root holds none.
std::vector<std::string> checkpoint_candidates(const std::string& root);

// Reads <step_dir>/manifest.pb; checks the format version first, then the structure.
checkpoint::Manifest read_manifest(const std::string& step_dir);

// Fills this rank's shards (params.tp()) of every parameter, and with exp_avg non-null the
// AdamW moments (buffers parallel to params.values()), from the records of step_dir that
// overlap them, checking each record's CRC. The manifest's tensors must be exactly the
// model's, with the same full shapes. All or nothing: on any error nothing is written.
void load_shards(const std::string& step_dir, const checkpoint::Manifest& manifest,
                 ParameterStore<float>& params, float* exp_avg = nullptr,
                 float* exp_avg_sq = nullptr);

// Checks the size and whole-file CRC of every shard file (reads them all).
void verify_shard_files(const std::string& step_dir, const checkpoint::Manifest& manifest);

// ---- For the CLI and single-process users (evaluation, generation, export, import)

// The weights of a checkpoint (dir as for resolve_checkpoint) into a store of any layout,
// usually a single-process Transformer<float>'s params(). Throws CheckpointError.
void load_checkpoint_weights(const std::string& dir, ParameterStore<float>& store);

// The config a checkpoint was trained with, with overrides applied. require_data: false
// skips the check that data.path exists (generating on another machine).
LoadedConfig load_checkpoint_config(const std::string& dir,
                                    const std::vector<std::string>& overrides,
                                    bool require_data = true);

// Writes the checkpoint's parameters (full tensors, SPEC §4 names, F32) to a .safetensors
// file. Returns the step.
int64_t export_checkpoint(const std::string& dir, const std::string& out_path);

// Makes a step-0 checkpoint in out_root (which must hold none) from a .safetensors file with
// every parameter of config's model: zero AdamW moments, step 0.
void import_checkpoint(const std::string& safetensors_path, const LoadedConfig& config,
                       const std::string& out_root);

// Test hook. PRIMAL_CHECKPOINT_FAULT=PHASE[:STEP[:RANK]] kills this process with SIGKILL at
// that phase of the save of STEP (any step when absent) on world rank RANK (default 0):
//   1 the temporary directory exists    2 half of the shard file is written, not synced
//   3 every shard is written and synced  4 manifest.pb is written
//   5 renamed to step_N, `latest` is old 6 `latest` is updated, nothing pruned yet
void checkpoint_fault_point(int phase, int64_t step);

}  // namespace primal
