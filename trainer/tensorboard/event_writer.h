// EventWriter: scalars and histograms in a TensorBoard event file, without TensorFlow.
//
//   EventWriter tb(logdir);  // logdir/events.out.tfevents.<secs>.<host>.<pid>.primal
//   tb.add_scalar("train/loss", loss, step);
//   tb.add_histogram("lambda/layer0", lambda.data(), lambda.size(), step);
//   tb.flush();              // e.g. after each evaluation
//
// The file is a sequence of TFRecords (record.h), each a serialized Event (tensorboard.proto);
// the first says file_version "brain.Event:2". Not thread-safe: one writer per run, on rank 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "trainer/tensorboard/tensorboard.pb.h"

namespace primal::tensorboard {

class EventWriter {
 public:
  // Creates logdir (and its parents) if needed and a new event file in it, and writes the
  // file_version record at once. Later records are buffered in memory and written every
  // flush_every records, on flush() and on close(). A file of the same name must not exist
  // (two writers in one logdir within the same second of the same process).
  explicit EventWriter(const std::string& logdir, int flush_every = 64);
  // Closes; an error writing the last records is printed to stderr (a destructor cannot throw).
  ~EventWriter();
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;

  // One Summary value {tag, simple_value}. TensorBoard stores scalars as float32, so value is
  // rounded to float; NaN and infinities are written as they are.
  void add_scalar(const std::string& tag, double value, int64_t step);

  // One Summary value {tag, histo} of n values in TensorBoard's default buckets (see
  // make_histogram). A NaN or infinite value cannot be put in a bucket: primal::Error naming
  // the tag, step and index.
  void add_histogram(const std::string& tag, const float* values, size_t n, int64_t step);
  void add_histogram(const std::string& tag, const double* values, size_t n, int64_t step);

  // Any event; wall_time is filled in with the current time if it is 0.
  void add_event(Event event);

  // Hands the buffered records to the operating system (no fsync): a TensorBoard watching the
  // directory sees them. primal::Error naming the file if the write fails.
  void flush();
  // flush(), then closes the file; further add_* calls are errors. If the flush fails the file
  // stays open and close() may be called again. Called by the destructor.
  void close();

  const std::string& path() const { return path_; }

 private:
  // A fresh event at step holding one summary value tagged tag; returns the value to fill.
  static Summary::Value* value_event(Event& event, const std::string& tag, int64_t step);
  template <typename T>
  void add_histogram_of(const std::string& tag, const T* values, size_t n, int64_t step);
  std::string path_;
  int fd_ = -1;
  int flush_every_;
  int buffered_records_ = 0;
  std::string buffer_;
};

// TensorBoard's default histogram buckets (those of TensorFlow's Histogram class): limits at
// +-1e-12 * 1.1^k up to 1e20, 0, and +-DBL_MAX at the ends; bucket i counts the values v with
// limit[i-1] <= v < limit[i]. 1551 limits.
const std::vector<double>& default_bucket_limits();

// The HistogramProto of n values: min, max, num, sum and sum of squares (accumulated in double
// in index order), and the counts in default_bucket_limits(), each run of empty buckets folded
// into its last one as TensorFlow writes them. Throws primal::Error on a NaN or infinity, naming
// `what` and the index.
template <typename T>  // float or double
HistogramProto make_histogram(const T* values, size_t n, const std::string& what);

}  // namespace primal::tensorboard
