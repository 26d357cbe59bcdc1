// `primal spectrum`: the singular-value spectrum of every layer's attention on validation data
// (trainer/spectrum.h), written as <out_prefix>.csv and <out_prefix>.svg.
#pragma once

#include <string>
#include <vector>

#include "data/dataset.h"
#include "model/transformer.h"

namespace primal {

// Runs the model (weights loaded by the caller, one process) over the first `batches` batches
// of batch_size samples of the validation split (fewer if the split ends first), accumulates
// the spectra, writes <out_prefix>.csv and <out_prefix>.svg (creating out_prefix's directory)
// and prints one summary line per layer on stdout. Returns 0; throws primal::Error on bad
// arguments (batches or batch_size < 1, an empty split) or an unwritable output.
int run_spectrum(Transformer<float>& model, const Dataset& data, int batches, int batch_size,
                 const std::string& out_prefix);

// Several spectra CSVs (write_spectrum_csv) in one SVG, for comparing runs (e.g. a PRIMAL and a
// softmax checkpoint, docs/telemetry.md): labels[i] prefixes the legend entries of csvs[i].
// Returns 0; throws primal::Error naming a bad file.
int plot_spectrum_csvs(const std::vector<std::string>& csvs, const std::vector<std::string>& labels,
                       const std::string& svg_path, const std::string& title);

}  // namespace primal
