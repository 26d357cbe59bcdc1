// CRC-32C and TFRecord framing against known answers.
#include "trainer/tensorboard/crc32c.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "trainer/tensorboard/record.h"

namespace primal::tensorboard {
namespace {

TEST(Crc32c, MatchesKnownAnswers) {
  // The check value of CRC-32C, and the test vectors of RFC 3720 (iSCSI), appendix B.4.
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  std::string ascending, descending;
  for (int i = 0; i < 32; ++i) {
    ascending.push_back(char(i));
    descending.push_back(char(31 - i));
  }
  EXPECT_EQ(crc32c(ascending), 0x46DD794Eu);
  EXPECT_EQ(crc32c(descending), 0x113FDB5Cu);
  EXPECT_EQ(crc32c(""), 0u);
}

TEST(Crc32c, ExtendingEqualsOneCrcOverTheWhole) {
  const std::string text = "The quick brown fox jumps over the lazy dog";
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    const uint32_t head = crc32c(text.substr(0, cut));
    EXPECT_EQ(crc32c_extend(head, text.data() + cut, text.size() - cut), crc32c(text)) << cut;
  }
}

TEST(Crc32c, MaskMatchesTfRecordAndUnmasks) {
  // masked_crc32c("123456789") as tensorboard's pure-Python reader computes it.
  EXPECT_EQ(masked_crc32c("123456789"), 0xC78AB0E5u);
  for (uint32_t crc : {0u, 1u, 0xE3069283u, 0xFFFFFFFFu, 0x80000000u}) {
    EXPECT_EQ(unmask_crc(mask_crc(crc)), crc);
  }
}

TEST(TfRecord, FramesDataExactlyAsTensorFlowDoes) {
  // The bytes of one record holding "hello", framed by tensorboard's pure-Python CRC:
  // length 5 | masked crc of the length | "hello" | masked crc of "hello".
  std::string framed;
  append_record(framed, "hello");
  const unsigned char expected[] = {0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                    0x00, 0xea, 0xb2, 0x04, 0x3e, 'h',  'e',
                                    'l',  'l',  'o',  0xbb, 0x1f, 0x1c, 0x19};
  ASSERT_EQ(framed.size(), sizeof expected);
  for (size_t i = 0; i < framed.size(); ++i) {
    EXPECT_EQ(static_cast<unsigned char>(framed[i]), expected[i]) << "byte " << i;
  }
}

}  // namespace
}  // namespace primal::tensorboard
