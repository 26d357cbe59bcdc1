// A run's metrics.jsonl as the tests compare it: every line parsed, without the timing fields
// (which differ between any two runs).
#pragma once

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace primal::testing {

inline std::vector<nlohmann::json> metrics_without_timings(const std::filesystem::path& run_dir) {
  std::ifstream f(run_dir / "metrics.jsonl");
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(f, line);) {
    nlohmann::json j = nlohmann::json::parse(line);
    for (const char* timing : {"tokens_per_s", "samples_per_s", "elapsed_s"}) j.erase(timing);
    out.push_back(j);
  }
  return out;
}

}  // namespace primal::testing
