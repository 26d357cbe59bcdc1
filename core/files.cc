#include "core/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

#include "core/error.h"

namespace primal {
namespace {

std::string sys_error() {
  return std::strerror(errno);
}

}  // namespace

OutputFile::OutputFile(std::string path)
    : path_(std::move(path)),
      fd_(::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) {
  if (fd_ < 0) throw Error(path_, "cannot create: " + sys_error());
}

OutputFile::~OutputFile() {
  ::close(fd_);
}

void OutputFile::write(const void* data, int64_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, size_t(std::min<int64_t>(n, int64_t(1) << 30)));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error(path_, "write failed: " + sys_error());
    }
    p += w;
    n -= w;
  }
}

void OutputFile::sync() {
  if (::fsync(fd_) != 0) throw Error(path_, "fsync failed: " + sys_error());
}

void sync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw Error(dir, "cannot open the directory: " + sys_error());
  const int rc = ::fsync(fd);
  const std::string reason = rc != 0 ? sys_error() : "";
  ::close(fd);
  if (rc != 0) throw Error(dir, "fsync failed: " + reason);
}

void rename_path(const std::string& from, const std::string& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0) {
    throw Error(to, "cannot rename " + from + " to it: " + sys_error());
  }
}

std::string durable_temp_path(const std::string& path) {
  const std::filesystem::path p(path);
  std::string name = ".";
  name.append(p.filename().string()).append(".tmp");
  return (p.parent_path() / name).string();
}

void write_file_durably(const std::string& path, const std::function<void(OutputFile&)>& write) {
  const std::string tmp = durable_temp_path(path);
  try {
    {
      OutputFile file(tmp);
      write(file);
      file.sync();
    }
    rename_path(tmp, path);
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw;
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  sync_directory(dir.empty() ? "." : dir);
}

void write_file_durably(const std::string& path, std::string_view bytes) {
  write_file_durably(path, [bytes](OutputFile& file) { file.write(bytes); });
}

}  // namespace primal
