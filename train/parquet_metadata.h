// A Parquet file's footer: the schema (flattened into its leaf columns, with their definition
// and repetition levels), the row groups and each column chunk's codec, encodings and byte
// range. Only the footer is read and trusted after checking: magic numbers, the footer length
// against the file, every count against the bytes left, the schema tree's shape, the row
// counts against each other, and every column chunk's bytes inside the file before the footer.
// Errors are FormatError naming the file and, for the Thrift metadata, the byte position.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace onn {

enum class ParquetType : int32_t {
  boolean = 0, int32 = 1, int64 = 2, int96 = 3, float_ = 4, double_ = 5, byte_array = 6, fixed_len_byte_array = 7,
};
enum class ParquetCodec : int32_t {
  uncompressed = 0, snappy = 1, gzip = 2, lzo = 3, brotli = 4, lz4 = 5, zstd = 6, lz4_raw = 7,
};
enum class ParquetRepetition : int32_t { required = 0, optional = 1, repeated = 2 };
// Parquet's names ("BYTE_ARRAY", "SNAPPY", "RLE_DICTIONARY"), as pyarrow prints them.
std::string parquet_type_name(ParquetType t);
std::string parquet_codec_name(ParquetCodec c);
std::string parquet_encoding_name(int32_t encoding);

// A leaf of the schema: one column chunk per row group.
struct ParquetLeaf {
  std::vector<std::string> path;  // names from the root's child down, e.g. messages.list.element.role
  ParquetType type = ParquetType::byte_array;
  ParquetRepetition repetition = ParquetRepetition::required;
  std::vector<ParquetRepetition> path_repetition;  // of each element on the path, the leaf's last
  int max_definition_level = 0, max_repetition_level = 0;
  std::string dotted_path() const;
};

struct ParquetColumnChunk {
  ParquetType type = ParquetType::byte_array;
  ParquetCodec codec = ParquetCodec::uncompressed;
  std::vector<int32_t> encodings;
  std::vector<std::string> path;
  int64_t num_values = 0;
  int64_t total_uncompressed_size = 0, total_compressed_size = 0;
  int64_t data_page_offset = 0;
  int64_t dictionary_page_offset = -1;  // -1: none
  // The chunk's bytes: [first_byte(), first_byte() + total_compressed_size).
  int64_t first_byte() const { return dictionary_page_offset >= 0 ? dictionary_page_offset : data_page_offset; }
};

struct ParquetRowGroup {
  int64_t num_rows = 0;
  std::vector<ParquetColumnChunk> columns;  // one per leaf, in leaf order
};

struct ParquetMetadata {
  int32_t version = 0;
  int64_t num_rows = 0;
  std::string created_by;
  std::vector<ParquetLeaf> leaves;
  std::vector<ParquetRowGroup> row_groups;
  uint64_t footer_offset = 0;  // where the Thrift footer starts; column data lies before it
};

// The footer of a Parquet file of `file_size` bytes, from its last `tail.size()` bytes (the
// whole file, or at least the footer and its 8-byte trailer). `source` names it in errors.
ParquetMetadata parse_parquet_footer(std::span<const uint8_t> tail, uint64_t file_size, const std::string& source);
// The footer of a whole file in memory (or mapped): PAR1 at its start too.
ParquetMetadata parse_parquet_file(std::span<const uint8_t> file, const std::string& source);
// The footer of the file at `path` (mapped; only the footer's pages are read).
ParquetMetadata read_parquet_metadata(const std::string& path);

}  // namespace onn
