// The `primal` command line (SPEC §8), parsed without side effects: main() and the command
// line's fuzz target (tests/fuzz/command_line_fuzz.cc) call the same parser.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"

namespace primal {

// What the command line asks for: the subcommand and every option's value (defaults where
// not given).
struct CommandLine {
  std::string command;  // train, eval, export, import, generate, spectrum, spectrum-plot
  std::string config_path, weights, data_file, split = "val", resume, checkpoint, out;
  std::string import_file;
  std::vector<std::string> overrides;
  std::string prompt, spectrum_out = "spectrum";
  int tokens = 200, batches = 4;
  double temperature = 0.8;
  uint64_t seed = 1;
  std::vector<std::string> csvs, labels;
  std::string plot_title = "Attention spectra";
};

// The command line ends the process before any command runs: --help (code 0, the help in
// `out`) or a usage error (code 2, CLI11's message in `err`). what() is the message.
class CommandLineExit : public Error {
 public:
  CommandLineExit(int code, std::string out, std::string err)
      : Error(err.empty() ? out : err), code_(code), out_(std::move(out)), err_(std::move(err)) {}
  int code() const { return code_; }
  const std::string& out() const { return out_; }  // for stdout
  const std::string& err() const { return err_; }  // for stderr

 private:
  int code_;
  std::string out_, err_;
};

// Parses argv[0..argc) (argv[0] is the program). Throws CommandLineExit.
CommandLine parse_command_line(int argc, const char* const* argv);

}  // namespace primal
