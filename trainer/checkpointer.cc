#include "trainer/checkpointer.h"

#include <google/protobuf/text_format.h>

#include <cstdio>
#include <filesystem>

namespace primal {
namespace {

namespace fs = std::filesystem;

// Fields of the run's config that differ from the checkpoint's ("optimizer.lr: 0.001 ->
// 0.0003"), outside parallel, checkpoint and logging (which may change on a resume).
std::vector<std::string> config_differences(const config::Config& saved,
                                            const config::Config& now) {
  namespace pb = google::protobuf;
  std::vector<std::string> out;
  const pb::Descriptor* d = config::Config::descriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* section = d->field(i);
    if (section->name() == "parallel" || section->name() == "checkpoint" ||
        section->name() == "logging") {
      continue;
    }
    const pb::Message& a = saved.GetReflection()->GetMessage(saved, section);
    const pb::Message& b = now.GetReflection()->GetMessage(now, section);
    const pb::Descriptor* sd = section->message_type();
    for (int j = 0; j < sd->field_count(); ++j) {
      const pb::FieldDescriptor* f = sd->field(j);
      std::string va, vb;
      if (f->is_repeated()) {
        for (int k = 0; k < a.GetReflection()->FieldSize(a, f); ++k) {
          std::string v;
          pb::TextFormat::PrintFieldValueToString(a, f, k, &v);
          va += (k ? "," : "") + v;
        }
        for (int k = 0; k < b.GetReflection()->FieldSize(b, f); ++k) {
          std::string v;
          pb::TextFormat::PrintFieldValueToString(b, f, k, &v);
          vb += (k ? "," : "") + v;
        }
      } else {
        pb::TextFormat::PrintFieldValueToString(a, f, -1, &va);
        pb::TextFormat::PrintFieldValueToString(b, f, -1, &vb);
      }
      if (va != vb) out.push_back(section->name() + "." + f->name() + ": " + va + " -> " + vb);
    }
  }
  return out;
}

bool same_directory(const std::string& a, const std::string& b) {
  std::error_code ec;
  return fs::equivalent(a, b, ec) && !ec;
}

}  // namespace

// A background save: the snapshot its thread writes from, and what the thread reports.
struct Checkpointer::Pending {
  int64_t step = 0;
  double lr = 0;
  int64_t adamw_steps = 0;
  std::string tmp;
  // values | exp_avg | exp_avg_sq, of which only this rank's part is copied (the rest is never
  // touched, so never backed by memory)
  std::unique_ptr<float[]> snapshot;
  std::thread thread;
  std::atomic<bool> done{false};
  WrittenShard written;
  std::string error;  // set by the thread before done
};

Checkpointer::Checkpointer(const LoadedConfig& config, ProcessGroups* groups,
                           ParameterStore<float>& params, AdamW<float>& optimizer)
    : config_(config),
      groups_(groups),
      params_(params),
      optimizer_(optimizer),
      root_(config.proto().checkpoint().has_dir()
                ? config.proto().checkpoint().dir()
                : config.proto().logging().dir() + "/checkpoints"),
      tp_size_(groups ? groups->tp_size : 1),
      dp_size_(groups ? groups->dp_size : 1),
      dp_rank_(groups ? groups->dp_rank : 0) {}

Checkpointer::~Checkpointer() {
  if (pending_ && pending_->thread.joinable()) pending_->thread.join();
}

int Checkpointer::world_rank() const {
  return groups_ ? groups_->world->rank() : 0;
}

std::string Checkpointer::broadcast(const std::string& text, int from) {
  if (!groups_ || groups_->world->size() == 1) return text;
  Communicator& world = *groups_->world;
  // The text travels as one int64 per byte: the communicator moves numbers only.
  int64_t length = world.rank() == from ? int64_t(text.size()) : 0;
  world.broadcast(&length, 1, from);
  std::vector<int64_t> chars(static_cast<size_t>(length));
  if (world.rank() == from) {
    for (int64_t i = 0; i < length; ++i) chars[i] = static_cast<unsigned char>(text[i]);
  }
  if (length > 0) world.broadcast(chars.data(), length, from);
  std::string out(static_cast<size_t>(length), ' ');
  for (int64_t i = 0; i < length; ++i) out[i] = char(chars[i]);
  return out;
}

std::string Checkpointer::first_error(const std::string& mine) {
  if (!groups_ || groups_->world->size() == 1) return mine;
  Communicator& world = *groups_->world;
  std::vector<int64_t> failed(static_cast<size_t>(world.size()), 0);
  const int64_t here = mine.empty() ? 0 : 1;
  world.all_gather(&here, failed.data(), 1);
  for (int r = 0; r < world.size(); ++r) {
    if (!failed[r]) continue;
    const std::string text = broadcast(mine, r);
    return r == 0 ? text : "rank " + std::to_string(r) + ": " + text;
  }
  return "";
}

Checkpointer::Resumed Checkpointer::resume(const std::string& what) {
  const bool automatic = what == "auto";
  // World rank 0 lists the candidates and every rank tries the same ones in the same order
  // (a file system that shows the ranks different directories cannot make them diverge).
  std::string listed, error;
  if (world_rank() == 0) {
    try {
      for (const std::string& dir :
           automatic ? checkpoint_candidates(root_) : std::vector{resolve_checkpoint(what)}) {
        listed += dir + "\n";
      }
    } catch (const Error& e) {
      error = e.what();
    }
  }
  error = first_error(error);
  if (!error.empty()) throw CheckpointError(error);
  listed = broadcast(listed, 0);
  std::vector<std::string> candidates;
  for (size_t at = 0, end; (end = listed.find('\n', at)) != std::string::npos; at = end + 1) {
    candidates.push_back(listed.substr(at, end - at));
  }

  std::vector<std::string> passed_over;
  for (const std::string& dir : candidates) {
    checkpoint::Manifest m;
    error.clear();
    try {
      m = read_manifest(dir);
      load_shards(dir, m, params_, optimizer_.exp_avg().data(), optimizer_.exp_avg_sq().data());
    } catch (const Error& e) {
      error = e.what();
    }
    error = first_error(error);
    if (!error.empty()) {
      if (!automatic) throw CheckpointError(error);
      if (world_rank() == 0) {
        std::fprintf(stderr, "primal: warning: %s; trying an older checkpoint\n", error.c_str());
      }
      passed_over.push_back(error);
      continue;
    }
    optimizer_.set_steps(m.state().adamw_steps());
    if (same_directory(fs::path(dir).parent_path().string(), root_)) last_step_ = m.step();
    if (world_rank() == 0) {
      config::Config saved;
      if (google::protobuf::TextFormat::ParseFromString(m.config(), &saved)) {
        for (const std::string& d : config_differences(saved, config_.proto())) {
          std::printf("primal train: note: the config differs from the checkpoint's in %s\n",
                      d.c_str());
        }
      }
      std::printf("primal train: resumed from %s (step %lld, saved under tp %d x dp %d)\n",
                  dir.c_str(), (long long)m.step(), m.layout().tp(), m.layout().dp());
      std::fflush(stdout);
    }
    return {true, m.step(), dir};
  }
  if (!passed_over.empty()) {
    throw CheckpointError(root_, "no valid checkpoint among " + std::to_string(candidates.size()) +
                                     "; the newest failed with: " + passed_over.front());
  }
  if (world_rank() == 0) {
    std::printf("primal train: no checkpoint in %s yet; starting at step 0\n", root_.c_str());
  }
  return {};
}

void Checkpointer::save(int64_t step, double lr) {
  wait();
  std::string tmp, error;
  if (world_rank() == 0) {
    try {
      tmp = begin_checkpoint(root_, step);
    } catch (const Error& e) {
      error = e.what();
    }
  }
  tmp = root_ + "/." + checkpoint_step_name(step) + ".tmp";  // the same path on every rank
  error = first_error(error);
  if (!error.empty()) save_failed(step, tmp, error);

  pending_ = std::make_unique<Pending>();
  Pending& p = *pending_;
  p.step = step;
  p.lr = lr;
  p.adamw_steps = optimizer_.steps();
  p.tmp = tmp;
  const bool async = config_.proto().checkpoint().async_save();
  if (async) {
    // The snapshot decouples the file from training, which changes the buffers next step.
    const int64_t n = params_.numel();
    p.snapshot.reset(new float[size_t(3 * n)]);
    const float* from[3] = {params_.values().data(), optimizer_.exp_avg().data(),
                            optimizer_.exp_avg_sq().data()};
    for (const auto& [begin, end] : shard_part_ranges(params_, dp_rank_, dp_size_)) {
      for (int k = 0; k < 3; ++k) {
        std::copy(from[k] + begin, from[k] + end, p.snapshot.get() + k * n + begin);
      }
    }
    p.thread = std::thread([this, &p, n] {
      try {
        const float* s = p.snapshot.get();
        p.written = write_shard(p.tmp, params_, {s, s + n, s + 2 * n}, p.step, dp_rank_, dp_size_);
      } catch (const std::exception& e) {
        p.error = e.what();
      }
      p.done = true;
    });
    return;  // agree() or wait() commits it
  }
  try {
    p.written = write_shard(
        tmp, params_,
        {params_.values().data(), optimizer_.exp_avg().data(), optimizer_.exp_avg_sq().data()},
        step, dp_rank_, dp_size_);
  } catch (const std::exception& e) {
    p.error = e.what();
  }
  p.done = true;
  if (!async) finish();
}

void Checkpointer::wait() {
  if (!pending_) return;
  if (pending_->thread.joinable()) pending_->thread.join();
  finish();
}

bool Checkpointer::agree(bool stop_here) {
  int64_t flags[2] = {stop_here ? 1 : 0, pending_ && !pending_->done ? 1 : 0};
  if (groups_ && groups_->world->size() > 1) groups_->world->all_reduce(flags, 2, ReduceOp::kSum);
  if (pending_ && flags[1] == 0) wait();
  return flags[0] > 0;
}

void Checkpointer::finish() {
  std::unique_ptr<Pending> owned = std::move(pending_);
  Pending& p = *owned;
  if (p.thread.joinable()) p.thread.join();
  const std::string error = first_error(p.error);  // every writer is done once it returns
  if (!error.empty()) save_failed(p.step, p.tmp, error);
  // Every rank's file size, CRC and record CRCs, to world rank 0. The offsets need no
  // message: every rank can compute every file's layout from the parameter list.
  std::vector<WrittenShard> shards(static_cast<size_t>(tp_size_ * dp_size_));
  const size_t width = 3 + 3 * params_.all().size();  // bytes, crc, count, record CRCs
  std::vector<int64_t> mine(width, 0);
  mine[0] = p.written.bytes;
  mine[1] = p.written.crc32c;
  mine[2] = int64_t(p.written.record_crcs.size());
  std::copy(p.written.record_crcs.begin(), p.written.record_crcs.end(), mine.begin() + 3);
  if (groups_ && groups_->world->size() > 1) {
    std::vector<int64_t> all(width * size_t(groups_->world->size()));
    groups_->world->all_gather(mine.data(), all.data(), int64_t(width));
    // World rank d TP + t is TP rank t of DP rank d (comm/process_groups.h); it wrote part d
    // of TP rank t's shard, shards[t DP + d] (build_manifest's order).
    for (int w = 0; w < tp_size_ * dp_size_; ++w) {
      const int64_t* row = all.data() + size_t(w) * width;
      WrittenShard& s = shards[size_t((w % tp_size_) * dp_size_ + w / tp_size_)];
      s.bytes = row[0];
      s.crc32c = uint32_t(row[1]);
      for (int64_t i = 0; i < row[2]; ++i) s.record_crcs.push_back(uint32_t(row[3 + i]));
    }
  } else {
    shards[0] = p.written;
  }
  std::string commit_error;
  if (world_rank() == 0) {
    try {
      checkpoint::TrainingState state;
      state.set_step(p.step);
      state.set_adamw_steps(p.adamw_steps);
      state.set_seed(config_.proto().train().seed());
      state.set_data_cursor(p.step);
      state.set_lr(p.lr);
      state.set_total_steps(config_.proto().train().steps());
      std::string text;
      google::protobuf::TextFormat::PrintToString(config_.proto(), &text);
      commit_checkpoint(root_, p.tmp,
                        build_manifest(params_, shards, dp_size_, state, text, dp_size_),
                        config_.proto().checkpoint().keep());
    } catch (const std::exception& e) {
      commit_error = e.what();
    }
  }
  const std::string error2 = first_error(commit_error);
  if (!error2.empty()) save_failed(p.step, p.tmp, error2);
  last_step_ = p.step;
}

void Checkpointer::save_failed(int64_t step, const std::string& tmp, const std::string& error) {
  if (world_rank() == 0) abandon_checkpoint(root_, tmp);
  throw CheckpointSaveError("checkpoint of step " + std::to_string(step) + " failed: " + error);
}

}  // namespace primal
