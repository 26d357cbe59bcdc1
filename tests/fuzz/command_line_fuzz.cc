// The command line (launch/command_line.h), parsed as main() parses it. Input: the arguments
// after the program's name, separated by NUL bytes. --help and usage errors end in
// CommandLineExit (a primal::Error); anything else is a bug.
#include <cstdint>
#include <string>
#include <vector>

#include "launch/command_line.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace primal;
  const std::vector<std::string> args = fuzz::split_pieces(fuzz::as_text(data, size), fuzz::kNul);
  std::vector<const char*> argv = {"primal"};
  for (const std::string& a : args) argv.push_back(a.c_str());
  try {
    const CommandLine c = parse_command_line(int(argv.size()), argv.data());
    if (c.command.empty()) __builtin_trap();  // a parse without a command must not return
  } catch (const CommandLineExit& e) {
    if (e.code() != 0 && e.code() != 2) __builtin_trap();
  }
  return 0;
}
