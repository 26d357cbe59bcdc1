#include "launch/spectrum.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "trainer/spectrum.h"

namespace primal {
namespace {

// How many mean normalised singular values exceed threshold.
size_t above(const LayerSpectrum& l, double threshold) {
  size_t n = 0;
  for (size_t i = 0; i < l.size(); ++i) n += l.mean(i) > threshold;
  return n;
}

}  // namespace

int run_spectrum(Transformer<float>& model, const Dataset& data, int batches, int batch_size,
                 const std::string& out_prefix) {
  if (batches < 1)
    throw Error("spectrum: --batches must be at least 1, got " + std::to_string(batches));
  if (batch_size < 1) {
    throw Error("spectrum: the batch size must be at least 1, got " + std::to_string(batch_size));
  }
  const int64_t total = std::min(data.eval_size(DataSplit::kVal), int64_t(batches) * batch_size);
  if (total <= 0) throw Error("spectrum: the validation split is empty");
  const std::filesystem::path parent = std::filesystem::path(out_prefix).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);

  AttentionSpectrum spectrum(model);
  Arena arena;
  Batch batch;
  for (int64_t first = 0; first < total; first += batch_size) {
    const int count = int(std::min<int64_t>(batch_size, total - first));
    data.eval_batch(DataSplit::kVal, first, count, batch);
    arena.reset();
    model.forward(arena, batch, 0, /*training=*/false);
    spectrum.add_last_forward(batch);
  }
  write_spectrum_csv(out_prefix + ".csv", spectrum.layers());
  const std::string name = std::filesystem::path(out_prefix).filename().string();
  write_spectrum_svg(out_prefix + ".svg", spectrum_lines(spectrum.layers()),
                     "Attention spectrum: " + name + " (" + std::to_string(spectrum.samples()) +
                         " validation samples)");
  for (const LayerSpectrum& l : spectrum.layers()) {
    double sum = 0;
    for (size_t i = 0; i < l.size(); ++i) sum += l.mean(i);
    std::printf(
        "spectrum: layer %d %-7s | %zu values | sum %.3f | %zu above 1e-2 | %zu above "
        "1e-6\n",
        l.layer, kind_name(l.kind), l.size(), sum, above(l, 1e-2), above(l, 1e-6));
  }
  std::printf("spectrum: %lld samples -> %s.csv, %s.svg\n", (long long)spectrum.samples(),
              out_prefix.c_str(), out_prefix.c_str());
  std::fflush(stdout);
  return 0;
}

int plot_spectrum_csvs(const std::vector<std::string>& csvs, const std::vector<std::string>& labels,
                       const std::string& svg_path, const std::string& title) {
  check(csvs.size() == labels.size(), "plot_spectrum_csvs: one label per CSV");
  std::vector<SpectrumLine> lines;
  for (size_t k = 0; k < csvs.size(); ++k) {
    for (SpectrumLine& l : spectrum_lines(read_spectrum_csv(csvs[k]), labels[k] + " ")) {
      lines.push_back(std::move(l));
    }
  }
  write_spectrum_svg(svg_path, lines, title);
  return 0;
}

}  // namespace primal
