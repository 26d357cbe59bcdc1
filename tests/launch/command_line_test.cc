// The command line's parser (launch/command_line.h), which main() and the fuzz target share:
// what it reads, and how --help and usage errors end (no exit(), no command run).
#include "launch/command_line.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace primal {
namespace {

CommandLine parse(std::vector<const char*> args) {
  args.insert(args.begin(), "primal");
  return parse_command_line(int(args.size()), args.data());
}

// The CommandLineExit that parsing args ends in.
CommandLineExit exit_of(std::vector<const char*> args) {
  try {
    parse(args);
  } catch (const CommandLineExit& e) {
    return e;
  }
  ADD_FAILURE() << "no CommandLineExit";
  return CommandLineExit(-1, "", "");
}

TEST(CommandLine, TrainReadsItsOptionsInOrder) {
  const CommandLine c = parse({"train", "--config", "c.pbtxt", "--set", "optimizer.lr=3e-4",
                               "--set", "parallel.tp=2", "--resume", "auto"});
  EXPECT_EQ(c.command, "train");
  EXPECT_EQ(c.config_path, "c.pbtxt");
  EXPECT_EQ(c.overrides, (std::vector<std::string>{"optimizer.lr=3e-4", "parallel.tp=2"}));
  EXPECT_EQ(c.resume, "auto");
}

TEST(CommandLine, GenerateKeepsDefaultsItIsNotGiven) {
  const CommandLine c =
      parse({"generate", "--checkpoint", "ck", "--prompt", "In the", "--seed", "9"});
  EXPECT_EQ(c.command, "generate");
  EXPECT_EQ(c.prompt, "In the");
  EXPECT_EQ(c.seed, 9u);
  EXPECT_EQ(c.tokens, 200);
  EXPECT_DOUBLE_EQ(c.temperature, 0.8);
}

TEST(CommandLine, HelpIsExitZeroOnStdoutAndUsageErrorsExitTwoOnStderr) {
  const CommandLineExit help = exit_of({"--help"});
  EXPECT_EQ(help.code(), 0);
  EXPECT_NE(help.out().find("train"), std::string::npos) << help.out();
  EXPECT_TRUE(help.err().empty());
  for (const auto& args : std::vector<std::vector<const char*>>{
           {}, {"bogus"}, {"train"}, {"eval", "--split", "nope"}, {"generate", "--tokens", "-1"}}) {
    const CommandLineExit e = exit_of(args);
    EXPECT_EQ(e.code(), 2);
    EXPECT_FALSE(e.err().empty());
    EXPECT_NE(e.err().find("--help"), std::string::npos) << e.err();
  }
}

}  // namespace
}  // namespace primal
