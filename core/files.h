// Writing the files that must survive a crash or a full disk, in one place (checkpoints,
// model.safetensors, metrics.jsonl): every write is checked, and a short write or an error
// (ENOSPC among them) names the file; a file counts as written only after fsync; a new or
// renamed directory entry is durable only after its directory's fsync.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace primal {

// A file opened for writing (created, or truncated, mode 0644); closed by the destructor.
class OutputFile {
 public:
  explicit OutputFile(std::string path);  // Error(path, "cannot create: ...")
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  // All n bytes, or Error(path, "write failed: <the system's reason>").
  void write(const void* data, int64_t n);
  void write(std::string_view bytes) { write(bytes.data(), int64_t(bytes.size())); }
  // fsync, or Error(path, "fsync failed: ...").
  void sync();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_;
};

// fsync of a directory: the entries created or renamed in it become durable.
void sync_directory(const std::string& dir);
// rename(from, to), or Error(to, "cannot rename <from> to it: ...").
void rename_path(const std::string& from, const std::string& to);

// Where write_file_durably stages path: ".<name>.tmp" beside it (hidden, as a checkpoint's
// temporary directories are).
std::string durable_temp_path(const std::string& path);
// Replaces path durably: write(file) writes the bytes into durable_temp_path(path), which is
// synced and renamed over path; then path's directory is synced. After a crash path holds its
// old or its new content, never a part; a failure removes the temporary file and leaves path
// as it was, and throws.
void write_file_durably(const std::string& path, const std::function<void(OutputFile&)>& write);
void write_file_durably(const std::string& path, std::string_view bytes);

}  // namespace primal
