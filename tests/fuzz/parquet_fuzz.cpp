// libFuzzer target for the Parquet reader: any input is either read (a footer whose every
// column chunk lies inside the input before the footer, then every column chunk decoded to
// its declared number of values) or refused with onn::FormatError. Anything else (a crash, a
// sanitizer report, another exception) is a bug.
#include <cstddef>
#include <cstdint>
#include <span>

#include "runtime/error.h"
#include "train/parquet_column.h"
#include "train/parquet_metadata.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const onn::ParquetMetadata m = onn::parse_parquet_footer(std::span<const uint8_t>(data, size), size, "fuzz-input");
    for (const onn::ParquetRowGroup& g : m.row_groups)
      for (const onn::ParquetColumnChunk& c : g.columns)
        if (c.first_byte() < 4 || static_cast<uint64_t>(c.first_byte() + c.total_compressed_size) > m.footer_offset)
          __builtin_trap();
    for (size_t g = 0; g < m.row_groups.size(); ++g)
      for (size_t c = 0; c < m.leaves.size(); ++c) {
        const onn::ParquetColumnData d = onn::read_parquet_column(std::span<const uint8_t>(data, size), m, g, c, "fuzz-input");
        if (static_cast<int64_t>(d.def.size()) != m.row_groups[g].columns[c].num_values) __builtin_trap();
      }
  } catch (const onn::FormatError&) {
  }
  return 0;
}
