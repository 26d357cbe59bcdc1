#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <google/protobuf/text_format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "core/files.h"
#include "model/transformer.h"
#include "trainer/safetensors.h"
#include "trainer/tensorboard/crc32c.h"

namespace primal {
namespace {

namespace fs = std::filesystem;
using tensorboard::crc32c;
using tensorboard::crc32c_extend;

static_assert(std::endian::native == std::endian::little, "shard files are little-endian");

// The shard file header: magic, format version, tensor-parallel rank and size, step. A shard
// file names its place, so one copied in from another checkpoint is caught before its CRCs.
constexpr char kMagic[8] = {'P', 'R', 'I', 'M', 'A', 'L', 'C', 'K'};
constexpr int64_t kHeaderBytes = 64;
struct Header {
  char magic[8];
  uint32_t version;
  uint32_t tp_rank;
  uint32_t tp_size;
  uint32_t reserved;
  int64_t step;
  char pad[kHeaderBytes - 32];
};
static_assert(sizeof(Header) == kHeaderBytes);

// The three kinds of record each parameter shard has, in file order (kind-major: a loader of
// weights alone reads one contiguous part of each file).
enum Kind { kValue = 0, kExpAvg = 1, kExpAvgSq = 2 };
constexpr int kKinds = 3;
const char* kind_name(int kind) {
  static const char* kNames[] = {"value", "exp_avg", "exp_avg_sq"};
  return kNames[kind];
}

std::string sys_error() {
  return std::strerror(errno);
}

// ---- Files

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  int get() const { return fd_; }

 private:
  int fd_;
};

void read_all_at(int fd, void* data, int64_t n, int64_t offset, const std::string& path) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, size_t(std::min<int64_t>(n, int64_t(1) << 30)), offset);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      throw CheckpointError(path, r < 0 ? "read failed: " + sys_error()
                                        : "ends early at byte " + std::to_string(offset));
    }
    p += r;
    n -= r;
    offset += r;
  }
}

std::string read_small_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// ---- Layout of a shard file

// Whether TP rank t's file holds parameter p: sharded ones on every rank, replicated ones
// (equal everywhere) on rank 0 only.
bool holds(const Parameter<float>& p, int tp_rank) {
  return p.sharding.split != Split::kReplicated || tp_rank == 0;
}

struct PlannedRecord {
  int param;
  int kind;
  int64_t local_offset;  // elements into the writing rank's buffers
  int64_t numel;
  int64_t file_offset;  // bytes
};

// The records of part `part` of `parts` of TP rank tp_rank's shard, in file order: the
// parameters the rank holds are cut into `parts` runs of about equal size (a parameter goes to
// the part where its first element falls), and a part's file holds its parameters' values,
// then their exp_avg, then their exp_avg_sq. parts = 1: the whole shard, one file.
// local_offset is meaningful for the rank whose store params is.
std::vector<PlannedRecord> plan_shard(const ParameterStore<float>& params, int tp_rank, int tp_size,
                                      int part = 0, int parts = 1) {
  int64_t total = 0;
  for (const auto& p : params.all()) {
    if (holds(p, tp_rank)) total += local_shape(p.shape, p.sharding, {tp_rank, tp_size}).numel();
  }
  std::vector<bool> mine;
  for (int64_t before = 0; const auto& p : params.all()) {
    const bool held = holds(p, tp_rank);
    const int owner = total == 0 ? 0 : int(std::min<int64_t>(parts - 1, before * parts / total));
    mine.push_back(held && owner == part);
    if (held) before += local_shape(p.shape, p.sharding, {tp_rank, tp_size}).numel();
  }
  std::vector<PlannedRecord> plan;
  int64_t file_offset = kHeaderBytes;
  for (int kind = 0; kind < kKinds; ++kind) {
    int64_t local = 0, index = 0;
    for (const auto& p : params.all()) {
      const int64_t n = local_shape(p.shape, p.sharding, {tp_rank, tp_size}).numel();
      if (mine[size_t(index)]) {
        plan.push_back({int(index), kind, local, n, file_offset});
        file_offset += n * int64_t(sizeof(float));
      }
      local += p.local_shape.numel();
      ++index;
    }
  }
  return plan;
}

checkpoint::Tensor::Split split_to_proto(Split s) {
  switch (s) {
    case Split::kReplicated:
      return checkpoint::Tensor::REPLICATED;
    case Split::kColumn:
      return checkpoint::Tensor::COLUMN;
    case Split::kRow:
      return checkpoint::Tensor::ROW;
    case Split::kHeads:
      return checkpoint::Tensor::HEADS;
  }
  return checkpoint::Tensor::REPLICATED;
}

Split split_from_proto(checkpoint::Tensor::Split s) {
  switch (s) {
    case checkpoint::Tensor::REPLICATED:
      return Split::kReplicated;
    case checkpoint::Tensor::COLUMN:
      return Split::kColumn;
    case checkpoint::Tensor::ROW:
      return Split::kRow;
    case checkpoint::Tensor::HEADS:
      return Split::kHeads;
  }
  return Split::kReplicated;
}

std::string shape_str(const google::protobuf::RepeatedField<int64_t>& dims) {
  std::string s = "[";
  for (int i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

Shape shape_from(const google::protobuf::RepeatedField<int64_t>& d) {
  switch (d.size()) {
    case 0:
      return Shape{};
    case 1:
      return Shape{d[0]};
    case 2:
      return Shape{d[0], d[1]};
    case 3:
      return Shape{d[0], d[1], d[2]};
    default:
      return Shape{d[0], d[1], d[2], d[3]};
  }
}

const checkpoint::Record& record_of(const checkpoint::Shard& s, int kind) {
  return kind == kValue ? s.value() : kind == kExpAvg ? s.exp_avg() : s.exp_avg_sq();
}
checkpoint::Record* mutable_record_of(checkpoint::Shard& s, int kind) {
  return kind == kValue    ? s.mutable_value()
         : kind == kExpAvg ? s.mutable_exp_avg()
                           : s.mutable_exp_avg_sq();
}

int world_rank_from_env() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"}) {
    if (const char* v = std::getenv(name)) return std::atoi(v);
  }
  return 0;
}

// Temporary directories of saves that never committed: ".step_<N>.tmp".
bool is_temp_dir_name(const std::string& name) {
  return name.size() > 10 && name.rfind(".step_", 0) == 0 &&
         name.compare(name.size() - 4, 4, ".tmp") == 0;
}

}  // namespace

std::string checkpoint_step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", (long long)step);
  return buf;
}

int64_t checkpoint_step_of(const std::string& name) {
  if (name.size() < 6 || name.rfind("step_", 0) != 0) return -1;
  int64_t step = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || step > (int64_t(1) << 58)) return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

std::string shard_file_name(int tp_rank, int tp_size, int part, int parts) {
  std::string name = "shard_" + std::to_string(tp_rank) + "_of_" + std::to_string(tp_size);
  if (part > 0) name += ".part_" + std::to_string(part) + "_of_" + std::to_string(parts);
  return name + ".bin";
}

void checkpoint_fault_point(int phase, int64_t step) {
  static const char* spec = std::getenv("PRIMAL_CHECKPOINT_FAULT");
  if (!spec || !*spec) return;
  long want_phase = -1, want_rank = 0;
  long long want_step = -1;
  const int n = std::sscanf(spec, "%ld:%lld:%ld", &want_phase, &want_step, &want_rank);
  if (n < 1 || want_phase != phase) return;
  if (n >= 2 && want_step != step) return;
  if (world_rank_from_env() != want_rank) return;
  std::fprintf(stderr,
               "primal: PRIMAL_CHECKPOINT_FAULT: killed at phase %d of the save of step %lld\n",
               phase, (long long)step);
  std::fflush(stderr);
  std::raise(SIGKILL);
}

// ---- Saving

std::string begin_checkpoint(const std::string& root, int64_t step) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) throw CheckpointError(root, "cannot create the checkpoint directory: " + ec.message());
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    if (is_temp_dir_name(name)) fs::remove_all(entry.path(), ec);
  }
  const std::string tmp = root + "/." + checkpoint_step_name(step) + ".tmp";
  if (!fs::create_directory(tmp, ec) || ec) {
    throw CheckpointError(tmp, "cannot create the temporary directory: " +
                                   (ec ? ec.message() : std::string("it exists")));
  }
  checkpoint_fault_point(1, step);
  return tmp;
}

WrittenShard write_shard(const std::string& tmp_dir, const ParameterStore<float>& params,
                         const ShardSource& source, int64_t step, int part, int parts) {
  const TensorParallelRank tp = params.tp();
  const std::string path = tmp_dir + "/" + shard_file_name(tp.rank, tp.size, part, parts);
  OutputFile file(path);

  Header header{};
  std::memcpy(header.magic, kMagic, sizeof kMagic);
  header.version = kCheckpointFormatVersion;
  header.tp_rank = uint32_t(tp.rank);
  header.tp_size = uint32_t(tp.size);
  header.step = step;
  WrittenShard out;
  file.write(&header, kHeaderBytes);
  out.crc32c = crc32c(&header, kHeaderBytes);
  out.bytes = kHeaderBytes;

  const std::vector<PlannedRecord> plan = plan_shard(params, tp.rank, tp.size, part, parts);
  std::vector<float> zeros;
  for (size_t i = 0; i < plan.size(); ++i) {
    const PlannedRecord& r = plan[i];
    const float* base = r.kind == kValue    ? source.values
                        : r.kind == kExpAvg ? source.exp_avg
                                            : source.exp_avg_sq;
    const float* data = base ? base + r.local_offset : nullptr;
    if (!data) {
      zeros.assign(size_t(r.numel), 0.0f);
      data = zeros.data();
    }
    const int64_t bytes = r.numel * int64_t(sizeof(float));
    check(out.bytes == r.file_offset, "write_shard: the plan and the file disagree");
    file.write(data, bytes);
    out.record_crcs.push_back(crc32c(data, size_t(bytes)));
    out.crc32c = crc32c_extend(out.crc32c, data, size_t(bytes));
    out.bytes += bytes;
    if (i == plan.size() / 2) checkpoint_fault_point(2, step);
  }
  file.sync();
  return out;
}

std::vector<std::pair<int64_t, int64_t>> shard_part_ranges(const ParameterStore<float>& params,
                                                           int part, int parts) {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (const PlannedRecord& r :
       plan_shard(params, params.tp().rank, params.tp().size, part, parts)) {
    if (r.kind != kValue) break;  // the moments' records repeat the values' ranges
    if (!ranges.empty() && ranges.back().second == r.local_offset) {
      ranges.back().second += r.numel;
    } else {
      ranges.emplace_back(r.local_offset, r.local_offset + r.numel);
    }
  }
  return ranges;
}

checkpoint::Manifest build_manifest(const ParameterStore<float>& params,
                                    const std::vector<WrittenShard>& shards, int dp_size,
                                    const checkpoint::TrainingState& state,
                                    const std::string& config_text, int parts) {
  check(parts >= 1 && shards.size() % size_t(parts) == 0,
        "build_manifest: the shards are not parts per TP rank");
  const int tp_size = int(shards.size()) / parts;
  checkpoint::Manifest m;
  m.set_format_version(kCheckpointFormatVersion);
  m.set_step(state.step());
  m.set_config(config_text);
  m.mutable_layout()->set_tp(tp_size);
  m.mutable_layout()->set_dp(dp_size);
  *m.mutable_state() = state;
  m.set_producer("primal");
  for (int t = 0; t < tp_size; ++t) {
    for (int d = 0; d < parts; ++d) {
      const WrittenShard& written = shards[size_t(t * parts + d)];
      checkpoint::ShardFile* f = m.add_files();
      f->set_name(shard_file_name(t, tp_size, d, parts));
      f->set_tp_rank(t);
      f->set_bytes(written.bytes);
      f->set_crc32c(written.crc32c);
      if (parts > 1) f->set_dp_rank(d);  // one file per TP rank: DP rank 0's, as ever
    }
  }
  for (const auto& p : params.all()) {
    checkpoint::Tensor* t = m.add_tensors();
    t->set_name(p.name);
    for (int i = 0; i < p.shape.rank(); ++i) t->add_shape(p.shape[i]);
    t->set_dtype("F32");
    t->set_split(split_to_proto(p.sharding.split));
    t->set_blocks(p.sharding.blocks);
  }
  for (int t = 0; t < tp_size; ++t) {
    std::vector<checkpoint::Shard*> of_param(params.all().size(), nullptr);
    for (int d = 0; d < parts; ++d) {
      const WrittenShard& written = shards[size_t(t * parts + d)];
      const std::vector<PlannedRecord> plan = plan_shard(params, t, tp_size, d, parts);
      check(plan.size() == written.record_crcs.size(), "build_manifest: shard " +
                                                           shard_file_name(t, tp_size, d, parts) +
                                                           " has the wrong number of records");
      for (size_t i = 0; i < plan.size(); ++i) {
        const PlannedRecord& r = plan[i];
        checkpoint::Shard*& s = of_param[r.param];
        if (!s) {
          s = m.mutable_tensors(r.param)->add_shards();
          s->set_file(shard_file_name(t, tp_size, d, parts));
          s->set_tp_rank(t);
          s->set_tp_size(tp_size);
        }
        checkpoint::Record* rec = mutable_record_of(*s, r.kind);
        rec->set_offset(r.file_offset);
        rec->set_bytes(r.numel * int64_t(sizeof(float)));
        rec->set_crc32c(written.record_crcs[i]);
      }
    }
  }
  return m;
}

namespace {

// Where the new `latest` is written before it is renamed over the old one.

// Deletes all but the `keep` newest checkpoints of steps <= newest. Newer ones (left by a run
// this one resumed before) and anything not named step_<N> are never touched.
void prune(const std::string& root, int64_t newest, int keep) {
  if (keep <= 0) return;
  std::vector<std::pair<int64_t, fs::path>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const int64_t step = checkpoint_step_of(entry.path().filename().string());
    if (step >= 0 && step <= newest && entry.is_directory()) found.emplace_back(step, entry.path());
  }
  std::sort(found.begin(), found.end(), [](auto& a, auto& b) { return a.first > b.first; });
  for (size_t i = size_t(keep); i < found.size(); ++i) {
    fs::remove_all(found[i].second, ec);
    if (ec) {
      std::fprintf(stderr, "primal: warning: cannot delete the old checkpoint %s: %s\n",
                   found[i].second.c_str(), ec.message().c_str());
    }
  }
}

}  // namespace

void commit_checkpoint(const std::string& root, const std::string& tmp_dir,
                       const checkpoint::Manifest& manifest, int keep) {
  const int64_t step = manifest.step();
  checkpoint_fault_point(3, step);
  std::string bytes;
  check(manifest.SerializeToString(&bytes), "commit_checkpoint: cannot serialise the manifest");
  {
    OutputFile file(tmp_dir + "/manifest.pb");
    file.write(bytes);
    file.sync();
  }
  sync_directory(tmp_dir);  // the shard files' entries, made by other ranks, too
  checkpoint_fault_point(4, step);

  const std::string name = checkpoint_step_name(step), final_dir = root + "/" + name;
  std::error_code ec;
  if (fs::exists(final_dir, ec)) {
    std::string aside;
    for (int k = 1;; ++k) {
      aside = final_dir + ".replaced-" + std::to_string(k);
      if (!fs::exists(aside, ec)) break;
    }
    rename_path(final_dir, aside);
    std::fprintf(stderr, "primal: warning: %s existed; moved it to %s\n", final_dir.c_str(),
                 aside.c_str());
  }
  rename_path(tmp_dir, final_dir);
  sync_directory(root);
  checkpoint_fault_point(5, step);

  write_file_durably(root + "/latest", name + "\n");
  checkpoint_fault_point(6, step);
  prune(root, step, keep);
}

void abandon_checkpoint(const std::string& root, const std::string& tmp_dir) {
  std::error_code ec;
  fs::remove_all(tmp_dir, ec);
  fs::remove(durable_temp_path(root + "/latest"), ec);
}

// ---- Loading

std::string resolve_checkpoint(const std::string& path) {
  std::error_code ec;
  if (fs::exists(path + "/manifest.pb", ec)) return path;
  const std::string latest = path + "/latest";
  if (fs::exists(latest, ec)) {
    std::string name = read_small_file(latest);
    while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
    if (checkpoint_step_of(name) < 0) {
      throw CheckpointError(latest, "does not name a step_<N> directory (it holds '" + name + "')");
    }
    return path + "/" + name;
  }
  if (fs::is_directory(path, ec)) return path;  // read_manifest names the missing manifest
  throw CheckpointError(path,
                        fs::exists(path, ec) ? "is not a checkpoint directory" : "does not exist");
}

std::vector<std::string> checkpoint_candidates(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> steps;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    const int64_t step = checkpoint_step_of(name);
    if (step >= 0 && entry.is_directory()) steps.emplace_back(step, name);
  }
  std::sort(steps.begin(), steps.end(), std::greater<>());
  int64_t newest = INT64_MAX;
  std::vector<std::string> out;
  const std::string latest = root + "/latest";
  if (fs::exists(latest, ec)) {
    std::string name = read_small_file(latest);
    while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
    const int64_t step = checkpoint_step_of(name);
    if (step >= 0) {
      out.push_back(root + "/" + name);
      newest = step;
    } else {
      std::fprintf(stderr, "primal: warning: %s does not name a step_<N> directory; ignoring it\n",
                   latest.c_str());
    }
  }
  // Older ones only: a newer step_<N> than `latest` is from a run that was rolled back.
  for (const auto& [step, name] : steps) {
    if (step < newest) out.push_back(root + "/" + name);
  }
  return out;
}

checkpoint::Manifest read_manifest(const std::string& step_dir) {
  const std::string path = step_dir + "/manifest.pb";
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    throw CheckpointError(path,
                          "missing: not a checkpoint, or an incomplete one (an "
                          "interrupted save, a damaged copy); a checkpoint directory "
                          "would hold `latest`");
  }
  const std::string bytes = read_small_file(path);
  checkpoint::Manifest m;
  if (!m.ParseFromString(bytes)) {
    throw CheckpointError(path, "cannot be parsed: not a checkpoint manifest, or damaged");
  }
  if (!m.has_format_version()) {
    throw CheckpointError(path, "has no format version: not a primal checkpoint manifest");
  }
  if (m.format_version() != kCheckpointFormatVersion) {
    throw CheckpointError(path, "has format version " + std::to_string(m.format_version()) +
                                    "; this build of primal reads version " +
                                    std::to_string(kCheckpointFormatVersion));
  }
  if (m.step() < 0 || m.files_size() == 0 || m.tensors_size() == 0 || !m.has_state()) {
    throw CheckpointError(path, "is incomplete (no step, shard files, tensors or state)");
  }
  const std::string dir_name = fs::path(step_dir).filename().string();
  const int64_t dir_step = checkpoint_step_of(dir_name);
  if (dir_step >= 0 && dir_step != m.step()) {
    throw CheckpointError(path, "is for step " + std::to_string(m.step()) +
                                    ", but the "
                                    "directory is " +
                                    dir_name);
  }
  return m;
}

namespace {

// The shard files of one checkpoint, opened on first use: size and header checked once.
class ShardFiles {
 public:
  ShardFiles(const std::string& step_dir, const checkpoint::Manifest& m) : dir_(step_dir), m_(m) {
    for (const auto& f : m.files()) by_name_[f.name()] = &f;
  }

  // The path and descriptor of a file, or a CheckpointError naming it.
  int open(const std::string& name, std::string& path) {
    path = dir_ + "/" + name;
    auto it = open_.find(name);
    if (it != open_.end()) return it->second.get();
    auto f = by_name_.find(name);
    if (f == by_name_.end() || name.find('/') != std::string::npos) {
      throw CheckpointError(dir_ + "/manifest.pb",
                            "a shard refers to '" + name + "', which the manifest does not list");
    }
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) throw CheckpointError(path, "cannot be opened: " + sys_error());
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw CheckpointError(path, "cannot stat: " + sys_error());
    const int64_t want = f->second->bytes();
    if (st.st_size != want) {
      throw CheckpointError(path, "has " + std::to_string(st.st_size) +
                                      " bytes, the manifest "
                                      "says " +
                                      std::to_string(want) +
                                      (st.st_size < want ? ": truncated" : ": damaged"));
    }
    Header h{};
    read_all_at(fd.get(), &h, kHeaderBytes, 0, path);
    if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0) {
      throw CheckpointError(path, "is not a primal shard file (bad magic): damaged");
    }
    if (h.version != m_.format_version() || int(h.tp_rank) != f->second->tp_rank() ||
        h.step != m_.step()) {
      throw CheckpointError(
          path, "header says format " + std::to_string(h.version) + ", tp rank " +
                    std::to_string(h.tp_rank) + ", step " + std::to_string(h.step) +
                    "; the manifest expects " + std::to_string(m_.format_version()) + ", " +
                    std::to_string(f->second->tp_rank()) + ", " + std::to_string(m_.step()) +
                    ": a shard of another checkpoint");
    }
    const int raw = fd.get();
    open_.emplace(name, std::move(fd));
    return raw;
  }

 private:
  std::string dir_;
  const checkpoint::Manifest& m_;
  std::map<std::string, const checkpoint::ShardFile*> by_name_;
  std::map<std::string, Fd> open_;
};

// Checks that a shard's slice description is one shard_runs() can compute for shape.
bool valid_slice(const Shape& shape, Split split, int blocks, int tp_rank, int tp_size) {
  if (tp_size < 1 || tp_rank < 0 || tp_rank >= tp_size || blocks < 1) return false;
  if (split == Split::kReplicated) return true;
  if (shape.rank() == 0) return false;
  if (split == Split::kRow) return shape[shape.rank() - 1] % tp_size == 0;
  return shape[0] % blocks == 0 && (shape[0] / blocks) % tp_size == 0;
}

// One overlap of a saved shard with the loading rank's slice: `length` elements from record
// position `src` to local position `dst`.
struct Overlap {
  int64_t src, dst, length;
};

// Intersects two run lists (full offset, length), each increasing in full offset.
std::vector<Overlap> overlaps(const std::vector<std::pair<int64_t, int64_t>>& src,
                              const std::vector<std::pair<int64_t, int64_t>>& dst) {
  std::vector<Overlap> out;
  size_t i = 0, j = 0;
  int64_t src_pos = 0, dst_pos = 0;
  while (i < src.size() && j < dst.size()) {
    const auto [a, la] = src[i];
    const auto [b, lb] = dst[j];
    const int64_t lo = std::max(a, b), hi = std::min(a + la, b + lb);
    if (lo < hi) out.push_back({src_pos + (lo - a), dst_pos + (lo - b), hi - lo});
    if (a + la <= b + lb) {
      src_pos += la;
      ++i;
    } else {
      dst_pos += lb;
      ++j;
    }
  }
  return out;
}

}  // namespace

void load_shards(const std::string& step_dir, const checkpoint::Manifest& m,
                 ParameterStore<float>& params, float* exp_avg, float* exp_avg_sq) {
  const std::string manifest_path = step_dir + "/manifest.pb";
  const bool moments = exp_avg != nullptr;
  std::map<std::string, const checkpoint::Tensor*> tensors;
  for (const auto& t : m.tensors()) tensors[t.name()] = &t;
  for (const auto& p : params.all()) {
    auto it = tensors.find(p.name);
    if (it == tensors.end()) {
      throw CheckpointError(manifest_path, "has no tensor '" + p.name + "' " + p.shape.str() +
                                               ": a checkpoint of another model");
    }
    const checkpoint::Tensor& t = *it->second;
    if (!(shape_from(t.shape()) == p.shape) || t.shape_size() != p.shape.rank()) {
      throw CheckpointError(manifest_path, "tensor '" + p.name + "' has shape " +
                                               shape_str(t.shape()) + ", the model needs " +
                                               p.shape.str() + ": a checkpoint of another model");
    }
    if (t.dtype() != "F32") {
      throw CheckpointError(
          manifest_path, "tensor '" + p.name + "' has dtype " + t.dtype() + "; only F32 is read");
    }
  }
  if (size_t(m.tensors_size()) != params.all().size()) {
    for (const auto& t : m.tensors()) {
      bool known = false;
      for (const auto& p : params.all()) known = known || p.name == t.name();
      if (!known) {
        throw CheckpointError(manifest_path, "has tensor '" + t.name() + "' " +
                                                 shape_str(t.shape()) +
                                                 ", which the model does not: a checkpoint of "
                                                 "another model");
      }
    }
    throw CheckpointError(manifest_path, "lists a tensor twice");
  }

  // Staged, then copied: the store changes only when the whole checkpoint is good.
  const int64_t total = params.numel();
  std::vector<float> staged[kKinds];
  const int kinds = moments ? kKinds : 1;
  for (int k = 0; k < kinds; ++k) staged[k].assign(size_t(total), 0.0f);
  ShardFiles files(step_dir, m);
  std::vector<float> record;
  int64_t local_offset = 0;
  for (const auto& p : params.all()) {
    const checkpoint::Tensor& t = *tensors[p.name];
    const auto dst_runs = shard_runs(p.shape, p.sharding, params.tp());
    const Split split = split_from_proto(t.split());
    int64_t filled = 0;
    for (const auto& s : t.shards()) {
      if (!valid_slice(p.shape, split, t.blocks(), s.tp_rank(), s.tp_size())) {
        throw CheckpointError(manifest_path, "tensor '" + p.name + "': a shard's slice (tp rank " +
                                                 std::to_string(s.tp_rank()) + " of " +
                                                 std::to_string(s.tp_size()) +
                                                 ") does not fit its shape");
      }
      const Sharding saved{split, t.blocks()};
      const auto src_runs = shard_runs(p.shape, saved, {s.tp_rank(), s.tp_size()});
      const std::vector<Overlap> ov = overlaps(src_runs, dst_runs);
      if (ov.empty()) continue;  // a slice this rank does not hold: not read
      const int64_t numel = local_shape(p.shape, saved, {s.tp_rank(), s.tp_size()}).numel();
      std::string path;
      const int fd = files.open(s.file(), path);
      for (int k = 0; k < kinds; ++k) {
        const checkpoint::Record& r = record_of(s, k);
        const std::string what = "tensor '" + p.name + "' (" + kind_name(k) + ", tp rank " +
                                 std::to_string(s.tp_rank()) + ")";
        if (r.bytes() != numel * int64_t(sizeof(float)) || r.offset() < kHeaderBytes) {
          throw CheckpointError(manifest_path, what + " has a record of " +
                                                   std::to_string(r.bytes()) + " bytes at " +
                                                   std::to_string(r.offset()) + "; its slice has " +
                                                   std::to_string(numel) + " floats");
        }
        record.resize(size_t(numel));
        read_all_at(fd, record.data(), r.bytes(), r.offset(), path);
        if (crc32c(record.data(), size_t(r.bytes())) != r.crc32c()) {
          throw CheckpointError(
              path, "checksum mismatch in " + what + ", bytes [" + std::to_string(r.offset()) +
                        ", " + std::to_string(r.offset() + r.bytes()) + "): the file is damaged");
        }
        float* out = staged[k].data() + local_offset;
        for (const Overlap& o : ov) std::copy_n(record.data() + o.src, o.length, out + o.dst);
      }
      for (const Overlap& o : ov) filled += o.length;
    }
    if (filled != p.local_shape.numel()) {
      throw CheckpointError(manifest_path, "the shards of tensor '" + p.name + "' cover " +
                                               std::to_string(filled) + " of the " +
                                               std::to_string(p.local_shape.numel()) +
                                               " elements this rank needs (once each)");
    }
    local_offset += p.local_shape.numel();
  }
  std::copy(staged[kValue].begin(), staged[kValue].end(), params.values().data());
  if (moments) {
    std::copy(staged[kExpAvg].begin(), staged[kExpAvg].end(), exp_avg);
    if (exp_avg_sq) std::copy(staged[kExpAvgSq].begin(), staged[kExpAvgSq].end(), exp_avg_sq);
  }
}

void verify_shard_files(const std::string& step_dir, const checkpoint::Manifest& m) {
  ShardFiles files(step_dir, m);
  std::vector<char> buf(size_t(1) << 20);
  for (const auto& f : m.files()) {
    std::string path;
    const int fd = files.open(f.name(), path);
    uint32_t crc = 0;
    for (int64_t at = 0; at < f.bytes(); at += int64_t(buf.size())) {
      const int64_t n = std::min<int64_t>(int64_t(buf.size()), f.bytes() - at);
      read_all_at(fd, buf.data(), n, at, path);
      crc = crc32c_extend(crc, buf.data(), size_t(n));
    }
    if (crc != f.crc32c()) throw CheckpointError(path, "checksum mismatch: the file is damaged");
  }
}

// ---- Single-process users

void load_checkpoint_weights(const std::string& dir, ParameterStore<float>& store) {
  const std::string step_dir = resolve_checkpoint(dir);
  const checkpoint::Manifest m = read_manifest(step_dir);
  load_shards(step_dir, m, store);
}

LoadedConfig load_checkpoint_config(const std::string& dir,
                                    const std::vector<std::string>& overrides, bool require_data) {
  const std::string step_dir = resolve_checkpoint(dir);
  const checkpoint::Manifest m = read_manifest(step_dir);
  return LoadedConfig::parse(m.config(), step_dir + "/manifest.pb (its config)", overrides,
                             require_data);
}

int64_t export_checkpoint(const std::string& dir, const std::string& out_path) {
  const std::string step_dir = resolve_checkpoint(dir);
  const checkpoint::Manifest m = read_manifest(step_dir);
  // Every shard file's size and header (opening them checks both); the bytes that export reads,
  // the values' records, are checked by their CRCs as load_shards reads them: no whole-file pass.
  {
    ShardFiles files(step_dir, m);
    std::string path;
    for (const auto& f : m.files()) files.open(f.name(), path);
  }
  // The full tensors, whatever layout saved them: a one-process store of the manifest's
  // tensors, in its order (the model's).
  // The shard files (their sizes just checked) hold every element at least once: shapes that
  // need more are refused before anything is allocated.
  int64_t stored = 0;
  for (const auto& f : m.files()) stored += f.bytes() / int64_t(sizeof(float));
  int64_t needed = 0;
  ParameterStore<float> full;
  for (const auto& t : m.tensors()) {
    bool fits = t.shape_size() >= 1 && t.shape_size() <= Shape::kMaxRank;
    int64_t numel = 1;
    for (int64_t d : t.shape()) {
      fits = fits && d >= 1 && d <= (stored - needed) / numel;
      if (fits) numel *= d;
    }
    if (!fits) {
      throw CheckpointError(step_dir + "/manifest.pb",
                            "tensor '" + t.name() + "' has shape " + shape_str(t.shape()) +
                                ", which the shard files' " + std::to_string(stored) +
                                " floats cannot hold (with the tensors before it)");
    }
    needed += numel;
    try {
      full.add(t.name(), shape_from(t.shape()), Split::kReplicated, Init::kZeros);
    } catch (const Error& e) {  // a name twice, a name without its layer's index
      throw CheckpointError(step_dir + "/manifest.pb", e.what());
    }
  }
  full.finalize_values_only();
  load_shards(step_dir, m, full);
  save_safetensors(out_path, full);
  return m.step();
}

void import_checkpoint(const std::string& safetensors_path, const LoadedConfig& config,
                       const std::string& out_root) {
  std::error_code ec;
  if (fs::exists(out_root + "/latest", ec) || !checkpoint_candidates(out_root).empty()) {
    throw CheckpointError(out_root, "already holds checkpoints; import into a new directory");
  }
  // Every value comes from the file: no initialisation, no gradients.
  Transformer<float> model(config.model(), nullptr, /*initialise=*/false);
  load_safetensors(safetensors_path, model.params());
  checkpoint::TrainingState state;
  state.set_step(0);
  state.set_adamw_steps(0);
  state.set_seed(config.proto().train().seed());
  state.set_data_cursor(0);
  state.set_lr(0);
  state.set_total_steps(config.proto().train().steps());
  std::string text;
  google::protobuf::TextFormat::PrintToString(config.proto(), &text);
  const std::string tmp = begin_checkpoint(out_root, 0);
  const WrittenShard shard =
      write_shard(tmp, model.params(), {model.params().values().data(), nullptr, nullptr}, 0);
  commit_checkpoint(out_root, tmp, build_manifest(model.params(), {shard}, 1, state, text), 0);
}

}  // namespace primal
