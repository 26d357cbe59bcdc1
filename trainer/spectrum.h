// The singular-value spectrum of every layer's attention (the paper's Figure 2), of the matrix
// its kind analyses (Attention::analysed_matrix): for SOFTMAX the N x N matrix A of the
// forward, for PRIMAL the kernel matrix phi(qin) we wr^T phi(kin)^T the layer induces.
// Per head and sample, over the sample's real positions (len x len): singular values (LAPACK
// dgesdd, in double), divided by the largest; then the mean over heads and samples of the
// i-th normalised value (i = 1..len; a sample shorter than i does not count towards it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/primal_attention.h"
#include "model/softmax_attention.h"
#include "model/transformer.h"

namespace primal {

// Singular values of the row-major rows x cols matrix a, largest first (min(rows, cols) of
// them). a is overwritten. primal::Error if LAPACK does not converge.
std::vector<double> singular_values(std::vector<double>& a, int rows, int cols);

struct LayerSpectrum {
  int layer = 0;
  AttentionKind kind = AttentionKind::kSoftmax;
  std::vector<double> sum;     // sum over matrices of the i-th normalised singular value
  std::vector<int64_t> count;  // matrices that have an i-th value
  double mean(size_t i) const { return count[i] ? sum[i] / double(count[i]) : 0; }
  size_t size() const { return sum.size(); }
};

// Accumulates the spectra of a model's layers over forwards.
class AttentionSpectrum {
 public:
  explicit AttentionSpectrum(Transformer<float>& model);
  // Adds every layer's matrices, every head and sample, of the model's last forward (run on
  // batch; its arena not reset since). OpenMP over (sample, head).
  void add_last_forward(const Batch& batch);
  const std::vector<LayerSpectrum>& layers() const { return layers_; }
  int64_t samples() const { return samples_; }

 private:
  Transformer<float>& model_;
  std::vector<LayerSpectrum> layers_;
  int64_t samples_ = 0;
};

const char* kind_name(AttentionKind kind);  // the registry's name: "SOFTMAX", "PRIMAL"

// CSV: the header "layer,kind,index,value", then one row per layer and index (1-based): the mean
// normalised singular value, %.9e.
void write_spectrum_csv(const std::string& path, const std::vector<LayerSpectrum>& layers);
// Reads what write_spectrum_csv wrote (sum = value, count = 1). primal::Error naming the file and
// line on anything else.
std::vector<LayerSpectrum> read_spectrum_csv(const std::string& path);

// One line of a plot: its legend label, its kind (which gives its dash pattern: PRIMAL solid,
// SOFTMAX dashed) and the mean normalised singular value at index 1, 2, ...
struct SpectrumLine {
  std::string label;
  AttentionKind kind;
  std::vector<double> values;
};
std::vector<SpectrumLine> spectrum_lines(const std::vector<LayerSpectrum>& layers,
                                         const std::string& label_prefix = "");
// An SVG line plot: x the index (linear), y the normalised singular value on a log scale (values
// below the lowest decade shown, at most 1e-8 below the largest, sit on the axis), one line per
// entry, a legend.
void write_spectrum_svg(const std::string& path, const std::vector<SpectrumLine>& lines,
                        const std::string& title);

}  // namespace primal
