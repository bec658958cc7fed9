#include "support/parquet_writer.h"

#include <algorithm>
#include <fstream>
#include <stdexcept>

namespace onn::test {

namespace {

// Thrift's compact protocol, the parts a FileMetaData and a PageHeader need.
class CompactWriter {
 public:
  enum Type : uint8_t { i32 = 5, i64 = 6, binary = 8, list = 9, structure = 12 };

  void field(int16_t id, Type t) {
    const int delta = id - last_.back();
    if (delta > 0 && delta <= 15) {
      out.push_back(static_cast<char>((delta << 4) | t));
    } else {
      out.push_back(static_cast<char>(t));
      varint(zigzag(id));
    }
    last_.back() = id;
  }
  void i32_field(int16_t id, int32_t v) { field(id, i32), varint(zigzag(v)); }
  void i64_field(int16_t id, int64_t v) { field(id, i64), varint(zigzag(v)); }
  void string_field(int16_t id, const std::string& s) { field(id, binary), string(s); }
  void string(const std::string& s) {
    varint(s.size());
    out += s;
  }
  void list_header(Type element, size_t n) {
    if (n < 15) {
      out.push_back(static_cast<char>((n << 4) | element));
    } else {
      out.push_back(static_cast<char>(0xf0 | element));
      varint(n);
    }
  }
  void begin_struct() { last_.push_back(0); }
  void end_struct() {
    out.push_back(0);  // stop
    last_.pop_back();
  }

  std::string out;

 private:
  static uint64_t zigzag(int64_t v) { return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63); }
  void varint(uint64_t v) {
    for (; v >= 0x80; v >>= 7) out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    out.push_back(static_cast<char>(v));
  }
  std::vector<int16_t> last_{0};
};

constexpr int32_t kByteArray = 6, kRequired = 0, kUtf8 = 0, kPlain = 0, kRle = 3, kUncompressed = 0, kDataPage = 0;

struct Chunk {
  int64_t offset = 0, bytes = 0, values = 0;
};

// A PLAIN BYTE_ARRAY page of `values` behind its header.
std::string column_chunk(const std::vector<std::string>& values) {
  std::string data;
  for (const std::string& v : values) {
    const auto n = static_cast<uint32_t>(v.size());
    for (int i = 0; i < 4; ++i) data.push_back(static_cast<char>(n >> (8 * i)));
    data += v;
  }
  CompactWriter h;
  h.i32_field(1, kDataPage);
  h.i32_field(2, static_cast<int32_t>(data.size()));
  h.i32_field(3, static_cast<int32_t>(data.size()));
  h.field(5, CompactWriter::structure);
  h.begin_struct();
  h.i32_field(1, static_cast<int32_t>(values.size()));
  h.i32_field(2, kPlain);
  h.i32_field(3, kRle);
  h.i32_field(4, kRle);
  h.end_struct();
  h.end_struct();
  return h.out + data;
}

std::string footer(const std::vector<std::string>& columns, const std::vector<std::vector<Chunk>>& groups,
                   int64_t rows) {
  CompactWriter w;
  w.i32_field(1, 1);  // version
  w.field(2, CompactWriter::list);
  w.list_header(CompactWriter::structure, columns.size() + 1);
  w.begin_struct();
  w.string_field(4, "schema");
  w.i32_field(5, static_cast<int32_t>(columns.size()));
  w.end_struct();
  for (const std::string& c : columns) {
    w.begin_struct();
    w.i32_field(1, kByteArray);
    w.i32_field(3, kRequired);
    w.string_field(4, c);
    w.i32_field(6, kUtf8);  // converted_type
    w.end_struct();
  }
  w.i64_field(3, rows);
  w.field(4, CompactWriter::list);
  w.list_header(CompactWriter::structure, groups.size());
  for (const std::vector<Chunk>& g : groups) {
    w.begin_struct();
    w.field(1, CompactWriter::list);
    w.list_header(CompactWriter::structure, g.size());
    int64_t bytes = 0;
    for (size_t c = 0; c < g.size(); ++c) {
      w.begin_struct();
      w.i64_field(2, g[c].offset);
      w.field(3, CompactWriter::structure);
      w.begin_struct();
      w.i32_field(1, kByteArray);
      w.field(2, CompactWriter::list);
      w.list_header(CompactWriter::i32, 1);
      w.out.push_back(static_cast<char>(kPlain));  // zigzag(0)
      w.field(3, CompactWriter::list);
      w.list_header(CompactWriter::binary, 1);
      w.string(columns[c]);
      w.i32_field(4, kUncompressed);
      w.i64_field(5, g[c].values);
      w.i64_field(6, g[c].bytes);
      w.i64_field(7, g[c].bytes);
      w.i64_field(9, g[c].offset);
      w.end_struct();
      w.end_struct();
      bytes += g[c].bytes;
    }
    w.i64_field(2, bytes);
    w.i64_field(3, g.empty() ? 0 : g[0].values);
    w.end_struct();
  }
  w.end_struct();
  return w.out;
}

}  // namespace

void write_string_parquet(const std::string& path, const std::vector<std::string>& columns, int64_t rows,
                          int64_t rows_per_group,
                          const std::function<void(int64_t r, std::vector<std::string>& values)>& row) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << "PAR1";
  int64_t at = 4;
  std::vector<std::vector<Chunk>> groups;
  std::vector<std::string> values(columns.size());
  for (int64_t first = 0; first < rows; first += rows_per_group) {
    const int64_t n = std::min(rows_per_group, rows - first);
    std::vector<std::vector<std::string>> cols(columns.size());
    for (int64_t r = first; r < first + n; ++r) {
      row(r, values);
      for (size_t c = 0; c < columns.size(); ++c) cols[c].push_back(values[c]);
    }
    groups.emplace_back();
    for (const std::vector<std::string>& col : cols) {
      const std::string chunk = column_chunk(col);
      groups.back().push_back({at, static_cast<int64_t>(chunk.size()), n});
      out << chunk;
      at += static_cast<int64_t>(chunk.size());
    }
  }
  const std::string f = footer(columns, groups, rows);
  const auto len = static_cast<uint32_t>(f.size());
  out << f;
  for (int i = 0; i < 4; ++i) out.put(static_cast<char>(len >> (8 * i)));
  out << "PAR1";
  if (!out.flush()) throw std::runtime_error(path + ": cannot write");
}

}  // namespace onn::test
