#include "train/thrift_compact.h"

#include <cstring>

#include "runtime/error.h"

namespace onn {

void ThriftReader::fail(const std::string& why) const {
  throw FormatError(source_ + ": byte " + std::to_string(position()) + ": " + why);
}

uint8_t ThriftReader::byte() {
  if (pos_ >= bytes_.size()) fail("the Thrift metadata ends early");
  return bytes_[pos_++];
}

uint64_t ThriftReader::varint() {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    const uint8_t b = byte();
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) return v;
  }
  fail("a varint longer than 10 bytes");
}

void ThriftReader::begin_struct() {
  if (depth_ >= kMaxDepth) fail("Thrift structs nested deeper than " + std::to_string(kMaxDepth));
  last_id_[++depth_] = 0;
}

void ThriftReader::end_struct() { --depth_; }

ThriftReader::Field ThriftReader::field() {
  const uint8_t h = byte();
  Field f;
  f.type = static_cast<ThriftType>(h & 0x0f);
  if (f.type == ThriftType::stop) return f;
  if ((h & 0x0f) > static_cast<uint8_t>(ThriftType::structure))
    fail("unknown Thrift field type " + std::to_string(h & 0x0f));
  const int delta = h >> 4;
  const int64_t id = delta != 0 ? last_id_[depth_] + delta : zigzag();
  if (id < INT16_MIN || id > INT16_MAX) fail("a Thrift field id out of range");
  f.id = static_cast<int16_t>(id);
  last_id_[depth_] = f.id;
  return f;
}

bool ThriftReader::read_bool(const Field& f) {
  if (f.type != ThriftType::bool_true && f.type != ThriftType::bool_false) fail("expected a bool field");
  return f.type == ThriftType::bool_true;
}

int32_t ThriftReader::read_i32() {
  const int64_t v = zigzag();
  if (v < INT32_MIN || v > INT32_MAX) fail("an i32 out of range");
  return static_cast<int32_t>(v);
}

int64_t ThriftReader::read_i64() { return zigzag(); }

double ThriftReader::read_double() {
  if (bytes_.size() - pos_ < 8) fail("the Thrift metadata ends inside a double");
  double d;
  std::memcpy(&d, bytes_.data() + pos_, 8);
  pos_ += 8;
  return d;
}

std::string ThriftReader::read_binary() {
  const uint64_t n = varint();
  if (n > bytes_.size() - pos_)
    fail("a string of " + std::to_string(n) + " bytes where " + std::to_string(bytes_.size() - pos_) + " are left");
  std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), static_cast<size_t>(n));
  pos_ += static_cast<size_t>(n);
  return s;
}

ThriftReader::List ThriftReader::read_list_header() {
  const uint8_t h = byte();
  List l;
  l.element = static_cast<ThriftType>(h & 0x0f);
  const uint64_t n = (h >> 4) == 15 ? varint() : static_cast<uint64_t>(h >> 4);
  // Every element takes at least one byte (a bool in a list is a byte too).
  if (n > bytes_.size() - pos_)
    fail("a list of " + std::to_string(n) + " elements where " + std::to_string(bytes_.size() - pos_) +
         " bytes are left");
  l.size = static_cast<int64_t>(n);
  return l;
}

// In a list or map a bool is a byte of its own, not part of a field header.
void ThriftReader::skip_element(ThriftType type) {
  if (type == ThriftType::bool_true || type == ThriftType::bool_false) byte();
  else skip(type);
}

void ThriftReader::skip(ThriftType type) {
  switch (type) {
    case ThriftType::bool_true:
    case ThriftType::bool_false: return;  // in the field header
    case ThriftType::i8: byte(); return;
    case ThriftType::i16:
    case ThriftType::i32:
    case ThriftType::i64: varint(); return;
    case ThriftType::double_: read_double(); return;
    case ThriftType::binary: read_binary(); return;
    case ThriftType::list:
    case ThriftType::set: {
      const List l = read_list_header();
      begin_struct();  // bounds the nesting of collections too
      for (int64_t i = 0; i < l.size; ++i) skip_element(l.element);
      end_struct();
      return;
    }
    case ThriftType::map: {
      const uint64_t n = varint();
      if (n == 0) return;
      if (n > bytes_.size() - pos_) fail("a map larger than the bytes left");
      const uint8_t kv = byte();
      begin_struct();
      for (uint64_t i = 0; i < n; ++i) {
        skip_element(static_cast<ThriftType>(kv >> 4));
        skip_element(static_cast<ThriftType>(kv & 0x0f));
      }
      end_struct();
      return;
    }
    case ThriftType::structure:
      begin_struct();
      for (Field f = field(); f.type != ThriftType::stop; f = field()) skip(f.type);
      end_struct();
      return;
    case ThriftType::stop: break;
  }
  fail("a Thrift value of unknown type " + std::to_string(static_cast<int>(type)));
}

}  // namespace onn
