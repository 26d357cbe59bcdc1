// tb_write_sample LOGDIR MANIFEST: writes an event file of known scalars and histograms into
// LOGDIR, and lists what it wrote in MANIFEST for tensorboard_reads_events.py to check:
//   file <event file path>
//   scalar <tag> <step> <value as written, a float in C's %a hex notation>
//   histogram <tag> <step> <n> <value 0> ... <value n-1>   (doubles in %a notation)
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <numbers>
#include <string>
#include <vector>

#include "core/error.h"
#include "trainer/tensorboard/event_writer.h"

namespace {

using primal::tensorboard::EventWriter;

struct Sample {
  EventWriter writer;
  std::FILE* manifest;

  void scalar(const std::string& tag, double value, int64_t step) {
    writer.add_scalar(tag, value, step);
    std::fprintf(manifest, "scalar %s %lld %a\n", tag.c_str(), static_cast<long long>(step),
                 double(float(value)));
  }
  template <typename T>
  void histogram(const std::string& tag, const std::vector<T>& values, int64_t step) {
    writer.add_histogram(tag, values.data(), values.size(), step);
    std::fprintf(manifest, "histogram %s %lld %zu", tag.c_str(), static_cast<long long>(step),
                 values.size());
    for (T v : values) std::fprintf(manifest, " %a", double(v));
    std::fprintf(manifest, "\n");
  }
};

// A fixed pseudo-random sequence in [-1, 1), the same on every machine.
double lcg(uint64_t& state) {
  state = state * 6364136223846793005ull + 1442695040888963407ull;
  return double(state >> 11) / double(1ull << 52) - 1.0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: tb_write_sample LOGDIR MANIFEST\n");
    return 2;
  }
  try {
    std::FILE* manifest = std::fopen(argv[2], "w");
    if (!manifest) throw primal::Error(argv[2], "cannot create the manifest");
    Sample s{EventWriter(argv[1], /*flush_every=*/4), manifest};
    std::fprintf(manifest, "file %s\n", s.writer.path().c_str());

    // Curves as a training run writes them, with values that float32 cannot hold exactly.
    for (int step = 0; step < 20; ++step) {
      s.scalar("train/loss", 5.0 * std::exp(-step / 7.0) + 0.1, step);
      s.scalar("train/lr", 3e-4 * 0.5 * (1.0 + std::cos(std::numbers::pi * step / 20.0)), step);
      if (step % 5 == 4) s.scalar("eval/perplexity", std::exp(3.0 - step / 10.0), step);
    }
    // The edges of float32 and of int64 steps.
    s.scalar("edge/tiny_subnormal", 1e-40, 1);
    s.scalar("edge/huge", 3e38, 2);
    s.scalar("edge/negative", -0.1, 3);
    s.scalar("edge/big_step", 1.0 / 3.0, int64_t(1) << 40);

    uint64_t state = 12345;
    for (int64_t step : {0, 10}) {
      std::vector<float> lambda(1000);
      for (float& v : lambda) v = float(lcg(state) * (1.0 + double(step)));
      s.histogram("lambda/layer0", lambda, step);
    }
    std::vector<double> norms(300);
    for (double& v : norms) v = std::exp(8.0 * lcg(state));  // many decades, all positive
    s.histogram("grad_norm/all", norms, 10);

    s.writer.close();
    if (std::fclose(manifest) != 0) throw primal::Error(argv[2], "cannot write the manifest");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
