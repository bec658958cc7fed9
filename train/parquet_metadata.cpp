// Parquet's FileMetaData (parquet.thrift), read field by field; fields not listed are
// skipped, so files from newer writers still read.
#include "train/parquet_metadata.h"

#include <cstring>
#include <limits>
#include <memory>
#include <optional>

#include "runtime/error.h"
#include "runtime/file_util.h"
#include "train/thrift_compact.h"

namespace onn {

namespace {

constexpr char kMagic[] = "PAR1";
constexpr uint64_t kTrailerBytes = 8;  // footer length (u32 LE) + "PAR1"
// Far above any real schema or file, far below what would exhaust memory.
constexpr int64_t kMaxSchemaElements = 1 << 16;
constexpr int kMaxSchemaDepth = 16;

const char* const kTypeNames[] = {"BOOLEAN", "INT32", "INT64", "INT96", "FLOAT", "DOUBLE", "BYTE_ARRAY",
                                  "FIXED_LEN_BYTE_ARRAY"};
const char* const kCodecNames[] = {"UNCOMPRESSED", "SNAPPY", "GZIP", "LZO", "BROTLI", "LZ4", "ZSTD", "LZ4_RAW"};
const char* const kEncodingNames[] = {"PLAIN", "GROUP_VAR_INT", "PLAIN_DICTIONARY", "RLE", "BIT_PACKED",
                                      "DELTA_BINARY_PACKED", "DELTA_LENGTH_BYTE_ARRAY", "DELTA_BYTE_ARRAY",
                                      "RLE_DICTIONARY", "BYTE_STREAM_SPLIT"};

template <size_t N>
std::string name_of(const char* const (&names)[N], int32_t v) {
  return v >= 0 && static_cast<size_t>(v) < N ? names[v] : "unknown(" + std::to_string(v) + ")";
}

// A schema element as written: the tree is in depth-first order, num_children saying where
// each group's children end.
struct SchemaElement {
  std::string name;
  int32_t type = -1;  // -1: a group
  int32_t repetition = 0;
  int32_t num_children = 0;
};

template <typename T>
std::vector<T> read_list(ThriftReader& r, ThriftType want, const char* what, T (*element)(ThriftReader&)) {
  const ThriftReader::List l = r.read_list_header();
  if (l.element != want) r.fail(std::string(what) + ": a list of the wrong element type");
  std::vector<T> out;
  out.reserve(static_cast<size_t>(l.size));
  for (int64_t i = 0; i < l.size; ++i) out.push_back(element(r));
  return out;
}

int32_t read_i32_element(ThriftReader& r) { return r.read_i32(); }
std::string read_string_element(ThriftReader& r) { return r.read_binary(); }

SchemaElement read_schema_element(ThriftReader& r) {
  SchemaElement e;
  bool named = false;
  r.begin_struct();
  for (ThriftReader::Field f = r.field(); f.type != ThriftType::stop; f = r.field()) {
    if (f.id == 1 && f.type == ThriftType::i32) e.type = r.read_i32();
    else if (f.id == 3 && f.type == ThriftType::i32) e.repetition = r.read_i32();
    else if (f.id == 4 && f.type == ThriftType::binary) e.name = r.read_binary(), named = true;
    else if (f.id == 5 && f.type == ThriftType::i32) e.num_children = r.read_i32();
    else r.skip(f.type);
  }
  r.end_struct();
  if (!named) r.fail("a schema element without a name");
  if (e.repetition < 0 || e.repetition > 2) r.fail("schema element " + e.name + ": repetition type " + std::to_string(e.repetition));
  if (e.num_children < 0) r.fail("schema element " + e.name + ": negative num_children");
  if (e.type < -1 || e.type > static_cast<int32_t>(ParquetType::fixed_len_byte_array))
    r.fail("schema element " + e.name + ": physical type " + std::to_string(e.type));
  return e;
}

ParquetColumnChunk read_column_meta(ThriftReader& r) {
  ParquetColumnChunk c;
  int32_t type = -1, codec = -1;
  bool have_values = false, have_data = false;
  r.begin_struct();
  for (ThriftReader::Field f = r.field(); f.type != ThriftType::stop; f = r.field()) {
    if (f.id == 1 && f.type == ThriftType::i32) type = r.read_i32();
    else if (f.id == 2 && f.type == ThriftType::list) c.encodings = read_list(r, ThriftType::i32, "encodings", read_i32_element);
    else if (f.id == 3 && f.type == ThriftType::list) c.path = read_list(r, ThriftType::binary, "path_in_schema", read_string_element);
    else if (f.id == 4 && f.type == ThriftType::i32) codec = r.read_i32();
    else if (f.id == 5 && f.type == ThriftType::i64) c.num_values = r.read_i64(), have_values = true;
    else if (f.id == 6 && f.type == ThriftType::i64) c.total_uncompressed_size = r.read_i64();
    else if (f.id == 7 && f.type == ThriftType::i64) c.total_compressed_size = r.read_i64();
    else if (f.id == 9 && f.type == ThriftType::i64) c.data_page_offset = r.read_i64(), have_data = true;
    else if (f.id == 11 && f.type == ThriftType::i64) c.dictionary_page_offset = r.read_i64();
    else r.skip(f.type);
  }
  r.end_struct();
  if (type < 0 || type > static_cast<int32_t>(ParquetType::fixed_len_byte_array)) r.fail("a column chunk of physical type " + std::to_string(type));
  if (codec < 0 || codec > static_cast<int32_t>(ParquetCodec::lz4_raw)) r.fail("a column chunk of codec " + std::to_string(codec));
  if (!have_values || !have_data) r.fail("a column chunk without num_values or data_page_offset");
  c.type = static_cast<ParquetType>(type);
  c.codec = static_cast<ParquetCodec>(codec);
  if (c.dictionary_page_offset == 0) c.dictionary_page_offset = -1;  // some writers' "none": byte 0 is the magic
  return c;
}

ParquetColumnChunk read_column_chunk(ThriftReader& r) {
  std::optional<ParquetColumnChunk> c;
  r.begin_struct();
  for (ThriftReader::Field f = r.field(); f.type != ThriftType::stop; f = r.field()) {
    if (f.id == 1 && f.type == ThriftType::binary) {
      if (!r.read_binary().empty()) r.fail("a column chunk in another file (file_path): not supported");
    } else if (f.id == 3 && f.type == ThriftType::structure) {
      c = read_column_meta(r);
    } else {
      r.skip(f.type);
    }
  }
  r.end_struct();
  if (!c) r.fail("a column chunk without meta_data (encrypted columns are not supported)");
  return *c;
}

ParquetRowGroup read_row_group(ThriftReader& r) {
  ParquetRowGroup g;
  bool have_rows = false;
  r.begin_struct();
  for (ThriftReader::Field f = r.field(); f.type != ThriftType::stop; f = r.field()) {
    if (f.id == 1 && f.type == ThriftType::list) g.columns = read_list(r, ThriftType::structure, "columns", read_column_chunk);
    else if (f.id == 3 && f.type == ThriftType::i64) g.num_rows = r.read_i64(), have_rows = true;
    else r.skip(f.type);
  }
  r.end_struct();
  if (!have_rows || g.num_rows < 0) r.fail("a row group without a valid num_rows");
  return g;
}

// The leaves of the schema tree below element `at` (consumed from `els`), depth first.
void flatten(const std::vector<SchemaElement>& els, size_t& at, std::vector<std::string>& path,
             std::vector<ParquetRepetition>& reps, int def, int rep, int depth, std::vector<ParquetLeaf>& out,
             const std::string& source) {
  if (at >= els.size()) throw FormatError(source + ": the schema's num_children counts more elements than it has");
  if (depth > kMaxSchemaDepth) throw FormatError(source + ": the schema nests deeper than " + std::to_string(kMaxSchemaDepth));
  const SchemaElement& e = els[at++];
  const auto repetition = static_cast<ParquetRepetition>(e.repetition);
  def += repetition != ParquetRepetition::required;
  rep += repetition == ParquetRepetition::repeated;
  path.push_back(e.name);
  reps.push_back(repetition);
  if (e.num_children == 0) {
    if (e.type < 0) throw FormatError(source + ": schema element " + e.name + " has neither children nor a type");
    ParquetLeaf leaf;
    leaf.path = path;
    leaf.path_repetition = reps;
    leaf.type = static_cast<ParquetType>(e.type);
    leaf.repetition = repetition;
    leaf.max_definition_level = def;
    leaf.max_repetition_level = rep;
    out.push_back(std::move(leaf));
  } else {
    for (int32_t i = 0; i < e.num_children; ++i) flatten(els, at, path, reps, def, rep, depth + 1, out, source);
  }
  path.pop_back();
  reps.pop_back();
}

std::vector<ParquetLeaf> leaves_of(const std::vector<SchemaElement>& els, const std::string& source) {
  if (els.empty() || els[0].num_children == 0) throw FormatError(source + ": the schema has no columns");
  std::vector<ParquetLeaf> out;
  size_t at = 1;
  std::vector<std::string> path;
  std::vector<ParquetRepetition> reps;
  for (int32_t i = 0; i < els[0].num_children; ++i) flatten(els, at, path, reps, 0, 0, 1, out, source);
  if (at != els.size()) throw FormatError(source + ": the schema has elements outside its tree");
  return out;
}

// Row counts agree, every chunk matches its leaf and lies inside the file before the footer.
void check(const ParquetMetadata& m, const std::string& source) {
  int64_t rows = 0;
  for (size_t g = 0; g < m.row_groups.size(); ++g) {
    const ParquetRowGroup& rg = m.row_groups[g];
    const std::string where = source + ": row group " + std::to_string(g);
    if (rg.columns.size() != m.leaves.size())
      throw FormatError(where + " has " + std::to_string(rg.columns.size()) + " column chunks for " +
                        std::to_string(m.leaves.size()) + " schema columns");
    if (rg.num_rows > std::numeric_limits<int64_t>::max() - rows) throw FormatError(where + ": row counts overflow");
    rows += rg.num_rows;
    for (size_t c = 0; c < rg.columns.size(); ++c) {
      const ParquetColumnChunk& cc = rg.columns[c];
      const ParquetLeaf& leaf = m.leaves[c];
      const std::string col = where + ", column " + leaf.dotted_path();
      if (cc.path != leaf.path || cc.type != leaf.type)
        throw FormatError(col + ": the column chunk's path or type does not match the schema");
      if (cc.num_values < 0 || cc.total_compressed_size < 0 || cc.total_uncompressed_size < 0)
        throw FormatError(col + ": a negative count or size");
      const int64_t first = cc.first_byte();
      if (first < 4 || cc.data_page_offset < first || static_cast<uint64_t>(first) > m.footer_offset ||
          static_cast<uint64_t>(cc.total_compressed_size) > m.footer_offset - static_cast<uint64_t>(first) ||
          static_cast<uint64_t>(cc.data_page_offset) >= static_cast<uint64_t>(first + cc.total_compressed_size))
        throw FormatError(col + ": its bytes [" + std::to_string(first) + ", +" + std::to_string(cc.total_compressed_size) +
                          ") are not inside the file's data (before byte " + std::to_string(m.footer_offset) + ")");
    }
  }
  if (rows != m.num_rows)
    throw FormatError(source + ": the row groups hold " + std::to_string(rows) + " rows, the footer says " +
                      std::to_string(m.num_rows));
}

}  // namespace

std::string parquet_type_name(ParquetType t) { return name_of(kTypeNames, static_cast<int32_t>(t)); }
std::string parquet_codec_name(ParquetCodec c) { return name_of(kCodecNames, static_cast<int32_t>(c)); }
std::string parquet_encoding_name(int32_t e) { return name_of(kEncodingNames, e); }

std::string ParquetLeaf::dotted_path() const {
  std::string s;
  for (const std::string& p : path) s += (s.empty() ? "" : ".") + p;
  return s;
}

ParquetMetadata parse_parquet_footer(std::span<const uint8_t> tail, uint64_t file_size, const std::string& source) {
  if (file_size < 4 + kTrailerBytes || tail.size() < kTrailerBytes || tail.size() > file_size)
    throw FormatError(source + ": " + std::to_string(file_size) + " bytes is too short for a Parquet file");
  if (std::memcmp(tail.data() + tail.size() - 4, kMagic, 4) != 0)
    throw FormatError(source + ": not a Parquet file (no PAR1 at its end; truncated?)");
  uint32_t footer_len = 0;
  std::memcpy(&footer_len, tail.data() + tail.size() - kTrailerBytes, 4);  // little-endian hosts only
  if (footer_len > file_size - 4 - kTrailerBytes)
    throw FormatError(source + ": the footer length " + std::to_string(footer_len) + " is larger than the file");
  if (footer_len > tail.size() - kTrailerBytes)
    throw FormatError(source + ": the footer is longer than the bytes given (" + std::to_string(tail.size()) + ")");
  ParquetMetadata m;
  m.footer_offset = file_size - kTrailerBytes - footer_len;
  ThriftReader r(tail.subspan(tail.size() - kTrailerBytes - footer_len, footer_len), source, m.footer_offset);
  std::vector<SchemaElement> schema;
  bool have_schema = false, have_rows = false, have_groups = false;
  r.begin_struct();
  for (ThriftReader::Field f = r.field(); f.type != ThriftType::stop; f = r.field()) {
    if (f.id == 1 && f.type == ThriftType::i32) {
      m.version = r.read_i32();
    } else if (f.id == 2 && f.type == ThriftType::list) {
      schema = read_list(r, ThriftType::structure, "schema", read_schema_element);
      if (static_cast<int64_t>(schema.size()) > kMaxSchemaElements) r.fail("more than 65536 schema elements");
      have_schema = true;
    } else if (f.id == 3 && f.type == ThriftType::i64) {
      m.num_rows = r.read_i64();
      have_rows = true;
    } else if (f.id == 4 && f.type == ThriftType::list) {
      m.row_groups = read_list(r, ThriftType::structure, "row_groups", read_row_group);
      have_groups = true;
    } else if (f.id == 6 && f.type == ThriftType::binary) {
      m.created_by = r.read_binary();
    } else {
      r.skip(f.type);
    }
  }
  r.end_struct();
  if (!have_schema || !have_rows || !have_groups || m.num_rows < 0)
    throw FormatError(source + ": the footer lacks its schema, num_rows or row_groups");
  m.leaves = leaves_of(schema, source);
  check(m, source);
  return m;
}

ParquetMetadata parse_parquet_file(std::span<const uint8_t> file, const std::string& source) {
  if (file.size() < 4 || std::memcmp(file.data(), kMagic, 4) != 0)
    throw FormatError(source + ": not a Parquet file (no PAR1 at its start)");
  return parse_parquet_footer(file, file.size(), source);
}

ParquetMetadata read_parquet_metadata(const std::string& path) {
  const std::shared_ptr<const MappedFile> f = MappedFile::open(path);
  return parse_parquet_file(std::span<const uint8_t>(f->data(), f->size()), path);
}

}  // namespace onn
