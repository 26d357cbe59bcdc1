#include "configs/config.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "data/kjv_testament.h"
#include "data/pathfinder.h"
#include "model/attention_kinds.h"

namespace primal {
namespace {

namespace pb = google::protobuf;

std::string field_path_at(const std::string& text, int line);

// Collects the parser's first error as "FILE:LINE:COLUMN: field.path: message".
class ErrorCollector : public pb::io::ErrorCollector {
 public:
  explicit ErrorCollector(std::string file) : file_(std::move(file)) {}
  void AddError(int line, int column, const std::string& message) override {
    if (first_.empty()) {
      line_ = line;
      first_ = file_ + ":" + std::to_string(line + 1) + ":" + std::to_string(column + 1) + ": ";
      message_ = message;
    }
  }
  std::string first(const std::string& text) const {
    const std::string field = field_path_at(text, line_);
    return first_ + (field.empty() ? "" : field + ": ") + message_;
  }

 private:
  std::string file_;
  std::string first_, message_;
  int line_ = 0;
};

// The field path a text-format line belongs to ("model.width" for "  width: 3" inside
// "model {"), by following the braces of the lines before it: the parser's messages name the
// position but not the field.
std::string field_path_at(const std::string& text, int line) {
  std::vector<std::string> open;
  std::istringstream in(text);
  std::string row;
  for (int i = 0; i <= line && std::getline(in, row); ++i) {
    row = row.substr(0, row.find('#'));
    std::istringstream words(row);
    std::string word, last;
    while (words >> word) {
      const bool opens = word.back() == '{' || word == "{";
      const std::string name = word.substr(0, word.find_first_of(":{"));
      if (i == line && last.empty() && !name.empty()) {
        open.push_back(name);
        break;
      }
      if (opens && !(word == "{" ? last : name).empty()) open.push_back(word == "{" ? last : name);
      for (char c : word)
        if (c == '}' && !open.empty()) open.pop_back();
      last = name;
    }
  }
  std::string path;
  for (const std::string& part : open) path += (path.empty() ? "" : ".") + part;
  return path;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string part; std::getline(in, part, sep);) out.push_back(part);
  return out;
}

// The registry entry of the config's attention enum value (matched by name), or null.
const AttentionKindSpec* attention_kind_of(int value) {
  if (!config::Model::Attention_IsValid(value)) return nullptr;
  return find_attention_kind(config::Model::Attention_Name(config::Model::Attention(value)));
}

}  // namespace

// Fashion-MNIST's images are 28 x 28 (data/fashion_mnist.h reads the size from the files).
constexpr int kFashionMnistSide = 28;

bool seq_len_sets_positions(const config::Data& data) {
  return data.kind() == config::Data::TEXT || data.kind() == config::Data::LISTOPS ||
         data.kind() == config::Data::KJV_TESTAMENT;
}

int positions_per_sample(const config::Config& config) {
  const config::Data& d = config.data();
  if (seq_len_sets_positions(d)) return d.seq_len();
  if (d.kind() == config::Data::PATHFINDER) return Pathfinder::kPixels;
  if (config.model().input() == config::Model::TOKENS) return kFashionMnistSide * kFashionMnistSide;
  const int side = kFashionMnistSide / config.model().patch_size();
  return side * side;
}

bool built_with_cuda() {
#ifdef PRIMAL_CUDA_BACKEND
  return true;
#else
  return false;
#endif
}

bool built_with_nccl() {
#ifdef PRIMAL_NCCL_BACKEND
  return true;
#else
  return false;
#endif
}

struct LoadedConfig::Locations {
  pb::TextFormat::ParseInfoTree tree;
};

LoadedConfig LoadedConfig::load(const std::string& path, const std::vector<std::string>& overrides,
                                bool require_data) {
  std::ifstream file(path);
  if (!file) throw Error(path, "cannot read the config file");
  std::stringstream text;
  text << file.rdbuf();
  return parse(text.str(), path, overrides, require_data);
}

LoadedConfig LoadedConfig::parse(const std::string& text, const std::string& origin,
                                 const std::vector<std::string>& overrides, bool require_data) {
  LoadedConfig out;
  out.path_ = origin;
  out.locations_ = std::make_shared<Locations>();
  pb::TextFormat::Parser parser;
  ErrorCollector errors(origin);
  parser.RecordErrorsTo(&errors);
  parser.WriteLocationsTo(&out.locations_->tree);
  if (!parser.ParseFromString(text, &out.proto_)) throw Error(errors.first(text));
  for (const std::string& assignment : overrides) out.apply_override(assignment);
  out.validate(require_data);
  return out;
}

void LoadedConfig::apply_override(const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw Error("--set " + assignment, "expected FIELD=VALUE, e.g. optimizer.lr=3e-4");
  }
  const std::string field_path = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  pb::Message* message = &proto_;
  const std::vector<std::string> parts = split(field_path, '.');
  for (size_t i = 0; i < parts.size(); ++i) {
    const pb::Descriptor* type = message->GetDescriptor();
    const pb::FieldDescriptor* field = type->FindFieldByName(parts[i]);
    if (!field) {
      throw Error("--set " + field_path,
                  "unknown field '" + parts[i] + "' in " + type->full_name());
    }
    const pb::Reflection* reflection = message->GetReflection();
    if (i + 1 < parts.size()) {
      if (field->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE || field->is_repeated()) {
        throw Error("--set " + field_path, "'" + parts[i] + "' has no fields");
      }
      message = reflection->MutableMessage(message, field);
      continue;
    }
    if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      throw Error("--set " + field_path, "is a message; set one of its fields");
    }
    if (field->is_repeated()) reflection->ClearField(message, field);
    if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING && !field->is_repeated()) {
      reflection->SetString(message, field, value);  // taken as is, no text-format quoting
      break;
    }
    pb::TextFormat::Parser parser;
    ErrorCollector quiet("--set");  // the message below says what is wrong
    parser.RecordErrorsTo(&quiet);
    for (const std::string& item : field->is_repeated() ? split(value, ',') : std::vector{value}) {
      if (!parser.ParseFieldValueFromString(item, field, message)) {
        throw Error("--set " + field_path,
                    "'" + item + "' is not a valid " + field->type_name() +
                        (field->enum_type() ? " of " + field->enum_type()->name() : ""));
      }
    }
  }
  overridden_.push_back(field_path);
}

std::string LoadedConfig::where(const std::string& field_path) const {
  for (auto it = overridden_.rbegin(); it != overridden_.rend(); ++it) {
    if (*it == field_path) return "--set " + field_path;
  }
  const pb::TextFormat::ParseInfoTree* tree = &locations_->tree;
  const pb::Descriptor* type = config::Config::descriptor();
  const std::vector<std::string> parts = split(field_path, '.');
  for (size_t i = 0; i < parts.size() && tree && type; ++i) {
    const pb::FieldDescriptor* field = type->FindFieldByName(parts[i]);
    if (!field) break;
    if (i + 1 == parts.size()) {
      const pb::TextFormat::ParseLocation loc =
          tree->GetLocation(field, field->is_repeated() ? 0 : -1);
      if (loc.line >= 0) return path_ + ":" + std::to_string(loc.line + 1) + ": " + field_path;
      break;
    }
    tree = tree->GetTreeForNested(field, -1);
    type = field->message_type();
  }
  return path_ + ": " + field_path + " (default)";
}

em::AdamWOptions LoadedConfig::adamw() const {
  const config::Optimizer& o = proto_.optimizer();
  return {.beta1 = o.beta1(), .beta2 = o.beta2(), .eps = o.eps(), .weight_decay = o.weight_decay()};
}

ModelConfig LoadedConfig::model() const {
  const config::Model& m = proto_.model();
  ModelConfig c;
  c.head = m.head() == config::Model::LM ? HeadKind::kLm : HeadKind::kClassifier;
  c.input = m.input() == config::Model::TOKENS ? InputKind::kTokens : InputKind::kPatches;
  c.vocab = m.vocab();
  c.patch_dim = m.patch_size() * m.patch_size() * m.channels();
  c.width = m.width();
  c.heads = m.heads();
  c.mlp_width = m.mlp_width();
  c.max_len = m.max_len();
  c.low_rank = m.low_rank();
  c.rank_multi = m.rank_multi();
  c.layers.clear();
  for (int kind : m.layers()) c.layers.push_back(attention_kind_of(kind)->kind);
  c.ln_eps = m.ln_eps();
  c.eta = m.eta();
  c.dropout = m.dropout();
  c.pooling = m.pooling() == config::Model::CLS ? Pooling::kCls : Pooling::kMean;
  c.num_classes = m.num_classes();
  c.head_width = m.head_width();
  c.seed = proto_.train().seed();
  return c;
}

void LoadedConfig::validate_layout(int world_size) const {
  const int tp = proto_.parallel().tp();
  const std::string at = where("parallel.tp");
  if (tp < 1) throw Error(at, "must be at least 1, got " + std::to_string(tp));
  if (world_size % tp != 0) {
    throw Error(at, std::to_string(tp) + " does not divide the " + std::to_string(world_size) +
                        " processes of the job");
  }
  if (proto_.model().heads() % tp != 0) {
    throw Error(at, std::to_string(tp) + " does not divide model.heads " +
                        std::to_string(proto_.model().heads()));
  }
  if (proto_.model().mlp_width() % tp != 0) {
    throw Error(at, std::to_string(tp) + " does not divide model.mlp_width " +
                        std::to_string(proto_.model().mlp_width()));
  }
  if (proto_.train().device() == config::Train::CUDA) {
    // Where training runs is a property of the job, so these are checked here (train) and not
    // in validate(): a checkpoint made on a GPU evaluates, exports and resumes anywhere.
    const std::string device = where("train.device");
    if (!built_with_cuda()) {
      throw Error(device,
                  "CUDA: this build has no CUDA backend (built with PRIMAL_CUDA=OFF); rebuild "
                  "with -DPRIMAL_CUDA=ON, or train on the CPU");
    }
    if (world_size > 1 && !built_with_nccl()) {
      throw Error(device,
                  "CUDA with more than one process needs NCCL, and this build has none (NCCL "
                  "was not found when it was configured); this job has " +
                      std::to_string(world_size) +
                      " processes: install NCCL and rebuild, or train on one GPU");
    }
    if (!proto_.logging().logdir().empty() && !(proto_.logging().peak_gflops() > 0)) {
      throw Error(where("logging.peak_gflops"),
                  "must be set to the GPU's peak GFLOP/s with train.device CUDA and "
                  "logging.logdir (the measured peak is the CPU's sgemm rate, not the GPU's)");
    }
  }
  const int dp = world_size / tp;
  const int micro = proto_.data().batch_size() / proto_.optimizer().accumulation_steps();
  if (micro % dp != 0) {
    throw Error(where("data.batch_size"),
                "the micro-batch of " + std::to_string(micro) +
                    " samples (batch_size / accumulation_steps) is not divisible by the " +
                    std::to_string(dp) + " data-parallel ranks (world " +
                    std::to_string(world_size) + " / parallel.tp " + std::to_string(tp) + ")");
  }
}

void LoadedConfig::validate(bool require_data) const {
  auto fail = [&](const std::string& field, const std::string& what) {
    throw Error(where(field), what);
  };
  auto positive = [&](const std::string& field, double value) {
    if (!(value > 0)) {
      std::ostringstream v;
      v << value;
      fail(field, "must be positive, got " + v.str());
    }
  };
  const config::Model& m = proto_.model();
  const config::Data& d = proto_.data();
  const config::Optimizer& o = proto_.optimizer();
  const config::Train& t = proto_.train();

  for (auto [name, value] : {std::pair<const char*, double>{"model.width", m.width()},
                             {"model.heads", m.heads()},
                             {"model.mlp_width", m.mlp_width()},
                             {"model.max_len", m.max_len()},
                             {"model.low_rank", m.low_rank()},
                             {"model.rank_multi", m.rank_multi()},
                             {"model.vocab", m.vocab()},
                             {"model.ln_eps", m.ln_eps()},
                             {"data.seq_len", d.seq_len()},
                             {"data.batch_size", d.batch_size()},
                             {"optimizer.lr", o.lr()},
                             {"optimizer.eps", o.eps()},
                             {"optimizer.accumulation_steps", o.accumulation_steps()},
                             {"train.steps", double(t.steps())},
                             {"train.log_every", double(t.log_every())}}) {
    positive(name, value);
  }
  if (m.layers_size() == 0) {
    fail("model.layers", "needs at least one layer (" + attention_kind_names() + ")");
  }
  for (int kind : m.layers()) {
    if (!attention_kind_of(kind)) {
      fail("model.layers",
           std::to_string(kind) + " is not an attention kind (" + attention_kind_names() + ")");
    }
  }
  if (m.width() % m.heads() != 0) {
    fail("model.heads",
         std::to_string(m.heads()) + " does not divide model.width " + std::to_string(m.width()));
  }
  if (m.dropout() < 0 || m.dropout() >= 1) fail("model.dropout", "must lie in [0, 1)");
  if (m.eta() < 0) fail("model.eta", "must not be negative");
  if (o.beta1() < 0 || o.beta1() >= 1) fail("optimizer.beta1", "must lie in [0, 1)");
  if (o.beta2() < 0 || o.beta2() >= 1) fail("optimizer.beta2", "must lie in [0, 1)");
  if (o.weight_decay() < 0) fail("optimizer.weight_decay", "must not be negative");
  if (o.grad_clip() < 0) fail("optimizer.grad_clip", "must not be negative (0 disables)");
  if (d.batch_size() % o.accumulation_steps() != 0) {
    fail("optimizer.accumulation_steps",
         "must divide data.batch_size " + std::to_string(d.batch_size()));
  }
  if (proto_.schedule().warmup_steps() < 0) fail("schedule.warmup_steps", "must not be negative");
  if (proto_.schedule().min_lr() < 0 || proto_.schedule().min_lr() > o.lr()) {
    fail("schedule.min_lr", "must lie in [0, optimizer.lr]");
  }
  if (t.eval_every() < 0) fail("train.eval_every", "must not be negative");
  if (t.threads() < 0) fail("train.threads", "must not be negative");
  if (proto_.parallel().bucket_mb() <= 0) fail("parallel.bucket_mb", "must be positive");
  if (t.precision() == config::Train::BF16 && t.device() != config::Train::CUDA) {
    fail("train.precision", "BF16 needs train.device: CUDA (the CPU trains in FP32)");
  }

  const bool lm = m.head() == config::Model::LM;
  const bool cls = !lm && m.pooling() == config::Model::CLS;
  if (lm && m.input() != config::Model::TOKENS) fail("model.input", "the LM head needs TOKENS");
  const ModelConfig model_config = model();
  for (int kind : m.layers()) {
    const AttentionKindSpec* spec = attention_kind_of(kind);
    if (!spec->config_problem) continue;
    const ConfigProblem problem = spec->config_problem(model_config);
    if (!problem.field.empty()) fail("model." + problem.field, problem.message);
  }

  switch (d.kind()) {
    case config::Data::TEXT:
      if (!lm) fail("data.kind", "TEXT trains the LM head (model.head: LM)");
      if (m.vocab() != 256) fail("model.vocab", "byte-level TEXT needs vocab 256");
      break;
    case config::Data::FASHION_MNIST:
      if (lm) fail("data.kind", "FASHION_MNIST needs model.head CLASSIFIER");
      if (m.input() == config::Model::PATCHES) {
        if (m.patch_size() <= 0 || kFashionMnistSide % m.patch_size() != 0) {
          fail("model.patch_size", "must divide the 28-pixel images");
        }
        if (m.channels() != 1) fail("model.channels", "Fashion-MNIST images have 1 channel");
      } else if (m.vocab() < 256) {
        fail("model.vocab", "one token per pixel (model.input TOKENS) needs vocab >= 256");
      }
      if (m.num_classes() != 10) fail("model.num_classes", "Fashion-MNIST has 10 classes");
      break;
    case config::Data::LISTOPS:
      if (lm || m.input() != config::Model::TOKENS) {
        fail("data.kind", "LISTOPS needs model.head CLASSIFIER and model.input TOKENS");
      }
      if (m.num_classes() != 10) fail("model.num_classes", "ListOps has 10 classes");
      if (d.listops_min_len() > d.seq_len()) {
        fail("data.listops_min_len", "exceeds data.seq_len " + std::to_string(d.seq_len()));
      }
      break;
    case config::Data::PATHFINDER:
    case config::Data::KJV_TESTAMENT: {
      const std::string kind = config::Data::Kind_Name(d.kind());
      if (lm || m.input() != config::Model::TOKENS) {
        fail("data.kind", kind + " needs model.head CLASSIFIER and model.input TOKENS");
      }
      if (m.vocab() < 256) fail("model.vocab", kind + " tokens are bytes: vocab >= 256");
      if (m.num_classes() != 2) fail("model.num_classes", kind + " has 2 classes");
      if (d.eval_size() <= 0) fail("data.eval_size", "must be positive");
      if (d.kind() == config::Data::PATHFINDER && d.pathfinder_train_size() <= 0) {
        fail("data.pathfinder_train_size", "must be positive");
      }
      if (d.kind() == config::Data::KJV_TESTAMENT) {
        if (d.seq_len() > KjvTestament::kBlockBytes) {
          fail("data.seq_len", "windows are cut from " + std::to_string(KjvTestament::kBlockBytes) +
                                   "-byte blocks: at most that many bytes");
        }
        if (d.order() != config::Data::RANDOM) {
          fail("data.order", "KJV_TESTAMENT draws random windows: RANDOM only");
        }
      }
      break;
    }
  }
  // Positions needed by one sample, plus CLS. Where the data fixes them (images), a sample
  // that does not fit is model.max_len's fault; else data.seq_len's.
  const int positions = positions_per_sample(proto_) + (cls ? 1 : 0);
  if (positions > m.max_len()) {
    fail(seq_len_sets_positions(d) ? "data.seq_len" : "model.max_len",
         std::to_string(positions) + " positions per sample exceed model.max_len " +
             std::to_string(m.max_len()));
  }
  const config::Checkpoint& k = proto_.checkpoint();
  if (k.every() < 0) fail("checkpoint.every", "must not be negative (0: only at the end)");
  if (k.keep() < 0) fail("checkpoint.keep", "must not be negative (0 keeps every checkpoint)");
  if (k.stop_at_step() < 0 || k.stop_at_step() > t.steps()) {
    fail("checkpoint.stop_at_step",
         "must lie in [0, train.steps " + std::to_string(t.steps()) + "] (0: never)");
  }
  if (require_data && d.kind() != config::Data::LISTOPS && d.kind() != config::Data::PATHFINDER) {
    if (!d.has_path())
      fail("data.path", "is required for data.kind " + config::Data::Kind_Name(d.kind()));
    std::error_code ec;
    if (!std::filesystem::exists(d.path(), ec)) {
      fail("data.path",
           "'" + d.path() + "' does not exist" +
               (d.kind() == config::Data::TEXT || d.kind() == config::Data::KJV_TESTAMENT
                    ? " (the KJV corpus is made by scripts/setup.sh)"
                    : ""));
    }
  }
}

}  // namespace primal
