// primal: the one binary (SPEC §8).
//   primal train --config FILE [--set k=v ...]
//   primal eval  --config FILE [--set k=v ...] [--weights FILE] [--data FILE | --split val|test]
// Bad input (config, flags, data, weights) prints one line "primal: error: ..." and exits 2;
// a run stopped by a non-finite loss exits 3.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/text_dataset.h"
#include "trainer/safetensors.h"
#include "trainer/trainer.h"

namespace primal {
namespace {

constexpr int kExitBadInput = 2;

int train(const std::string& config_path, const std::vector<std::string>& overrides) {
  const LoadedConfig config = LoadedConfig::load(config_path, overrides);
  Trainer trainer(config);
  const EvalResult r = trainer.run();
  std::printf("%s\n", eval_json(r, "val").c_str());
  return 0;
}

int eval(const std::string& config_path, const std::vector<std::string>& overrides,
         std::string weights, const std::string& data_file, const std::string& split) {
  const LoadedConfig config = LoadedConfig::load(config_path, overrides);
  if (config.proto().train().threads() > 0) omp_set_num_threads(config.proto().train().threads());
  if (weights.empty()) weights = config.proto().logging().dir() + "/model.safetensors";
  Transformer<float> model(config.model());
  load_safetensors(weights, model.params());
  std::unique_ptr<Dataset> data;
  DataSplit which = split == "test" ? DataSplit::kTest : DataSplit::kVal;
  if (!data_file.empty()) {
    if (config.proto().data().kind() != config::Data::TEXT) {
      throw Error("--data " + data_file, "only text (data.kind: TEXT) is read from a file");
    }
    data = std::make_unique<TextDataset>(TextDataset::whole_file(data_file, config.proto().data().seq_len()));
    which = DataSplit::kTest;
  } else {
    data = make_dataset(config);
  }
  Arena arena;
  const EvalResult r =
      evaluate(model, arena, *data, which, config.proto().data().batch_size(), 0);
  std::printf("%s\n", eval_json(r, data_file.empty() ? split : data_file).c_str());
  return 0;
}

}  // namespace
}  // namespace primal

int main(int argc, char** argv) {
  CLI::App app{"primal: trains Primal-Attention Transformers (Primal-Attention, NeurIPS 2023)"};
  app.require_subcommand(1);
  std::string config_path, weights, data_file, split = "val";
  std::vector<std::string> overrides;

  CLI::App* train = app.add_subcommand("train", "train a model from a config");
  train->add_option("--config", config_path, "config file (configs/*.pbtxt)")->required();
  train->add_option("--set", overrides, "override a config field: --set optimizer.lr=3e-4");

  CLI::App* eval = app.add_subcommand("eval", "evaluate trained weights; prints one JSON line");
  eval->add_option("--config", config_path, "config file (configs/*.pbtxt)")->required();
  eval->add_option("--set", overrides, "override a config field");
  eval->add_option("--weights", weights,
                   "model.safetensors to evaluate (default: <logging.dir>/model.safetensors)");
  auto* data_opt = eval->add_option("--data", data_file, "a text file to evaluate on (LM configs)");
  eval->add_option("--split", split, "val or test")
      ->check(CLI::IsMember({"val", "test"}))
      ->excludes(data_opt);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  try {
    if (*train) return primal::train(config_path, overrides);
    return primal::eval(config_path, overrides, weights, data_file, split);
  } catch (const primal::NonFiniteLoss& e) {
    std::fprintf(stderr, "primal: error: %s\n", e.what());
    return primal::kExitNonFinite;
  } catch (const primal::Error& e) {
    std::fprintf(stderr, "primal: error: %s\n", e.what());
    return primal::kExitBadInput;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "primal: error: %s\n", e.what());
    return 1;
  }
}
