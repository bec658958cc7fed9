#include "train/parquet_column.h"

#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>

#include <cstring>

#include "runtime/error.h"
#include "train/thrift_compact.h"

namespace onn {

namespace {

// Bounds on what one page may declare: its decompressed bytes and its level entries.
constexpr int64_t kMaxPageBytes = int64_t{1} << 30;
constexpr int64_t kMaxPageValues = int64_t{1} << 24;

enum PageType : int32_t { kDataPage = 0, kIndexPage = 1, kDictionaryPage = 2, kDataPageV2 = 3 };
enum Encoding : int32_t { kPlain = 0, kPlainDictionary = 2, kRle = 3, kRleDictionary = 8 };

struct PageHeader {
  int32_t type = -1, uncompressed = -1, compressed = -1;
  int32_t num_values = 0, encoding = -1, def_encoding = kRle, rep_encoding = kRle;
  int32_t def_bytes = 0, rep_bytes = 0;  // v2: the levels' lengths, never compressed
  bool is_compressed = true;             // v2
};

// Where errors point: the file, the column, the page.
struct Where {
  const std::string& source;
  std::string column;
  uint64_t page = 0;
  [[noreturn]] void fail(const std::string& why) const {
    throw FormatError(source + ": column " + column + ", page at byte " + std::to_string(page) + ": " + why);
  }
};

void read_data_header(ThriftReader& r, PageHeader& h, bool v2) {
  r.begin_struct();
  for (ThriftReader::Field f = r.field(); f.type != ThriftType::stop; f = r.field()) {
    const bool i32 = f.type == ThriftType::i32;
    if (f.id == 1 && i32) h.num_values = r.read_i32();
    else if (!v2 && f.id == 2 && i32) h.encoding = r.read_i32();
    else if (!v2 && f.id == 3 && i32) h.def_encoding = r.read_i32();
    else if (!v2 && f.id == 4 && i32) h.rep_encoding = r.read_i32();
    else if (v2 && f.id == 4 && i32) h.encoding = r.read_i32();
    else if (v2 && f.id == 5 && i32) h.def_bytes = r.read_i32();
    else if (v2 && f.id == 6 && i32) h.rep_bytes = r.read_i32();
    else if (v2 && f.id == 7 && (f.type == ThriftType::bool_true || f.type == ThriftType::bool_false)) h.is_compressed = r.read_bool(f);
    else r.skip(f.type);
  }
  r.end_struct();
}

PageHeader read_page_header(ThriftReader& r) {
  PageHeader h;
  r.begin_struct();
  for (ThriftReader::Field f = r.field(); f.type != ThriftType::stop; f = r.field()) {
    const bool i32 = f.type == ThriftType::i32, st = f.type == ThriftType::structure;
    if (f.id == 1 && i32) h.type = r.read_i32();
    else if (f.id == 2 && i32) h.uncompressed = r.read_i32();
    else if (f.id == 3 && i32) h.compressed = r.read_i32();
    else if ((f.id == 5 || f.id == 7) && st) read_data_header(r, h, false);  // v1 data, dictionary: same first fields
    else if (f.id == 8 && st) read_data_header(r, h, true);
    else r.skip(f.type);
  }
  r.end_struct();
  return h;
}

// Deflate expands at most about 1032:1; a larger claim is refused before allocating.
constexpr uint64_t kMaxDeflateRatio = 1032;

// The claimed size checked against what the compressed stream itself declares (or can hold)
// before anything is allocated; then decompressed and checked to be exactly that size.
std::vector<uint8_t> decompress(ParquetCodec codec, std::span<const uint8_t> in, int64_t size, const Where& w) {
  const auto declared_mismatch = [&] {
    w.fail(parquet_codec_name(codec) + " data that does not decompress to the declared " + std::to_string(size) + " bytes");
  };
  const auto* src = reinterpret_cast<const char*>(in.data());
  size_t claimed = 0;
  switch (codec) {
    case ParquetCodec::uncompressed:
      if (static_cast<int64_t>(in.size()) != size) w.fail("an uncompressed page whose sizes differ");
      return {in.begin(), in.end()};
    case ParquetCodec::snappy:
      if (snappy_uncompressed_length(src, in.size(), &claimed) != SNAPPY_OK || claimed != static_cast<size_t>(size))
        declared_mismatch();
      break;
    case ParquetCodec::zstd: {
      const unsigned long long n = ZSTD_getFrameContentSize(in.data(), in.size());
      if (n != ZSTD_CONTENTSIZE_UNKNOWN && n != static_cast<unsigned long long>(size)) declared_mismatch();
      break;
    }
    case ParquetCodec::gzip:
      if (static_cast<uint64_t>(size) > kMaxDeflateRatio * in.size() + 1024) declared_mismatch();
      break;
    default:
      w.fail("codec " + parquet_codec_name(codec) + " is not supported (UNCOMPRESSED, SNAPPY, GZIP, ZSTD are)");
  }
  std::vector<uint8_t> out(static_cast<size_t>(size));
  size_t got = out.size();
  bool ok = false;
  if (codec == ParquetCodec::snappy) {
    ok = snappy_uncompress(src, in.size(), reinterpret_cast<char*>(out.data()), &got) == SNAPPY_OK;
  } else if (codec == ParquetCodec::zstd) {
    got = ZSTD_decompress(out.data(), out.size(), in.data(), in.size());
    ok = !ZSTD_isError(got);
  } else {
    z_stream z{};
    if (inflateInit2(&z, 15 + 32) != Z_OK) w.fail("zlib could not start");  // gzip or zlib header
    z.next_in = const_cast<Bytef*>(in.data());
    z.avail_in = static_cast<uInt>(in.size());
    z.next_out = out.data();
    z.avail_out = static_cast<uInt>(out.size());
    ok = inflate(&z, Z_FINISH) == Z_STREAM_END;
    got = z.total_out;
    inflateEnd(&z);
  }
  if (!ok || got != out.size()) declared_mismatch();
  return out;
}

// Reads a byte range front to back; every read checked.
struct Cursor {
  std::span<const uint8_t> b;
  const Where& w;
  size_t pos = 0;
  size_t left() const { return b.size() - pos; }
  std::span<const uint8_t> take(size_t n, const char* what) {
    if (n > left()) w.fail(std::string(what) + ": " + std::to_string(n) + " bytes where " + std::to_string(left()) + " are left");
    pos += n;
    return b.subspan(pos - n, n);
  }
  uint32_t u32(const char* what) {
    uint32_t v;
    std::memcpy(&v, take(4, what).data(), 4);
    return v;
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      const uint8_t c = take(1, "a varint")[0];
      v |= static_cast<uint64_t>(c & 0x7f) << shift;
      if (!(c & 0x80)) return v;
    }
    w.fail("a varint longer than 10 bytes");
  }
};

int bit_width_of(int64_t max) {
  int w = 0;
  while ((int64_t{1} << w) <= max) ++w;
  return w;
}

// n values of `width` bits from the RLE / bit-packed hybrid encoding in `in`.
std::vector<uint32_t> decode_hybrid(std::span<const uint8_t> in, int width, size_t n, const Where& w) {
  if (width < 0 || width > 32) w.fail("a bit width of " + std::to_string(width));
  std::vector<uint32_t> out;
  out.reserve(n);
  Cursor c{in, w};
  while (out.size() < n) {
    const uint64_t header = c.varint();
    if (header & 1) {  // bit-packed: groups of 8 values, LSB first
      const uint64_t groups = header >> 1;
      if (groups > c.left()) w.fail("a bit-packed run longer than its page");
      const std::span<const uint8_t> bits = c.take(static_cast<size_t>(groups) * static_cast<size_t>(width), "a bit-packed run");
      const size_t count = std::min<size_t>(static_cast<size_t>(groups) * 8, n - out.size());
      const uint64_t mask = (uint64_t{1} << width) - 1;  // width <= 32: the value fits a 64-bit window
      if (width == 0) out.insert(out.end(), count, 0);  // no bytes to read
      for (size_t i = 0; width > 0 && i < count; ++i) {
        const size_t bit = i * static_cast<size_t>(width), at = bit / 8;
        uint64_t window = 0;
        std::memcpy(&window, bits.data() + at, std::min<size_t>(8, bits.size() - at));  // little-endian hosts
        out.push_back(static_cast<uint32_t>((window >> (bit % 8)) & mask));
      }
    } else {  // a run of one value
      const uint64_t count = header >> 1;
      uint64_t v = 0;
      const std::span<const uint8_t> bytes = c.take(static_cast<size_t>((width + 7) / 8), "an RLE value");
      for (size_t k = 0; k < bytes.size(); ++k) v |= static_cast<uint64_t>(bytes[k]) << (8 * k);
      if (width < 32 && v >> width) w.fail("an RLE value wider than its bit width");
      out.insert(out.end(), std::min<uint64_t>(count, n - out.size()), static_cast<uint32_t>(v));
    }
  }
  return out;
}

// n PLAIN values of `type`.
std::vector<ParquetValue> decode_plain(Cursor& c, ParquetType type, size_t n) {
  std::vector<ParquetValue> out;
  out.reserve(n);
  const auto fixed = [&](size_t bytes, auto convert) {
    if (n > c.left() / bytes) c.w.fail(std::to_string(n) + " values do not fit the page");
    for (size_t i = 0; i < n; ++i) out.push_back(convert(c.take(bytes, "a value").data()));
  };
  switch (type) {
    case ParquetType::boolean: {
      const std::span<const uint8_t> bits = c.take((n + 7) / 8, "booleans");
      for (size_t i = 0; i < n; ++i) out.emplace_back(static_cast<bool>((bits[i / 8] >> (i % 8)) & 1));
      return out;
    }
    case ParquetType::int32:
      fixed(4, [](const uint8_t* p) { int32_t v; std::memcpy(&v, p, 4); return ParquetValue(int64_t{v}); });
      return out;
    case ParquetType::int64:
      fixed(8, [](const uint8_t* p) { int64_t v; std::memcpy(&v, p, 8); return ParquetValue(v); });
      return out;
    case ParquetType::float_:
      fixed(4, [](const uint8_t* p) { float v; std::memcpy(&v, p, 4); return ParquetValue(double{v}); });
      return out;
    case ParquetType::double_:
      fixed(8, [](const uint8_t* p) { double v; std::memcpy(&v, p, 8); return ParquetValue(v); });
      return out;
    case ParquetType::byte_array:
      for (size_t i = 0; i < n; ++i) {
        const std::span<const uint8_t> s = c.take(c.u32("a string's length"), "a string");
        out.emplace_back(std::string(reinterpret_cast<const char*>(s.data()), s.size()));
      }
      return out;
    default: break;
  }
  c.w.fail("physical type " + parquet_type_name(type) + " is not supported");
}

class ChunkDecoder {
 public:
  ChunkDecoder(const ParquetColumnChunk& chunk, const ParquetLeaf& leaf, const Where& w) : chunk_(chunk), leaf_(leaf), w_(w) {}

  void page(const PageHeader& h, std::span<const uint8_t> body, ParquetColumnData& out) {
    if (h.uncompressed < 0 || h.uncompressed > kMaxPageBytes) w_.fail("a page of " + std::to_string(h.uncompressed) + " bytes");
    if (h.num_values < 0 || h.num_values > kMaxPageValues) w_.fail("a page of " + std::to_string(h.num_values) + " values");
    if (h.type == kDictionaryPage) return dictionary(h, body);
    if (h.type == kDataPage) return data_v1(h, body, out);
    if (h.type == kDataPageV2) return data_v2(h, body, out);
    if (h.type != kIndexPage) w_.fail("page type " + std::to_string(h.type));
  }

 private:
  void dictionary(const PageHeader& h, std::span<const uint8_t> body) {
    if (h.encoding != kPlain && h.encoding != kPlainDictionary) w_.fail("a dictionary page encoded " + parquet_encoding_name(h.encoding));
    const std::vector<uint8_t> bytes = decompress(chunk_.codec, body, h.uncompressed, w_);
    Cursor c{bytes, w_};
    dict_ = decode_plain(c, leaf_.type, static_cast<size_t>(h.num_values));
    have_dict_ = true;
  }

  void data_v1(const PageHeader& h, std::span<const uint8_t> body, ParquetColumnData& out) {
    const std::vector<uint8_t> bytes = decompress(chunk_.codec, body, h.uncompressed, w_);
    Cursor c{bytes, w_};
    const auto n = static_cast<size_t>(h.num_values);
    const auto levels = [&](int max, int32_t encoding, const char* what) {
      if (max == 0) return std::vector<uint32_t>(n, 0);
      if (encoding != kRle) w_.fail(std::string(what) + " levels encoded " + parquet_encoding_name(encoding) + " (RLE is supported)");
      return decode_hybrid(c.take(c.u32("a level length"), "levels"), bit_width_of(max), n, w_);
    };
    const std::vector<uint32_t> rep = levels(leaf_.max_repetition_level, h.rep_encoding, "repetition");
    const std::vector<uint32_t> def = levels(leaf_.max_definition_level, h.def_encoding, "definition");
    values(h, rep, def, c, out);
  }

  void data_v2(const PageHeader& h, std::span<const uint8_t> body, ParquetColumnData& out) {
    if (h.rep_bytes < 0 || h.def_bytes < 0 || static_cast<uint64_t>(h.rep_bytes) + static_cast<uint64_t>(h.def_bytes) > body.size() ||
        h.rep_bytes + h.def_bytes > h.uncompressed)
      w_.fail("level lengths larger than the page");
    const auto n = static_cast<size_t>(h.num_values);
    const auto levels = [&](int max, size_t at, int32_t len) {
      return max == 0 ? std::vector<uint32_t>(n, 0)
                      : decode_hybrid(body.subspan(at, static_cast<size_t>(len)), bit_width_of(max), n, w_);
    };
    const std::vector<uint32_t> rep = levels(leaf_.max_repetition_level, 0, h.rep_bytes);
    const std::vector<uint32_t> def = levels(leaf_.max_definition_level, static_cast<size_t>(h.rep_bytes), h.def_bytes);
    const std::span<const uint8_t> rest = body.subspan(static_cast<size_t>(h.rep_bytes) + static_cast<size_t>(h.def_bytes));
    const int64_t size = h.uncompressed - h.rep_bytes - h.def_bytes;
    const std::vector<uint8_t> bytes = decompress(h.is_compressed ? chunk_.codec : ParquetCodec::uncompressed, rest, size, w_);
    Cursor c{bytes, w_};
    values(h, rep, def, c, out);
  }

  // The page's values: one per entry whose definition level is the leaf's maximum.
  void values(const PageHeader& h, const std::vector<uint32_t>& rep, const std::vector<uint32_t>& def, Cursor& c,
              ParquetColumnData& out) {
    size_t present = 0;
    for (size_t i = 0; i < def.size(); ++i) {
      if (def[i] > static_cast<uint32_t>(leaf_.max_definition_level) || rep[i] > static_cast<uint32_t>(leaf_.max_repetition_level))
        w_.fail("a level above the column's maximum");
      present += def[i] == static_cast<uint32_t>(leaf_.max_definition_level);
    }
    std::vector<ParquetValue> vals;
    if (h.encoding == kPlain) {
      vals = decode_plain(c, leaf_.type, present);
    } else if (h.encoding == kPlainDictionary || h.encoding == kRleDictionary) {
      if (!have_dict_) w_.fail("dictionary-encoded values without a dictionary page");
      const int width = present > 0 ? c.take(1, "the index bit width")[0] : 0;
      for (uint32_t index : decode_hybrid(c.b.subspan(c.pos), width, present, w_)) {
        if (index >= dict_.size()) w_.fail("dictionary index " + std::to_string(index) + " of " + std::to_string(dict_.size()));
        vals.push_back(dict_[index]);
      }
    } else {
      w_.fail("values encoded " + parquet_encoding_name(h.encoding) + " (PLAIN, PLAIN_DICTIONARY and RLE_DICTIONARY are supported)");
    }
    size_t next = 0;
    for (size_t i = 0; i < def.size(); ++i) {
      out.def.push_back(static_cast<int16_t>(def[i]));
      out.rep.push_back(static_cast<int16_t>(rep[i]));
      out.values.push_back(def[i] == static_cast<uint32_t>(leaf_.max_definition_level) ? std::move(vals[next++]) : ParquetValue());
    }
  }

  const ParquetColumnChunk& chunk_;
  const ParquetLeaf& leaf_;
  const Where& w_;  // its page moves as the chunk is read
  std::vector<ParquetValue> dict_;
  bool have_dict_ = false;
};

}  // namespace

ParquetColumnData read_parquet_column(std::span<const uint8_t> file, const ParquetMetadata& meta, size_t group,
                                      size_t column, const std::string& source) {
  ONN_CHECK_ARG(group < meta.row_groups.size() && column < meta.leaves.size(), "read_parquet_column: no row group ",
                group, " column ", column);
  ONN_CHECK_ARG(file.size() >= meta.footer_offset, "read_parquet_column: the file is shorter than its metadata says");
  const ParquetColumnChunk& chunk = meta.row_groups[group].columns[column];
  const ParquetLeaf& leaf = meta.leaves[column];
  Where w{source, leaf.dotted_path()};
  // The footer check put [first, first + size) inside the file's data.
  const std::span<const uint8_t> bytes = file.subspan(static_cast<size_t>(chunk.first_byte()), static_cast<size_t>(chunk.total_compressed_size));
  ChunkDecoder dec(chunk, leaf, w);
  ParquetColumnData out;
  size_t pos = 0;
  while (static_cast<int64_t>(out.def.size()) < chunk.num_values) {
    w.page = static_cast<uint64_t>(chunk.first_byte()) + pos;
    if (pos >= bytes.size()) w.fail("the column chunk ends after " + std::to_string(out.def.size()) + " of its " + std::to_string(chunk.num_values) + " values");
    ThriftReader r(bytes.subspan(pos), source + ": column " + w.column + ", page header", w.page);
    const PageHeader h = read_page_header(r);
    pos += r.consumed();
    if (h.compressed < 0 || static_cast<size_t>(h.compressed) > bytes.size() - pos)
      w.fail("a page of " + std::to_string(h.compressed) + " bytes where " + std::to_string(bytes.size() - pos) + " are left in the chunk");
    dec.page(h, bytes.subspan(pos, static_cast<size_t>(h.compressed)), out);
    pos += static_cast<size_t>(h.compressed);
  }
  if (static_cast<int64_t>(out.def.size()) != chunk.num_values)
    w.fail("pages with " + std::to_string(out.def.size()) + " values in a chunk of " + std::to_string(chunk.num_values));
  return out;
}

}  // namespace onn
