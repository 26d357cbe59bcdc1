// The safetensors reader against hostile headers: every one found by tests/fuzz/safetensors_fuzz
// is a primal::Error naming the file and the tensor, and leaves the store untouched.
#include "trainer/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"

namespace primal {
namespace {

namespace fs = std::filesystem;

// A file of one header (as given) and `data_bytes` bytes of 0x3f (floats of about 0.75).
std::string write_safetensors(const std::string& name, const std::string& header,
                              size_t data_bytes) {
  const fs::path path = fs::temp_directory_path() /
                        ("primal_safetensors_test_" + std::to_string(getpid()) + "_" + name);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const uint64_t size = header.size();
  out.write(reinterpret_cast<const char*>(&size), sizeof size);
  out << header << std::string(data_bytes, '\x3f');
  return path.string();
}

// Loads into a store of one [4] tensor "w"; returns the Error's message ("" if none). Checks
// that a failed load kept the store's zeros and a good one read the file's bytes.
std::string load_error(const std::string& header, size_t data_bytes = 16) {
  const std::string path = write_safetensors(std::to_string(header.size()), header, data_bytes);
  ParameterStore<float> store;
  store.add("w", {4}, Split::kReplicated, Init::kZeros);
  store.finalize(0);
  std::string message;
  try {
    load_safetensors(path, store);
  } catch (const Error& e) {
    message = e.what();
  }
  fs::remove(path);
  float loaded;
  std::memset(&loaded, 0x3f, sizeof loaded);
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(store.values()[i], message.empty() ? loaded : 0.0f) << header;
  return message;
}

TEST(Safetensors, AValidFileLoads) {
  EXPECT_EQ(load_error(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})"), "");
}

TEST(Safetensors, MalformedEntriesAreErrorsNamingTheTensor) {
  for (const char* header : {
           R"({"w":{"dtype":"F32","data_offsets":[0,16]}})",                // no shape: was UB
           R"({"w":{"dtype":"F32","shape":[4]}})",                          // no offsets: was UB
           R"({"w":{"dtype":"F32","shape":["4"],"data_offsets":[0,16]}})",  // was type_error
           R"({"w":{"dtype":32,"shape":[4],"data_offsets":[0,16]}})",       // was type_error
           R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,"16"]}})",  // was type_error
           R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[-16,0]}})",   // was type_error
           R"({"w":[1,2]})",                                                // was type_error
       }) {
    const std::string message = load_error(header);
    EXPECT_NE(message.find("tensor 'w'"), std::string::npos) << header << ": " << message;
  }
}

// Found by the fuzzer: end - begin wrapped around 2^64 to the tensor's size, and the copy read
// from begin = 2^64 - 8, far outside the file.
TEST(Safetensors, OffsetsThatWrapAroundAreRefused) {
  const std::string message =
      load_error(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[18446744073709551608,8]}})");
  EXPECT_NE(message.find("bad data_offsets"), std::string::npos) << message;
}

// Found by tests/fuzz/checkpoint_fuzz, exporting a manifest's names: the JSON writer threw its
// own type_error for a name that is not UTF-8.
TEST(Safetensors, ANameThatIsNotUtf8IsAnErrorNamingTheFile) {
  ParameterStore<float> store;
  store.add("w\xff", {4}, Split::kReplicated, Init::kZeros);
  store.finalize(0);
  const std::string path = write_safetensors("utf8", "{}", 0);
  try {
    save_safetensors(path, store);
    ADD_FAILURE() << "no Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not valid UTF-8"), std::string::npos) << e.what();
  }
  fs::remove(path);
}

TEST(Safetensors, ADirectoryIsAnErrorNamingIt) {
  ParameterStore<float> store;
  store.add("w", {4}, Split::kReplicated, Init::kZeros);
  store.finalize(0);
  const std::string dir = fs::temp_directory_path().string();
  try {
    load_safetensors(dir, store);
    ADD_FAILURE() << "no Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace primal
