#include "trainer/tensorboard/event_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iostream>

#include "core/error.h"
#include "trainer/tensorboard/record.h"

namespace primal::tensorboard {
namespace {

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

std::string hostname() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

std::string errno_text(const char* what) {
  return std::string(what) + ": " + std::strerror(errno);
}

}  // namespace

const std::vector<double>& default_bucket_limits() {
  static const std::vector<double> limits = [] {
    // Each bucket 10% wider than the one nearer zero, as in TensorFlow's
    // core/lib/histogram/histogram.cc, so that TensorBoard shows any magnitude alike.
    std::vector<double> positive;
    for (double v = 1.0e-12; v < 1.0e20; v *= 1.1) positive.push_back(v);
    positive.push_back(DBL_MAX);
    std::vector<double> all;
    all.reserve(2 * positive.size() + 1);
    for (auto it = positive.rbegin(); it != positive.rend(); ++it) all.push_back(-*it);
    all.push_back(0.0);
    all.insert(all.end(), positive.begin(), positive.end());
    return all;
  }();
  return limits;
}

template <typename T>
HistogramProto make_histogram(const T* values, size_t n, const std::string& what) {
  const std::vector<double>& limits = default_bucket_limits();
  std::vector<double> counts(limits.size(), 0.0);
  double lo = 0.0, hi = 0.0, sum = 0.0, sum_squares = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double v = double(values[i]);
    if (!std::isfinite(v)) {
      throw Error(what, "value " + std::to_string(i) + " is " + std::to_string(v) +
                            ", which no histogram bucket holds");
    }
    lo = i == 0 ? v : std::min(lo, v);
    hi = i == 0 ? v : std::max(hi, v);
    sum += v;
    sum_squares += v * v;
    // The first limit above v; v < DBL_MAX, so there is one.
    counts[size_t(std::upper_bound(limits.begin(), limits.end(), v) - limits.begin())] += 1.0;
  }
  HistogramProto h;
  h.set_min(lo);
  h.set_max(hi);
  h.set_num(double(n));
  h.set_sum(sum);
  h.set_sum_squares(sum_squares);
  // A run of empty buckets becomes one empty bucket ending where the run ends, so the file
  // holds only the occupied buckets and the gaps between them.
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] == 0.0) {
      while (i + 1 < counts.size() && counts[i + 1] == 0.0) ++i;
    }
    h.add_bucket_limit(limits[i]);
    h.add_bucket(counts[i]);
  }
  return h;
}

template HistogramProto make_histogram(const float*, size_t, const std::string&);
template HistogramProto make_histogram(const double*, size_t, const std::string&);

EventWriter::EventWriter(const std::string& logdir, int flush_every)
    : flush_every_(std::max(flush_every, 1)) {
  std::error_code ec;
  std::filesystem::create_directories(logdir, ec);
  if (ec) throw Error(logdir, "cannot create the TensorBoard log directory: " + ec.message());
  char name[512];
  std::snprintf(name, sizeof name, "events.out.tfevents.%010lld.%s.%lld.primal",
                static_cast<long long>(std::time(nullptr)), hostname().c_str(),
                static_cast<long long>(getpid()));
  path_ = (std::filesystem::path(logdir) / name).string();
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(path_, errno_text("cannot create the event file"));
  Event version;
  version.set_file_version("brain.Event:2");
  try {
    add_event(std::move(version));
    flush();
  } catch (const Error&) {
    ::close(fd_);  // no destructor runs after a constructor throws
    throw;
  }
}

EventWriter::~EventWriter() {
  try {
    close();
  } catch (const Error& e) {
    std::cerr << e.what() << " (the buffered records are lost)\n";
    ::close(fd_);
  }
}

Summary::Value* EventWriter::value_event(Event& event, const std::string& tag, int64_t step) {
  event.set_step(step);
  Summary::Value* v = event.mutable_summary()->add_value();
  v->set_tag(tag);
  return v;
}

void EventWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  Event event;
  value_event(event, tag, step)->set_simple_value(float(value));
  add_event(std::move(event));
}

template <typename T>
void EventWriter::add_histogram_of(const std::string& tag, const T* values, size_t n,
                                   int64_t step) {
  Event event;
  *value_event(event, tag, step)->mutable_histo() = make_histogram(
      values, n, path_ + ": histogram '" + tag + "' at step " + std::to_string(step));
  add_event(std::move(event));
}

void EventWriter::add_histogram(const std::string& tag, const float* values, size_t n,
                                int64_t step) {
  add_histogram_of(tag, values, n, step);
}

void EventWriter::add_histogram(const std::string& tag, const double* values, size_t n,
                                int64_t step) {
  add_histogram_of(tag, values, n, step);
}

void EventWriter::add_event(Event event) {
  if (fd_ < 0) throw Error(path_, "event written after close()");
  if (event.wall_time() == 0.0) event.set_wall_time(now_seconds());
  append_record(buffer_, event.SerializeAsString());
  if (++buffered_records_ >= flush_every_) flush();
}

void EventWriter::flush() {
  if (fd_ < 0) return;
  size_t done = 0;
  while (done < buffer_.size()) {
    const ssize_t n = ::write(fd_, buffer_.data() + done, buffer_.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // Keep what was not written, so a later flush() retries it after the bytes that were.
      buffer_.erase(0, done);
      throw Error(path_, errno_text("write failed"));
    }
    done += size_t(n);
  }
  buffer_.clear();
  buffered_records_ = 0;
}

void EventWriter::close() {
  if (fd_ < 0) return;
  flush();  // on failure the file stays open, so that close() can be called again
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) throw Error(path_, errno_text("close failed"));
}

}  // namespace primal::tensorboard
