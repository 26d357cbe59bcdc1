// EventWriter and the TFRecord reader: what is written reads back, and damage is detected.
#include "trainer/tensorboard/event_writer.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "tests/data/temp_dir.h"
#include "trainer/tensorboard/record.h"

namespace primal::tensorboard {
namespace {

using primal::testing::TempDir;

std::vector<Event> read_events(const std::string& path) {
  std::vector<Event> events;
  for (const std::string& record : read_records(path)) {
    events.emplace_back();
    EXPECT_TRUE(events.back().ParseFromString(record));
  }
  return events;
}

// The message of the primal::Error that f throws; fails the test if it throws none.
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no primal::Error thrown";
  return "";
}

TEST(TfRecord, RecordsOfEverySizeRoundTrip) {
  TempDir dir;
  std::vector<std::string> data = {"", "x", std::string(255, 'a'), std::string(70000, '\0')};
  for (size_t i = 0; i < data[3].size(); ++i) data[3][i] = char(i * 131 % 251);
  std::string file;
  for (const auto& d : data) append_record(file, d);
  primal::testing::write_file(dir.file("records"), file);
  EXPECT_EQ(read_records(dir.file("records")), data);
}

TEST(TfRecord, EveryFlippedByteIsDetectedByItsCrcAtTheRecordOffset) {
  TempDir dir;
  const std::vector<std::string> data = {"first", "the second record", "3"};
  std::string file;
  std::vector<size_t> starts;
  for (const auto& d : data) {
    starts.push_back(file.size());
    append_record(file, d);
  }
  ASSERT_EQ(parse_records(file, "intact"), data);
  const std::string path = dir.file("damaged");
  for (size_t pos = 0; pos < file.size(); ++pos) {
    std::string damaged = file;
    damaged[pos] = char(damaged[pos] ^ 0xFF);
    primal::testing::write_file(path, damaged);
    const std::string message = error_of([&] { read_records(path); });
    const size_t r =
        size_t(std::upper_bound(starts.begin(), starts.end(), pos) - starts.begin()) - 1;
    const size_t in_record = pos - starts[r];
    // The length and its CRC are checked first, so a damaged length is never trusted.
    const char* which =
        in_record < kRecordHeaderBytes ? "length CRC mismatch" : "data CRC mismatch";
    EXPECT_NE(message.find(path + ": record at byte offset " + std::to_string(starts[r])),
              std::string::npos)
        << "byte " << pos << ": " << message;
    EXPECT_NE(message.find(which), std::string::npos) << "byte " << pos << ": " << message;
  }
}

TEST(TfRecord, TruncatedFileIsAnErrorAtTheLastRecord) {
  std::string file;
  append_record(file, "complete");
  const size_t second = file.size();
  append_record(file, "cut short");
  for (size_t keep : {second + 5, second + kRecordHeaderBytes + 3, file.size() - 1}) {
    const std::string message = error_of([&] { parse_records(file.substr(0, keep), "f"); });
    EXPECT_NE(message.find("f: record at byte offset " + std::to_string(second) + ": truncated"),
              std::string::npos)
        << message;
  }
}

TEST(TfRecord, MissingFileIsAnErrorNamingIt) {
  const std::string message = error_of([] { read_records("/nonexistent/events.out.tfevents.x"); });
  EXPECT_NE(message.find("/nonexistent/events.out.tfevents.x: cannot open"), std::string::npos)
      << message;
}

TEST(EventWriter, FileIsNamedLikeTensorFlowsAndStartsWithTheFileVersion) {
  TempDir dir;
  const std::string logdir = dir.file("run/nested");  // created, parents too
  const double before = double(std::time(nullptr));
  std::string path;
  {
    EventWriter writer(logdir);
    path = writer.path();
  }
  const std::string name = std::filesystem::path(path).filename().string();
  std::smatch m;
  ASSERT_TRUE(std::regex_match(name, m,
                               std::regex(R"(events\.out\.tfevents\.(\d{10})\..+\.(\d+)\.primal)")))
      << name;
  EXPECT_EQ(std::filesystem::path(path).parent_path().string(), logdir);
  EXPECT_NEAR(std::stod(m[1]), before, 5.0);
  EXPECT_EQ(std::stol(m[2]), long(getpid()));
  const std::vector<Event> events = read_events(path);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].file_version(), "brain.Event:2");
  EXPECT_EQ(events[0].step(), 0);
  EXPECT_NEAR(events[0].wall_time(), before, 5.0);
}

TEST(EventWriter, ScalarsRoundTripWithTagFloatValueAndStep) {
  TempDir dir;
  struct Scalar {
    std::string tag;
    double value;
    int64_t step;
  };
  const std::vector<Scalar> scalars = {{"train/loss", 2.5, 0},
                                       {"train/loss", 0.1, 1},
                                       {"lr", 3e-4, 1},
                                       {"tokens_per_s", 123456.789, 7},
                                       {"neg", -1e-30, int64_t(1) << 40},
                                       {"nan", std::nan(""), 3}};
  std::string path;
  {
    EventWriter writer(dir.path());
    for (const auto& s : scalars) writer.add_scalar(s.tag, s.value, s.step);
    path = writer.path();
  }
  const std::vector<Event> events = read_events(path);
  ASSERT_EQ(events.size(), scalars.size() + 1);
  for (size_t i = 0; i < scalars.size(); ++i) {
    const Event& e = events[i + 1];
    EXPECT_EQ(e.step(), scalars[i].step);
    ASSERT_TRUE(e.has_summary());
    ASSERT_EQ(e.summary().value_size(), 1);
    const Summary::Value& v = e.summary().value(0);
    EXPECT_EQ(v.tag(), scalars[i].tag);
    ASSERT_EQ(v.value_case(), Summary::Value::kSimpleValue);
    if (std::isnan(scalars[i].value)) {
      EXPECT_TRUE(std::isnan(v.simple_value()));
    } else {
      EXPECT_EQ(v.simple_value(), float(scalars[i].value)) << scalars[i].tag;
    }
    EXPECT_GE(e.wall_time(), events[0].wall_time());
  }
}

TEST(EventWriter, DefaultBucketsAreTensorFlowsSymmetricGeometricLimits) {
  const std::vector<double>& limits = default_bucket_limits();
  ASSERT_EQ(limits.size(), 1551u);
  EXPECT_TRUE(std::is_sorted(limits.begin(), limits.end()));
  EXPECT_EQ(limits.front(), -DBL_MAX);
  EXPECT_EQ(limits.back(), DBL_MAX);
  EXPECT_EQ(limits[775], 0.0);
  EXPECT_EQ(limits[776], 1e-12);
  EXPECT_DOUBLE_EQ(limits[777], 1.1e-12);
  for (size_t i = 0; i < limits.size(); ++i) EXPECT_EQ(limits[i], -limits[limits.size() - 1 - i]);
}

// The folded buckets of h, expanded to one count per default bucket.
std::vector<double> unfold(const HistogramProto& h) {
  const std::vector<double>& limits = default_bucket_limits();
  std::vector<double> counts(limits.size(), 0.0);
  size_t at = 0;
  for (int j = 0; j < h.bucket_limit_size(); ++j) {
    while (at < limits.size() && limits[at] != h.bucket_limit(j)) ++at;
    EXPECT_LT(at, limits.size()) << "bucket limit " << h.bucket_limit(j) << " is no default limit";
    if (at == limits.size()) break;
    counts[at] = h.bucket(j);
  }
  return counts;
}

TEST(EventWriter, HistogramHasExactMomentsAndEveryValueInItsBucket) {
  TempDir dir;
  const std::vector<float> values = {-3.5f, -1e-13f, 0.0f, 0.0f, 1.0f, 1.05f, 2.0f, 1e30f, 0.3f};
  std::string path;
  {
    EventWriter writer(dir.path());
    writer.add_histogram("lambda/layer0", values.data(), values.size(), 42);
    path = writer.path();
  }
  const std::vector<Event> events = read_events(path);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].step(), 42);
  const Summary::Value& v = events[1].summary().value(0);
  EXPECT_EQ(v.tag(), "lambda/layer0");
  ASSERT_EQ(v.value_case(), Summary::Value::kHisto);
  const HistogramProto& h = v.histo();
  double sum = 0, sum_squares = 0;
  for (float x : values) {
    sum += double(x);
    sum_squares += double(x) * double(x);
  }
  EXPECT_EQ(h.num(), 9.0);
  EXPECT_EQ(h.min(), -3.5);
  EXPECT_EQ(h.max(), double(1e30f));
  EXPECT_EQ(h.sum(), sum);
  EXPECT_DOUBLE_EQ(h.sum_squares(), sum_squares);
  // Runs of empty buckets are folded: no two empty buckets in a row.
  for (int j = 1; j < h.bucket_size(); ++j) EXPECT_FALSE(h.bucket(j - 1) == 0 && h.bucket(j) == 0);
  // Each value lies in the default bucket [limit[i-1], limit[i]); count them by linear search.
  const std::vector<double>& limits = default_bucket_limits();
  std::vector<double> expected(limits.size(), 0.0);
  for (float x : values) {
    size_t i = 0;
    while (!(double(x) < limits[i])) ++i;
    expected[i] += 1.0;
  }
  EXPECT_EQ(unfold(h), expected);
  // The bucket edges TensorFlow uses: -1e-13 lies in [-1e-12, 0), 0 in [0, 1e-12), 1e30 in
  // [1e20-ish, DBL_MAX).
  EXPECT_EQ(expected[775], 1.0);
  EXPECT_EQ(expected[776], 2.0);
  EXPECT_EQ(expected[1550], 1.0);
}

TEST(EventWriter, EmptyHistogramHasNoCountsAndDoubleValuesWork) {
  TempDir dir;
  std::string path;
  {
    EventWriter writer(dir.path());
    writer.add_histogram("empty", static_cast<const double*>(nullptr), 0, 1);
    const std::vector<double> values = {1e-300, -1e300};
    writer.add_histogram("double", values.data(), values.size(), 2);
    path = writer.path();
  }
  const std::vector<Event> events = read_events(path);
  ASSERT_EQ(events.size(), 3u);
  const HistogramProto& empty = events[1].summary().value(0).histo();
  EXPECT_EQ(empty.num(), 0.0);
  ASSERT_EQ(empty.bucket_size(), 1);
  EXPECT_EQ(empty.bucket(0), 0.0);
  const HistogramProto& d = events[2].summary().value(0).histo();
  EXPECT_EQ(d.min(), -1e300);
  EXPECT_EQ(d.max(), 1e-300);
  EXPECT_EQ(d.num(), 2.0);
}

TEST(EventWriter, NonFiniteHistogramValueIsAnErrorNamingTagStepAndIndex) {
  TempDir dir;
  EventWriter writer(dir.path());
  const std::vector<float> values = {1.0f, 2.0f, std::nanf(""), 3.0f};
  const std::string message =
      error_of([&] { writer.add_histogram("grad/w", values.data(), values.size(), 9); });
  EXPECT_NE(message.find(writer.path() + ": histogram 'grad/w' at step 9: value 2 is nan"),
            std::string::npos)
      << message;
  const std::vector<double> inf = {INFINITY};
  EXPECT_NE(error_of([&] { writer.add_histogram("x", inf.data(), 1, 0); }).find("value 0 is inf"),
            std::string::npos);
}

TEST(EventWriter, RecordsAreBufferedUntilFlushEveryRecordsOrFlush) {
  TempDir dir;
  std::string path;
  {
    EventWriter writer(dir.path(), /*flush_every=*/3);
    path = writer.path();
    EXPECT_EQ(read_records(path).size(), 1u);  // the file version, written at once
    writer.add_scalar("a", 1, 1);
    writer.add_scalar("a", 2, 2);
    EXPECT_EQ(read_records(path).size(), 1u);
    writer.add_scalar("a", 3, 3);
    EXPECT_EQ(read_records(path).size(), 4u);
    writer.add_scalar("a", 4, 4);
    writer.flush();
    EXPECT_EQ(read_records(path).size(), 5u);
    writer.add_scalar("a", 5, 5);
    EXPECT_EQ(read_records(path).size(), 5u);
  }
  EXPECT_EQ(read_records(path).size(), 6u);  // the destructor flushed the last one
}

TEST(EventWriter, AddAfterCloseIsAnErrorAndCloseIsIdempotent) {
  TempDir dir;
  EventWriter writer(dir.path());
  writer.add_scalar("a", 1, 1);
  writer.close();
  writer.close();
  EXPECT_NE(error_of([&] { writer.add_scalar("a", 2, 2); }).find(writer.path()), std::string::npos);
  EXPECT_EQ(read_records(writer.path()).size(), 2u);
}

TEST(EventWriter, UncreatableLogdirIsAnErrorNamingIt) {
  TempDir dir;
  primal::testing::write_file(dir.file("plain_file"), "not a directory");
  const std::string logdir = dir.file("plain_file") + "/run";
  const std::string message = error_of([&] { EventWriter writer(logdir); });
  EXPECT_NE(message.find(logdir + ": cannot create the TensorBoard log directory"),
            std::string::npos)
      << message;
}

TEST(EventWriter, SecondWriterInTheSameSecondDoesNotClobberTheFirst) {
  TempDir dir;
  for (int attempt = 0; attempt < 5; ++attempt) {  // until both fall in one second
    EventWriter first(dir.file(std::to_string(attempt)));
    first.add_scalar("kept", 1, 1);
    first.flush();
    try {
      EventWriter second(dir.file(std::to_string(attempt)));
      continue;  // the clock ticked between the two: different names
    } catch (const Error& e) {
      EXPECT_NE(
          std::string(e.what()).find(first.path() + ": cannot create the event file: File exists"),
          std::string::npos)
          << e.what();
    }
    EXPECT_EQ(read_records(first.path()).size(), 2u);
    return;
  }
  FAIL() << "never two writers within one second";
}

// A file-size limit makes write() fail with EFBIG part-way through a record (SIGXFSZ ignored).
TEST(EventWriter, WriteFailureNamesTheFileAndALaterFlushCompletesTheRecord) {
  TempDir dir;
  EventWriter writer(dir.path(), /*flush_every=*/1000);
  std::vector<double> values(20000);
  for (size_t i = 0; i < values.size(); ++i) values[i] = std::pow(1.001, double(i)) - 5.0;
  writer.add_histogram("wide", values.data(), values.size(), 1);
  writer.add_scalar("after", 7, 2);

  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit old_limit{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  rlimit small = old_limit;
  small.rlim_cur = std::filesystem::file_size(writer.path()) + 100;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  const std::string message = error_of([&] { writer.flush(); });
  setrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_NE(message.find(writer.path() + ": write failed: File too large"), std::string::npos)
      << message;

  writer.flush();  // the bytes not written before are written now, after those that were
  const std::vector<Event> events = read_events(writer.path());
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[1].summary().value(0).histo().num(), 20000.0);
  EXPECT_EQ(events[2].summary().value(0).simple_value(), 7.0f);
}

}  // namespace
}  // namespace primal::tensorboard
