// One column chunk of a Parquet file decoded into its level entries: page headers (Thrift),
// data pages v1 and v2 and the dictionary page, decompressed (UNCOMPRESSED, SNAPPY, GZIP,
// ZSTD; each page's declared size bounded and checked), RLE / bit-packed definition and
// repetition levels, and PLAIN or dictionary (PLAIN_DICTIONARY, RLE_DICTIONARY) values of
// BOOLEAN, INT32, INT64, FLOAT, DOUBLE and BYTE_ARRAY. Anything else (another encoding or codec,
// INT96, fixed-length arrays) is refused by name with the file and column. Every length, count
// and index is checked before use; errors are FormatError naming the file, the column, and
// the byte where the page starts.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "train/parquet_metadata.h"

namespace onn {

// A value: null (std::monostate), BOOLEAN, INT32/INT64 (as int64_t), FLOAT/DOUBLE (as double),
// BYTE_ARRAY (bytes, UTF-8 for strings).
using ParquetValue = std::variant<std::monostate, bool, int64_t, double, std::string>;

// One entry per level pair, as the Dremel encoding lays them out: rep[i] == 0 starts a new row;
// value[i] is set where def[i] == the leaf's max_definition_level, null elsewhere.
struct ParquetColumnData {
  std::vector<int16_t> def, rep;
  std::vector<ParquetValue> values;
};

// Column chunk `column` of row group `group`; `file` is the whole file.
ParquetColumnData read_parquet_column(std::span<const uint8_t> file, const ParquetMetadata& meta, size_t group,
                                      size_t column, const std::string& source);

}  // namespace onn
