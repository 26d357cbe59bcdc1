// Scratch space of the tests that train: a fresh directory named after the running test, a
// generated text corpus, the tiny LM config the device trainer's tests train on it, and a
// file's bytes (to compare model.safetensors).
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace primal::testing {

// <temp>/<prefix><current test's name>, emptied and created.
inline std::filesystem::path fresh_test_dir(const std::string& prefix) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() /
      (prefix + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// A real text to train a tiny LM on: prose repeated over 600 numbered lines (about 100 KB).
inline void write_prose_corpus(const std::filesystem::path& path) {
  std::ofstream corpus(path);
  for (int i = 0; i < 600; ++i) {
    corpus << "In the beginning God created the heaven and the earth. And the earth was "
              "without form, and void; and darkness was upon the face of the deep. "
           << i % 97 << "\n";
  }
}

// Two layers (SOFTMAX, PRIMAL), dropout on, 8 sequences of 64 tokens of corpus a step, for
// steps steps; no evaluation before the end; 2 OpenMP threads.
inline std::string tiny_lm_config(const std::filesystem::path& corpus, int steps) {
  return "model { width: 64 heads: 4 mlp_width: 128 max_len: 64 layers: [SOFTMAX, PRIMAL] "
         "low_rank: 8 rank_multi: 2 eta: 0.1 dropout: 0.1 }\n"
         "data { path: \"" +
         corpus.string() +
         "\" seq_len: 64 batch_size: 8 }\n"
         "optimizer { lr: 3e-3 }\nschedule { warmup_steps: 3 }\n"
         "train { steps: " +
         std::to_string(steps) + " eval_every: 0 eval_batches: 4 log_every: 1 threads: 2 }\n";
}

// The file's contents ("" where it cannot be read).
inline std::string file_bytes(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace primal::testing
