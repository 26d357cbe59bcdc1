#include "trainer/spectrum.h"

#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/blas.h"
#include "core/error.h"
#include "model/attention_kinds.h"

namespace primal {

std::vector<double> singular_values(std::vector<double>& a, int rows, int cols) {
  check(int64_t(a.size()) == int64_t(rows) * cols, "singular_values: a is not rows x cols");
  std::vector<double> s(size_t(std::min(rows, cols)));
  if (s.empty()) return s;
  // Row-major rows x cols is column-major cols x rows: A^T, which has the same singular values.
  // jobz 'N': values only; u and vt are not referenced.
  double unused = 0;
  const lapack_int info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'N', cols, rows, a.data(), cols,
                                         s.data(), &unused, 1, &unused, 1);
  if (info != 0) {
    throw Error("singular_values: LAPACK dgesdd failed (info " + std::to_string(info) + ") on a " +
                std::to_string(rows) + " x " + std::to_string(cols) + " matrix");
  }
  return s;
}

AttentionSpectrum::AttentionSpectrum(Transformer<float>& model) : model_(model) {
  for (int i = 0; i < int(model.layers().size()); ++i) {
    layers_.push_back({i, model.layers()[i].kind(), {}, {}});
  }
}

void AttentionSpectrum::add_last_forward(const Batch& batch) {
  const int cls = model_.config().has_cls() ? 1 : 0;
  const int B = batch.B, N = batch.N + cls;
  for (LayerSpectrum& spectrum : layers_) {
    const Attention<float>& attn = model_.layers()[spectrum.layer].attention();
    const int H = attn.local_heads();
    // The normalised values of every (b, h), then summed in (b, h) order: the same result for
    // any number of threads.
    std::vector<std::vector<double>> normalised(size_t(B) * H);
    std::string error;
#pragma omp parallel for schedule(dynamic)
    for (int bh = 0; bh < B * H; ++bh) {
      const int b = bh / H, h = bh % H;
      const int n = batch.lengths.empty() ? N : batch.lengths[b] + cls;
      std::vector<double> m;
      try {
        attn.analysed_matrix(b, h, n, m);
        std::vector<double> sv = singular_values(m, n, n);
        if (sv.empty() || !(sv[0] > 0)) continue;  // an all-zero matrix has no shape to show
        const double largest = sv[0];
        for (double& v : sv) v /= largest;
        normalised[bh] = std::move(sv);
      } catch (const std::exception& e) {
#pragma omp critical
        error = e.what();
      }
    }
    if (!error.empty())
      throw Error("spectrum: layer " + std::to_string(spectrum.layer) + ": " + error);
    for (const std::vector<double>& sv : normalised) {
      if (spectrum.sum.size() < sv.size()) {
        spectrum.sum.resize(sv.size(), 0.0);
        spectrum.count.resize(sv.size(), 0);
      }
      for (size_t i = 0; i < sv.size(); ++i) {
        spectrum.sum[i] += sv[i];
        ++spectrum.count[i];
      }
    }
  }
  samples_ += B;
}

const char* kind_name(AttentionKind kind) {
  return attention_kind(kind).name;
}

void write_spectrum_csv(const std::string& path, const std::vector<LayerSpectrum>& layers) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) throw Error(path, "cannot open for writing");
  std::fprintf(f, "layer,kind,index,value\n");
  for (const LayerSpectrum& l : layers) {
    for (size_t i = 0; i < l.size(); ++i) {
      std::fprintf(f, "%d,%s,%zu,%.9e\n", l.layer, kind_name(l.kind), i + 1, l.mean(i));
    }
  }
  if (std::fclose(f) != 0) throw Error(path, "cannot write");
}

std::vector<LayerSpectrum> read_spectrum_csv(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path, "cannot open");
  std::string line;
  if (!std::getline(in, line) || line != "layer,kind,index,value") {
    throw Error(path + ":1", "want the header layer,kind,index,value");
  }
  std::vector<LayerSpectrum> layers;
  for (int number = 2; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    std::istringstream row(line);
    std::string layer, kind, index, value;
    std::getline(row, layer, ',');
    std::getline(row, kind, ',');
    std::getline(row, index, ',');
    std::getline(row, value);
    const std::string where = path + ":" + std::to_string(number);
    try {
      const int l = std::stoi(layer);
      const size_t i = std::stoul(index);
      const AttentionKindSpec* spec = find_attention_kind(kind);
      if (!spec) throw Error("kind " + kind + " (want one of " + attention_kind_names() + ")");
      if (layers.empty() || layers.back().layer != l) layers.push_back({l, spec->kind, {}, {}});
      LayerSpectrum& s = layers.back();
      if (i != s.size() + 1) throw Error("index " + index + " out of order");
      s.sum.push_back(std::stod(value));
      s.count.push_back(1);
    } catch (const std::exception& e) {
      throw Error(where, std::string("bad row '") + line + "': " + e.what());
    }
  }
  return layers;
}

std::vector<SpectrumLine> spectrum_lines(const std::vector<LayerSpectrum>& layers,
                                         const std::string& label_prefix) {
  std::vector<SpectrumLine> lines;
  for (const LayerSpectrum& l : layers) {
    SpectrumLine line{
        label_prefix + "layer " + std::to_string(l.layer) + " (" + kind_name(l.kind) + ")",
        l.kind,
        {}};
    for (size_t i = 0; i < l.size(); ++i) line.values.push_back(l.mean(i));
    lines.push_back(std::move(line));
  }
  return lines;
}

namespace {

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

}  // namespace

void write_spectrum_svg(const std::string& path, const std::vector<SpectrumLine>& lines,
                        const std::string& title) {
  // Plot area [left, left + w] x [top, top + h]; y = log10(value) from hi_exp down to lo_exp.
  // The right margin holds the legend ("Transformer layer 3 (SOFTMAX)" needs about 260 px).
  const double width = 820, height = 480, left = 70, right = 290, top = 40, bottom = 50;
  const double w = width - left - right, h = height - top - bottom;
  size_t n_max = 1;
  double lowest = 1, highest = 0;
  for (const SpectrumLine& l : lines) {
    n_max = std::max(n_max, l.values.size());
    for (double v : l.values) {
      if (v > 0) lowest = std::min(lowest, v);
      highest = std::max(highest, v);
    }
  }
  const int hi_exp = highest > 0 ? int(std::ceil(std::log10(highest) - 1e-12)) : 0;
  const int lo_exp =
      std::max(hi_exp - 8, std::min(hi_exp - 1, int(std::floor(std::log10(lowest)))));
  const double floor_value = std::pow(10.0, lo_exp);
  auto x_of = [&](size_t index) {  // 1-based index
    return left + (n_max <= 1 ? 0.0 : double(index - 1) / double(n_max - 1) * w);
  };
  auto y_of = [&](double v) {
    const double e = std::log10(std::max(v, floor_value));
    return top + (double(hi_exp) - e) / double(hi_exp - lo_exp) * h;
  };
  static const char* kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                   "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

  std::ostringstream svg;
  svg << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" viewBox=\"0 0 " << width << " " << height << "\" font-family=\"sans-serif\" "
      << "font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << left + w / 2 << "\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">"
      << xml_escape(title) << "</text>\n";
  // Axes, decade grid and ticks.
  svg << "<g stroke=\"#dddddd\">\n";
  for (int e = lo_exp; e <= hi_exp; ++e) {
    svg << "<line x1=\"" << left << "\" x2=\"" << left + w << "\" y1=\"" << y_of(std::pow(10.0, e))
        << "\" y2=\"" << y_of(std::pow(10.0, e)) << "\"/>\n";
  }
  svg << "</g>\n<g text-anchor=\"end\">\n";
  for (int e = lo_exp; e <= hi_exp; ++e) {
    svg << "<text x=\"" << left - 6 << "\" y=\"" << y_of(std::pow(10.0, e)) + 4 << "\">1e" << e
        << "</text>\n";
  }
  svg << "</g>\n<g text-anchor=\"middle\">\n";
  const double raw_step = double(n_max) / 8;
  const double magnitude = std::pow(10.0, std::floor(std::log10(std::max(raw_step, 1.0))));
  double step = magnitude;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * magnitude >= raw_step) {
      step = m * magnitude;
      break;
    }
  }
  std::vector<size_t> ticks = {1};  // 1, then the multiples of the step
  for (size_t t = size_t(step); t <= n_max; t += size_t(step)) {
    if (t > 1) ticks.push_back(t);
  }
  for (size_t t : ticks) {
    svg << "<text x=\"" << x_of(t) << "\" y=\"" << top + h + 18 << "\">" << t << "</text>\n";
  }
  svg << "</g>\n"
      << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << w << "\" height=\"" << h
      << "\" fill=\"none\" stroke=\"black\"/>\n"
      << "<text x=\"" << left + w / 2 << "\" y=\"" << height - 10
      << "\" text-anchor=\"middle\">index of the singular value</text>\n"
      << "<text transform=\"translate(18," << top + h / 2
      << ") rotate(-90)\" text-anchor=\"middle\">normalised singular value (log)</text>\n";
  // One polyline per line; the legend beside the plot.
  std::ostringstream legend;
  for (size_t k = 0; k < lines.size(); ++k) {
    const SpectrumLine& l = lines[k];
    const char* colour = kColours[k % 10];
    const std::string pattern = attention_kind(l.kind).plot_dash;
    const std::string dash = pattern.empty() ? "" : " stroke-dasharray=\"" + pattern + "\"";
    svg << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"1.6\"" << dash
        << " points=\"";
    for (size_t i = 0; i < l.values.size(); ++i) {
      char point[64];
      std::snprintf(point, sizeof(point), "%s%.2f,%.2f", i ? " " : "", x_of(i + 1),
                    y_of(l.values[i]));
      svg << point;
    }
    svg << "\"><title>" << xml_escape(l.label) << "</title></polyline>\n";
    const double ly = top + 10 + 18 * double(k), lx = left + w + 14;
    legend << "<line x1=\"" << lx << "\" x2=\"" << lx + 28 << "\" y1=\"" << ly << "\" y2=\"" << ly
           << "\" stroke=\"" << colour << "\" stroke-width=\"1.6\"" << dash << "/>\n"
           << "<text x=\"" << lx + 34 << "\" y=\"" << ly + 4 << "\">" << xml_escape(l.label)
           << "</text>\n";
  }
  svg << "<g class=\"legend\">\n" << legend.str() << "</g>\n</svg>\n";
  std::ofstream out(path);
  if (!out) throw Error(path, "cannot open for writing");
  out << svg.str();
  if (!out.flush()) throw Error(path, "cannot write");
}

}  // namespace primal
