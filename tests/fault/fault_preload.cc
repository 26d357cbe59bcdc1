// A fault-injecting LD_PRELOAD library for the disk-fault tests (tests/fault/fault_test.py):
// makes one kind of file-system call on matching paths fail, or stop until the test has
// changed the file system under it (remounted it read-only, shut it down), at a chosen call.
// Configured by the environment of the process it is preloaded into:
//
//   PRIMAL_FAULT_PATH   text: only calls on paths that contain it are counted (for write,
//                       pwrite, fsync: the descriptor's path, from /proc/self/fd)
//   PRIMAL_FAULT_CALL   open | write | fsync | rename | mkdir: the calls counted (open: open,
//                       openat, creat; write: write, pwrite; and the *64 names of these;
//                       fsync: fsync, fdatasync; rename: rename, renameat, renameat2, on
//                       either path; mkdir: mkdir, mkdirat)
//   PRIMAL_FAULT_AT     N: the Nth counted call is the faulty one (default 1)
//   PRIMAL_FAULT_ERRNO  EIO, ENOSPC, EROFS, EDQUOT: that call and every later counted one
//                       fail with this errno, without being made (a failed disk stays failed)
//   PRIMAL_FAULT_PAUSE  FIFO prefix P: at the Nth call, write "CALL PATH\n" to the FIFO
//                       P.paused, then wait for a byte on the FIFO P.resume before going on
//                       (with the real call, or the errno above). No sleeps: the test changes
//                       the file system while the process is blocked in its save. P.paused
//                       must be open for reading already; no byte on P.resume within 120 s
//                       (the test died): the call fails with EIO.
//   PRIMAL_FAULT_RANK   only in the process whose OMPI_COMM_WORLD_RANK (or PMIX_RANK) is this
//   PRIMAL_FAULT_LOG    a file that gets one line per injected failure or pause
//
// Nothing is printed: the program's own error message is what the tests check.
#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

enum class Call { kNone, kOpen, kWrite, kFsync, kRename, kMkdir };

struct Config {
  bool active = false;
  Call call = Call::kNone;
  std::string path;
  long at = 1;
  int error = 0;
  std::string pause;
  std::string log;
};

Call call_named(const char* name) {
  static const struct {
    const char* name;
    Call call;
  } kCalls[] = {{"open", Call::kOpen},
                {"write", Call::kWrite},
                {"fsync", Call::kFsync},
                {"rename", Call::kRename},
                {"mkdir", Call::kMkdir}};
  for (const auto& c : kCalls) {
    if (std::strcmp(name, c.name) == 0) return c.call;
  }
  return Call::kNone;
}

int errno_named(const char* name) {
  static const struct {
    const char* name;
    int value;
  } kErrors[] = {{"EIO", EIO}, {"ENOSPC", ENOSPC}, {"EROFS", EROFS}, {"EDQUOT", EDQUOT}};
  for (const auto& e : kErrors) {
    if (std::strcmp(name, e.name) == 0) return e.value;
  }
  return 0;
}

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

Config read_config() {
  Config c;
  const char* path = env("PRIMAL_FAULT_PATH");
  const char* call = env("PRIMAL_FAULT_CALL");
  if (!path || !call) return c;
  if (const char* rank = env("PRIMAL_FAULT_RANK")) {
    const char* mine = env("OMPI_COMM_WORLD_RANK");
    if (!mine) mine = env("PMIX_RANK");
    if (!mine || std::strcmp(mine, rank) != 0) return c;
  }
  c.call = call_named(call);
  c.path = path;
  if (const char* at = env("PRIMAL_FAULT_AT")) c.at = std::atol(at);
  if (const char* e = env("PRIMAL_FAULT_ERRNO")) c.error = errno_named(e);
  if (const char* p = env("PRIMAL_FAULT_PAUSE")) c.pause = p;
  if (const char* l = env("PRIMAL_FAULT_LOG")) c.log = l;
  c.active = c.call != Call::kNone && c.at >= 1 && (c.error != 0 || !c.pause.empty());
  return c;
}

const Config& config() {
  static const Config c = read_config();
  return c;
}

template <typename Fn>
Fn real(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
}

using WriteFn = ssize_t (*)(int, const void*, size_t);
using OpenFn = int (*)(const char*, int, ...);
using CloseFn = int (*)(int);
using ReadFn = ssize_t (*)(int, void*, size_t);

// Writes one line to a file or FIFO with the real calls (never counted).
void write_line(const std::string& path, const std::string& line, int flags) {
  static const OpenFn open_fn = real<OpenFn>("open");
  static const WriteFn write_fn = real<WriteFn>("write");
  static const CloseFn close_fn = real<CloseFn>("close");
  const int fd = open_fn(path.c_str(), flags | O_CLOEXEC, 0644);
  if (fd < 0) return;
  write_fn(fd, line.data(), line.size());
  close_fn(fd);
}

// Blocks until the test writes a byte to P.resume. Returns false when none came within
// kPauseLimitS (the test died): the held call then fails instead of waiting forever.
constexpr int kPauseLimitS = 120;
bool pause_here(const std::string& what) {
  static const OpenFn open_fn = real<OpenFn>("open");
  static const ReadFn read_fn = real<ReadFn>("read");
  static const CloseFn close_fn = real<CloseFn>("close");
  const Config& c = config();
  // Non-blocking opens: the test holds .paused open for reading from before the start, and a
  // reader of .resume polls until the test writes (no writer yet is not an end of file).
  // .resume is open before the test hears of the hold, so its release always finds a reader.
  const int fd = open_fn((c.pause + ".resume").c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return false;
  write_line(c.pause + ".paused", what + "\n", O_WRONLY | O_NONBLOCK);
  pollfd p{fd, POLLIN, 0};
  int ready;
  while ((ready = poll(&p, 1, kPauseLimitS * 1000)) < 0 && errno == EINTR) {
  }
  char byte;
  const bool resumed = ready == 1 && read_fn(fd, &byte, 1) == 1;
  close_fn(fd);
  return resumed;
}

std::atomic<long> g_counted{0};

// Whether this call on path (or path2, the other side of a rename) is counted, and then what
// to do: 0 make the real call, else fail with that errno. Pauses first at the Nth call when
// asked to.
int decide(Call call, const char* path, const char* path2 = nullptr) {
  const Config& c = config();
  if (!c.active || call != c.call) return 0;
  auto matches = [&](const char* p) { return p && std::strstr(p, c.path.c_str()); };
  if (!matches(path) && !matches(path2)) return 0;
  const long n = ++g_counted;
  if (n < c.at) return 0;
  static const char* kNames[] = {"", "open", "write", "fsync", "rename", "mkdir"};
  const std::string what = std::string(kNames[int(call)]) + " " + (matches(path) ? path : path2);
  if (n == c.at && !c.pause.empty()) {
    if (!c.log.empty())
      write_line(c.log, "paused at " + what + "\n", O_WRONLY | O_CREAT | O_APPEND);
    if (!pause_here(what)) return EIO;
  }
  if (c.error && !c.log.empty()) {
    write_line(c.log, std::string(strerrorname_np(c.error)) + " from " + what + "\n",
               O_WRONLY | O_CREAT | O_APPEND);
  }
  return c.error;
}

// The path a descriptor names ("" when it cannot be read).
std::string fd_path(int fd) {
  char link[64], target[4096];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  const ssize_t n = readlink(link, target, sizeof target - 1);
  return n > 0 ? std::string(target, size_t(n)) : std::string();
}

int decide_fd(Call call, int fd) {
  const Config& c = config();
  if (!c.active || call != c.call) return 0;
  return decide(call, fd_path(fd).c_str());
}

bool has_mode(int flags) {
  return (flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE;
}

}  // namespace

#define PRIMAL_FAIL_IF(decision)    \
  do {                              \
    if (const int e = (decision)) { \
      errno = e;                    \
      return -1;                    \
    }                               \
  } while (0)

// mode_t mode: open(2)'s optional third argument, present only with O_CREAT or O_TMPFILE.
#define PRIMAL_MODE_ARGUMENT(flags, mode) \
  mode_t mode = 0;                        \
  if (has_mode(flags)) {                  \
    va_list ap;                           \
    va_start(ap, flags);                  \
    mode = va_arg(ap, mode_t);            \
    va_end(ap);                           \
  }

extern "C" {

int open(const char* path, int flags, ...) {
  static const OpenFn fn = real<OpenFn>("open");
  PRIMAL_MODE_ARGUMENT(flags, mode);
  PRIMAL_FAIL_IF(decide(Call::kOpen, path));
  return fn(path, flags, mode);
}

int openat(int dirfd, const char* path, int flags, ...) {
  using Fn = int (*)(int, const char*, int, ...);
  static const Fn fn = real<Fn>("openat");
  PRIMAL_MODE_ARGUMENT(flags, mode);
  PRIMAL_FAIL_IF(decide(Call::kOpen, path));
  return fn(dirfd, path, flags, mode);
}

// On x86-64 (off_t has 64 bits) the *64 functions are the plain ones under a second name.
int open64(const char* path, int flags, ...) __attribute__((alias("open")));
int openat64(int dirfd, const char* path, int flags, ...) __attribute__((alias("openat")));

// The plain wrappers: the real function unless `decision` names an errno.
#define PRIMAL_INTERPOSE(type, name, params, args, decision) \
  type name params {                                         \
    using Fn = type(*) params;                               \
    static const Fn fn = real<Fn>(#name);                    \
    PRIMAL_FAIL_IF(decision);                                \
    return fn args;                                          \
  }

PRIMAL_INTERPOSE(int, creat, (const char* path, mode_t mode), (path, mode),
                 decide(Call::kOpen, path))
PRIMAL_INTERPOSE(ssize_t, write, (int fd, const void* data, size_t n), (fd, data, n),
                 decide_fd(Call::kWrite, fd))
PRIMAL_INTERPOSE(ssize_t, pwrite, (int fd, const void* data, size_t n, off_t at), (fd, data, n, at),
                 decide_fd(Call::kWrite, fd))
PRIMAL_INTERPOSE(int, fsync, (int fd), (fd), decide_fd(Call::kFsync, fd))
PRIMAL_INTERPOSE(int, fdatasync, (int fd), (fd), decide_fd(Call::kFsync, fd))
PRIMAL_INTERPOSE(int, rename, (const char* from, const char* to), (from, to),
                 decide(Call::kRename, from, to))
PRIMAL_INTERPOSE(int, renameat, (int from_dir, const char* from, int to_dir, const char* to),
                 (from_dir, from, to_dir, to), decide(Call::kRename, from, to))
PRIMAL_INTERPOSE(int, renameat2,
                 (int from_dir, const char* from, int to_dir, const char* to, unsigned flags),
                 (from_dir, from, to_dir, to, flags), decide(Call::kRename, from, to))
PRIMAL_INTERPOSE(int, mkdir, (const char* path, mode_t mode), (path, mode),
                 decide(Call::kMkdir, path))
PRIMAL_INTERPOSE(int, mkdirat, (int dirfd, const char* path, mode_t mode), (dirfd, path, mode),
                 decide(Call::kMkdir, path))
ssize_t pwrite64(int fd, const void* data, size_t n, off64_t at) __attribute__((alias("pwrite")));

}  // extern "C"
