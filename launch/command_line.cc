#include "launch/command_line.h"

#include <CLI/CLI.hpp>
#include <sstream>

namespace primal {

CommandLine parse_command_line(int argc, const char* const* argv) {
  CommandLine c;
  CLI::App app{"primal: trains Primal-Attention Transformers (Primal-Attention, NeurIPS 2023)"};
  app.require_subcommand(1);

  CLI::App* train = app.add_subcommand(
      "train", "train a model from a config (under mpirun/srun: one rank of a TP x DP job)");
  train->add_option("--config", c.config_path, "config file (configs/*.pbtxt)")->required();
  train->add_option("--set", c.overrides, "override a config field: --set optimizer.lr=3e-4");
  train->add_option("--resume", c.resume,
                    "auto: continue from the newest valid checkpoint in checkpoint.dir (start "
                    "fresh if there is none); DIR: exactly that checkpoint (any TP x DP layout)");

  CLI::App* eval = app.add_subcommand("eval", "evaluate trained weights; prints one JSON line");
  eval->add_option("--config", c.config_path,
                   "config file (configs/*.pbtxt); default with --checkpoint: its own config");
  eval->add_option("--set", c.overrides, "override a config field");
  auto* weights_opt =
      eval->add_option("--weights", c.weights,
                       "model.safetensors to evaluate (default: <logging.dir>/model.safetensors)");
  eval->add_option("--checkpoint", c.checkpoint,
                   "a checkpoint to evaluate: a step directory, or a checkpoint directory (its "
                   "latest)")
      ->excludes(weights_opt);
  auto* data_opt =
      eval->add_option("--data", c.data_file, "a text file to evaluate on (LM configs)");
  eval->add_option("--split", c.split, "val or test")
      ->check(CLI::IsMember({"val", "test"}))
      ->excludes(data_opt);

  CLI::App* exp = app.add_subcommand(
      "export",
      "write a checkpoint's parameters to .safetensors (SPEC §4 names, full shapes, F32)");
  exp->add_option("--checkpoint", c.checkpoint, "a step directory, or a checkpoint directory")
      ->required();
  exp->add_option("--out", c.out, "the .safetensors file to write")->required();

  CLI::App* imp = app.add_subcommand(
      "import", "make a step-0 checkpoint from a .safetensors file (resume it with --resume DIR)");
  imp->add_option("file", c.import_file, ".safetensors with every parameter of the model")
      ->required();
  imp->add_option("--config", c.config_path, "the model's config file")->required();
  imp->add_option("--set", c.overrides, "override a config field");
  imp->add_option("--out", c.out, "the checkpoint directory to create")->required();

  // The options of the commands that read a model from a checkpoint.
  auto add_model_options = [&](CLI::App* cmd) {
    cmd->add_option("--checkpoint", c.checkpoint, "a step directory, or a checkpoint directory")
        ->required();
    cmd->add_option("--config", c.config_path, "default: the checkpoint's own config");
    cmd->add_option("--set", c.overrides, "override a config field");
  };
  CLI::App* gen = app.add_subcommand(
      "generate", "continue a text prompt with a trained byte-level LM (incremental decoding)");
  add_model_options(gen);
  gen->add_option("--prompt", c.prompt, "the text to continue")->required();
  gen->add_option("--tokens", c.tokens, "bytes to generate")->check(CLI::NonNegativeNumber);
  gen->add_option("--temperature", c.temperature, "0: greedy")->check(CLI::NonNegativeNumber);
  gen->add_option("--seed", c.seed, "sampling seed");

  CLI::App* spec = app.add_subcommand(
      "spectrum", "singular values of every layer's attention on validation data: CSV + SVG");
  add_model_options(spec);
  spec->add_option("--batches", c.batches, "validation batches to average over")
      ->check(CLI::PositiveNumber);
  spec->add_option("--out", c.spectrum_out, "output prefix: PREFIX.csv and PREFIX.svg");

  CLI::App* splot = app.add_subcommand(
      "spectrum-plot", "several `primal spectrum` CSVs in one SVG (to compare runs)");
  splot->add_option("--csv", c.csvs, "a spectrum CSV (repeat)")->required();
  splot->add_option("--label", c.labels, "the legend prefix of each CSV (repeat, same order)")
      ->required();
  splot->add_option("--out", c.spectrum_out, "the SVG to write")->required();
  splot->add_option("--title", c.plot_title, "the plot's title");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::ostringstream out, err;
    const int code = app.exit(e, out, err);
    throw CommandLineExit(code == 0 ? 0 : 2, out.str(), err.str());
  }
  c.command = app.get_subcommands().front()->get_name();
  return c;
}

}  // namespace primal
