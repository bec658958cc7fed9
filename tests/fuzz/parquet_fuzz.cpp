// libFuzzer target for the Parquet footer reader: any input is either read into metadata
// whose every column chunk lies inside the input before the footer, or refused with
// onn::FormatError. Anything else (a crash, a sanitizer report, another exception) is a bug.
#include <cstddef>
#include <cstdint>
#include <span>

#include "runtime/error.h"
#include "train/parquet_metadata.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const onn::ParquetMetadata m = onn::parse_parquet_footer(std::span<const uint8_t>(data, size), size, "fuzz-input");
    for (const onn::ParquetRowGroup& g : m.row_groups)
      for (const onn::ParquetColumnChunk& c : g.columns)
        if (c.first_byte() < 4 || static_cast<uint64_t>(c.first_byte() + c.total_compressed_size) > m.footer_offset)
          __builtin_trap();
  } catch (const onn::FormatError&) {
  }
  return 0;
}
