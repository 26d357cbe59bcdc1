// primal::Error: the one exception type for bad input and broken invariants.
// It carries where (file, line, field path, rank) and what; the CLI prints it as one line.
#pragma once

#include <cstdio>
#include <stdexcept>
#include <string>

namespace primal {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
  Error(const std::string& where, const std::string& what)
      : std::runtime_error(where.empty() ? what : where + ": " + what) {}
};

// A number as it goes into an error message: every digit needed to read it back.
inline std::string format_number(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

// Throws primal::Error(what) unless cond holds. For invariants of the code's own callers;
// user input gets a message naming the file and field instead. Takes a literal so that hot
// paths build no string unless the check fails.
inline void check(bool cond, const char* what) {
  if (!cond) throw Error(what);
}
inline void check(bool cond, const std::string& what) {
  if (!cond) throw Error(what);
}

}  // namespace primal
