// A reader of Apache Thrift's compact protocol, the encoding of Parquet's footer and page
// headers: varints, zigzag integers, field headers, lists, binaries, and skipping what the
// caller does not read. Input is hostile: every length and count is checked against the bytes
// left before use, nesting is bounded, and a failure is a FormatError naming the source, the
// byte position and the reason.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace onn {

enum class ThriftType : uint8_t {
  stop = 0,
  bool_true = 1,
  bool_false = 2,
  i8 = 3,
  i16 = 4,
  i32 = 5,
  i64 = 6,
  double_ = 7,
  binary = 8,
  list = 9,
  set = 10,
  map = 11,
  structure = 12,
};

class ThriftReader {
 public:
  // `bytes` at offset `base` of `source` (positions in errors are base + offset).
  ThriftReader(std::span<const uint8_t> bytes, std::string source, uint64_t base = 0)
      : bytes_(bytes), source_(std::move(source)), base_(base) {}

  struct Field {
    ThriftType type = ThriftType::stop;  // stop: the struct ends
    int16_t id = 0;
  };
  struct List {
    ThriftType element = ThriftType::stop;
    int64_t size = 0;
  };

  // Structs: begin, then fields until type stop, then end.
  void begin_struct();
  Field field();
  void end_struct();

  bool read_bool(const Field& f);  // a bool field's value is in its header
  int32_t read_i32();
  int64_t read_i64();
  double read_double();
  std::string read_binary();
  List read_list_header();
  void skip(ThriftType type);

  uint64_t position() const { return base_ + pos_; }  // in the source
  size_t consumed() const { return pos_; }
  [[noreturn]] void fail(const std::string& why) const;

 private:
  uint8_t byte();
  uint64_t varint();
  void skip_element(ThriftType type);
  int64_t zigzag() {
    const uint64_t v = varint();
    return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
  }

  std::span<const uint8_t> bytes_;
  std::string source_;
  uint64_t base_;
  size_t pos_ = 0;
  int depth_ = 0;
  static constexpr int kMaxDepth = 32;
  int16_t last_id_[kMaxDepth + 1] = {};  // the last field id of each open struct
};

}  // namespace onn
