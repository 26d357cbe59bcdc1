// TFRecord framing, the container format of a TensorBoard event file. Each record is
//   uint64 length (little-endian) | uint32 masked_crc32c(the 8 length bytes) |
//   length bytes of data          | uint32 masked_crc32c(data)
// with the CRCs little-endian and masked as in crc32c.h.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace primal::tensorboard {

// Bytes of framing around each record's data: 8 + 4 before, 4 after.
inline constexpr size_t kRecordHeaderBytes = 12;
inline constexpr size_t kRecordFooterBytes = 4;

// Appends one framed record holding data to out.
void append_record(std::string& out, std::string_view data);

// The data of every record in bytes, in order. Both CRCs of every record are checked; a
// mismatch or a truncated record throws primal::Error naming `name` and the byte offset at which
// the bad record starts.
std::vector<std::string> parse_records(std::string_view bytes, const std::string& name);

// parse_records over the whole file at path; an unreadable file is a primal::Error too.
std::vector<std::string> read_records(const std::string& path);

}  // namespace primal::tensorboard
