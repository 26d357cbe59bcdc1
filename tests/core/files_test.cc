// core/files.h on real files: a durable replace puts the new bytes in place and leaves no
// temporary behind; one that fails part-way leaves the old content and no temporary; errors
// name the file.
#include "core/files.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "core/error.h"
#include "tests/common/scratch_dir.h"

namespace primal {
namespace {

namespace fs = std::filesystem;

std::string contents(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(WriteFileDurably, ReplacesTheFileAndLeavesNoTemporary) {
  const fs::path dir = testing::fresh_test_dir("primal_files_");
  const std::string path = (dir / "latest").string();
  write_file_durably(path, "step_00000001\n");
  EXPECT_EQ(contents(path), "step_00000001\n");
  write_file_durably(path, [](OutputFile& f) {
    f.write("step_", 5);
    f.write(std::string_view("00000002\n"));
  });
  EXPECT_EQ(contents(path), "step_00000002\n");
  EXPECT_EQ(durable_temp_path(path), (dir / ".latest.tmp").string());
  EXPECT_FALSE(fs::exists(durable_temp_path(path)));
  fs::remove_all(dir);
}

TEST(WriteFileDurably, AFailureKeepsTheOldContentAndRemovesTheTemporary) {
  const fs::path dir = testing::fresh_test_dir("primal_files_");
  const std::string path = (dir / "model.safetensors").string();
  write_file_durably(path, "old");
  EXPECT_THROW(write_file_durably(path,
                                  [](OutputFile& f) {
                                    f.write("new, but only half of it", 12);
                                    throw std::runtime_error("the writer failed");
                                  }),
               std::runtime_error);
  EXPECT_EQ(contents(path), "old");
  EXPECT_FALSE(fs::exists(durable_temp_path(path)));
  fs::remove_all(dir);
}

TEST(WriteFileDurably, ErrorsNameTheFile) {
  const fs::path dir = testing::fresh_test_dir("primal_files_");
  const std::string missing = (dir / "no_such_dir" / "metrics.jsonl").string();
  try {
    write_file_durably(missing, "x");
    ADD_FAILURE() << "no error for a file in a missing directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(durable_temp_path(missing) + ": cannot create: "),
              std::string::npos)
        << e.what();
  }
  try {
    rename_path((dir / "absent").string(), (dir / "there").string());
    ADD_FAILURE() << "no error for renaming a missing file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find((dir / "there").string() + ": cannot rename "),
              std::string::npos)
        << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace primal
