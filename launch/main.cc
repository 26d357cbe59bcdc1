// primal: the one binary (SPEC §8).
//   primal train  --config FILE [--set k=v ...] [--resume auto|DIR]
//                 (also as every rank of mpirun/srun)
//   primal eval   (--config FILE [--weights FILE] | --checkpoint DIR [--config FILE])
//                 [--set k=v ...] [--data FILE | --split val|test]
//   primal export --checkpoint DIR --out FILE.safetensors
//   primal import FILE.safetensors --config FILE [--set k=v ...] --out DIR
//   primal generate --checkpoint DIR --prompt TEXT [--tokens N] [--temperature T] [--seed S]
//   primal spectrum --checkpoint DIR [--batches K] [--out PREFIX]
//   primal spectrum-plot --csv A.csv --label a --csv B.csv --label b --out FILE.svg
// Exit codes: 0 done; 2 bad input (config, flags, data, weights, checkpoint: one line naming the
// file and field, from rank 0 when every rank sees it) or a checkpoint that cannot be saved
// (every rank, one line from rank 0); 3 a collective did not complete within
// parallel.watchdog_s (a rank died or hangs); 4 a non-finite loss stopped the run; 75 training
// stopped early by SIGTERM/SIGUSR1 or checkpoint.stop_at_step after saving a checkpoint (requeue
// and continue with --resume auto); 1 other.
#include <omp.h>

#include <cstdio>
#include <string>
#include <vector>

#include "comm/mpi/mpi_communicator.h"
#include "core/error.h"
#include "data/text_dataset.h"
#include "launch/command_line.h"
#include "launch/generate.h"
#include "launch/launcher.h"
#include "launch/spectrum.h"
#include "trainer/checkpoint.h"
#include "trainer/checkpointer.h"
#include "trainer/safetensors.h"
#include "trainer/trainer.h"

namespace primal {
namespace {

constexpr int kExitBadInput = 2;

// Runs step on every rank; if it fails on any, every rank returns false and the failure is
// printed once: by rank 0 if it failed there (every rank read the same input), else by the
// ranks that failed, prefixed with their rank.
template <typename Step>
bool on_every_rank(Communicator& world, Step step) {
  std::string error;
  try {
    step();
  } catch (const Error& e) {
    error = e.what();
  }
  const bool failed_here = !error.empty();
  const bool rank0_failed = world.rank() == 0 && failed_here;
  int64_t flags[2] = {failed_here ? 1 : 0, rank0_failed ? 1 : 0};
  if (world.size() > 1) world.all_reduce(flags, 2, ReduceOp::kSum);
  if (flags[0] == 0) return true;
  if (world.rank() == 0 && failed_here) {
    std::fprintf(stderr, "primal: error: %s\n", error.c_str());
  } else if (failed_here && flags[1] == 0) {
    std::fprintf(stderr, "primal: error: rank %d: %s\n", world.rank(), error.c_str());
  }
  return false;
}

int train(int* argc, char*** argv, const std::string& config_path,
          const std::vector<std::string>& overrides, const std::string& resume) {
  // Before anything slow (MPI's start-up takes a few hundred ms): a preemption notice during
  // start-up still ends in a checkpoint. Open MPI leaves SIGTERM and SIGUSR1 to the program.
  install_stop_signal_handlers();
  MpiRuntime mpi(argc, argv);
  Communicator& world = mpi.world();
  std::unique_ptr<LoadedConfig> config;
  if (!on_every_rank(world, [&] {
        config = std::make_unique<LoadedConfig>(LoadedConfig::load(config_path, overrides));
        config->validate_layout(world.size());
        const std::string across =
            tp_group_across_hosts(job_hosts(), config->proto().parallel().tp());
        if (!across.empty()) throw Error(config->where("parallel.tp"), across);
      })) {
    return kExitBadInput;
  }
  world.set_timeout_s(config->proto().parallel().watchdog_s());
  ProcessGroups groups = make_process_groups(world, config->proto().parallel().tp());
  if (world.rank() == 0) {
    LaunchEnvironment env = detect_launch_environment();
    // The MPI world is the authority; the launcher's variables give the node-local rank.
    env.rank = world.rank();
    env.size = world.size();
    std::printf("primal train: layout %s\n",
                describe_layout(env, groups.tp_size, groups.tp_rank, groups.dp_rank).c_str());
  }
  std::unique_ptr<Trainer> trainer;
  if (!on_every_rank(world, [&] {
        trainer = std::make_unique<Trainer>(*config, &groups);
        if (!resume.empty()) trainer->resume(resume);
      })) {
    return kExitBadInput;
  }
  // From here on the ranks work in lockstep: a non-finite loss is seen by all of them alike;
  // any other failure on one rank ends the whole job (no rank waits forever).
  try {
    const EvalResult r = trainer->run();
    if (trainer->stopped()) return kExitRequeue;
    if (world.rank() == 0) std::printf("%s\n", eval_json(r, "val").c_str());
  } catch (const NonFiniteLoss& e) {
    if (world.rank() == 0) std::fprintf(stderr, "primal: error: %s\n", e.what());
    return kExitNonFinite;
  } catch (const CheckpointSaveError& e) {
    // Thrown on every rank alike (trainer/checkpointer.h): they end together, one line.
    if (world.rank() == 0) std::fprintf(stderr, "primal: error: %s\n", e.what());
    return kExitBadInput;
  } catch (const std::exception& e) {
    abort_job(e.what(), kExitBadInput);
  }
  return 0;
}

int eval(const std::string& config_path, const std::vector<std::string>& overrides,
         std::string weights, const std::string& checkpoint, const std::string& data_file,
         const std::string& split) {
  if (config_path.empty() && checkpoint.empty()) {
    throw Error("eval", "needs --config FILE or --checkpoint DIR");
  }
  // A checkpoint carries its config; the data file named by --data replaces its data.path.
  const LoadedConfig config = config_path.empty()
                                  ? load_checkpoint_config(checkpoint, overrides, data_file.empty())
                                  : LoadedConfig::load(config_path, overrides);
  if (config.proto().train().threads() > 0) omp_set_num_threads(config.proto().train().threads());
  Transformer<float> model(config.model());
  if (!checkpoint.empty()) {
    load_checkpoint_weights(checkpoint, model.params());
  } else {
    if (weights.empty()) weights = config.proto().logging().dir() + "/model.safetensors";
    load_safetensors(weights, model.params());
  }
  std::unique_ptr<Dataset> data;
  DataSplit which = split == "test" ? DataSplit::kTest : DataSplit::kVal;
  if (!data_file.empty()) {
    if (config.proto().data().kind() != config::Data::TEXT) {
      throw Error("--data " + data_file, "only text (data.kind: TEXT) is read from a file");
    }
    data = std::make_unique<TextDataset>(
        TextDataset::whole_file(data_file, config.proto().data().seq_len()));
    which = DataSplit::kTest;
  } else {
    data = make_dataset(config);
  }
  Arena arena;
  const EvalResult r = evaluate(model, arena, *data, which, config.proto().data().batch_size(), 0);
  std::printf("%s\n", eval_json(r, data_file.empty() ? split : data_file).c_str());
  return 0;
}

int export_weights(const std::string& checkpoint, const std::string& out) {
  const int64_t step = export_checkpoint(checkpoint, out);
  std::printf("primal export: %s (step %lld) -> %s\n", resolve_checkpoint(checkpoint).c_str(),
              (long long)step, out.c_str());
  return 0;
}

int import_weights(const std::string& file, const std::string& config_path,
                   const std::vector<std::string>& overrides, const std::string& out) {
  // Import reads the weights alone: the config's data need not be on this machine.
  const LoadedConfig config = LoadedConfig::load(config_path, overrides, /*require_data=*/false);
  import_checkpoint(file, config, out);
  std::printf("primal import: %s -> %s/%s (step 0)\n", file.c_str(), out.c_str(),
              checkpoint_step_name(0).c_str());
  return 0;
}

// The model a command reads: from a checkpoint (its own config, or --config) on one process.
std::unique_ptr<Transformer<float>> load_model(const std::string& checkpoint,
                                               const std::string& config_path,
                                               const std::vector<std::string>& overrides,
                                               std::unique_ptr<LoadedConfig>& config) {
  config = std::make_unique<LoadedConfig>(config_path.empty()
                                              ? load_checkpoint_config(checkpoint, overrides, false)
                                              : LoadedConfig::load(config_path, overrides));
  if (config->proto().train().threads() > 0) {
    omp_set_num_threads(config->proto().train().threads());
  }
  auto model = std::make_unique<Transformer<float>>(config->model());
  load_checkpoint_weights(checkpoint, model->params());
  return model;
}

int generate(const std::string& checkpoint, const std::string& config_path,
             const std::vector<std::string>& overrides, const std::string& prompt, int tokens,
             double temperature, uint64_t seed) {
  std::unique_ptr<LoadedConfig> config;
  auto model = load_model(checkpoint, config_path, overrides, config);
  return run_generate(*model, prompt, tokens, temperature, seed, stdout);
}

int spectrum(const std::string& checkpoint, const std::string& config_path,
             const std::vector<std::string>& overrides, int batches, const std::string& out) {
  std::unique_ptr<LoadedConfig> config;
  auto model = load_model(checkpoint, config_path, overrides, config);
  return run_spectrum(*model, *make_dataset(*config), batches, config->proto().data().batch_size(),
                      out);
}

}  // namespace
}  // namespace primal

int main(int argc, char** argv) {
  primal::CommandLine c;
  try {
    c = primal::parse_command_line(argc, argv);
  } catch (const primal::CommandLineExit& e) {
    std::fputs(e.out().c_str(), stdout);
    std::fputs(e.err().c_str(), stderr);
    return e.code();
  }
  if (c.command == "train") {
    return primal::train(&argc, &argv, c.config_path, c.overrides, c.resume);
  }
  try {
    if (c.command == "export") return primal::export_weights(c.checkpoint, c.out);
    if (c.command == "import") {
      return primal::import_weights(c.import_file, c.config_path, c.overrides, c.out);
    }
    if (c.command == "generate") {
      return primal::generate(c.checkpoint, c.config_path, c.overrides, c.prompt, c.tokens,
                              c.temperature, c.seed);
    }
    if (c.command == "spectrum") {
      return primal::spectrum(c.checkpoint, c.config_path, c.overrides, c.batches, c.spectrum_out);
    }
    if (c.command == "spectrum-plot") {
      return primal::plot_spectrum_csvs(c.csvs, c.labels, c.spectrum_out, c.plot_title);
    }
    return primal::eval(c.config_path, c.overrides, c.weights, c.checkpoint, c.data_file, c.split);
  } catch (const primal::Error& e) {
    std::fprintf(stderr, "primal: error: %s\n", e.what());
    return primal::kExitBadInput;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "primal: error: %s\n", e.what());
    return 1;
  }
}
