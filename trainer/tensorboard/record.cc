#include "trainer/tensorboard/record.h"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "trainer/tensorboard/crc32c.h"

namespace primal::tensorboard {
namespace {

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFFu));
}

uint64_t get_le(std::string_view bytes, size_t at, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= uint64_t(static_cast<unsigned char>(bytes[at + i])) << (8 * i);
  return v;
}

std::string hex32(uint32_t v) {
  char s[16];
  std::snprintf(s, sizeof s, "0x%08x", v);
  return s;
}

}  // namespace

void append_record(std::string& out, std::string_view data) {
  const size_t start = out.size();
  put_le(out, data.size(), 8);
  put_le(out, masked_crc32c(std::string_view(out).substr(start, 8)), 4);
  out.append(data);
  put_le(out, masked_crc32c(data), 4);
}

std::vector<std::string> parse_records(std::string_view bytes, const std::string& name) {
  std::vector<std::string> records;
  size_t at = 0;
  while (at < bytes.size()) {
    const std::string where = name + ": record at byte offset " + std::to_string(at);
    if (bytes.size() - at < kRecordHeaderBytes) {
      throw Error(where, "truncated header (" + std::to_string(bytes.size() - at) +
                             " bytes left, a header is 12)");
    }
    const uint32_t stored_length_crc = uint32_t(get_le(bytes, at + 8, 4));
    const uint32_t length_crc = masked_crc32c(bytes.substr(at, 8));
    if (stored_length_crc != length_crc) {
      throw Error(where, "length CRC mismatch (stored " + hex32(stored_length_crc) + ", computed " +
                             hex32(length_crc) + ")");
    }
    const uint64_t length = get_le(bytes, at, 8);
    const size_t left = bytes.size() - at - kRecordHeaderBytes;
    if (left < kRecordFooterBytes || length > left - kRecordFooterBytes) {
      throw Error(where, "truncated: length " + std::to_string(length) + " but only " +
                             std::to_string(left) + " bytes follow the header");
    }
    const std::string_view data = bytes.substr(at + kRecordHeaderBytes, length);
    const uint32_t stored_data_crc = uint32_t(get_le(bytes, at + kRecordHeaderBytes + length, 4));
    const uint32_t data_crc = masked_crc32c(data);
    if (stored_data_crc != data_crc) {
      throw Error(where, "data CRC mismatch (stored " + hex32(stored_data_crc) + ", computed " +
                             hex32(data_crc) + ")");
    }
    records.emplace_back(data);
    at += kRecordHeaderBytes + length + kRecordFooterBytes;
  }
  return records;
}

std::vector<std::string> read_records(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, std::string("cannot open: ") + std::strerror(errno));
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (in.bad()) throw Error(path, "read failed");
  return parse_records(bytes.view(), path);
}

}  // namespace primal::tensorboard
