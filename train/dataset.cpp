// Tokenization with loss masks, the corpus cache, the split and the packing.
#include "train/dataset.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <numeric>

#include "kernels/counter_rng.h"
#include "kernels/cross_entropy.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/safetensors.h"

namespace onn {

namespace fs = std::filesystem;

namespace {

// A permutation of v from (key): Fisher-Yates on a counter-based generator, so the order is
// the same on every platform and standard library.
void shuffle(std::vector<int64_t>& v, uint64_t key) {
  for (size_t i = v.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(counter_hash(key, i) % i);
    std::swap(v[i - 1], v[j]);
  }
}

// A fingerprint of the inputs a tokenized corpus depends on: files (path, size, mtime), the
// tokenizer file's bytes and the tokenization options.
nlohmann::json corpus_fingerprint(const CorpusSource& src) {
  nlohmann::json files = nlohmann::json::array();
  std::vector<fs::path> paths;
  if (fs::is_directory(src.data)) {
    for (const auto& e : fs::directory_iterator(src.data)) paths.push_back(e.path());
    std::sort(paths.begin(), paths.end());
  } else {
    paths.push_back(src.data);
  }
  for (const fs::path& p : paths) {
    std::error_code ec;
    const auto size = fs::file_size(p, ec);
    const auto time = fs::last_write_time(p, ec).time_since_epoch().count();
    files.push_back({p.string(), ec ? -1 : static_cast<int64_t>(size), static_cast<int64_t>(time)});
  }
  const fs::path dir(src.model_dir);
  const std::string tok = read_file((dir / "tokenizer.json").string(), size_t{1} << 30);
  uint64_t h = fnv1a(tok);
  std::string cfg_text;
  std::error_code ec;
  if (fs::exists(dir / "tokenizer_config.json", ec))
    cfg_text = read_file((dir / "tokenizer_config.json").string(), size_t{1} << 26);
  h = fnv1a(cfg_text, h);
  return {{"files", files}, {"tokenizer_fnv1a", std::to_string(h)}, {"seq_len", src.seq_len},
          {"train_on_inputs", src.train_on_inputs}, {"chat_format", src.chat_format},
          {"skip_bad_records", src.skip_bad_records}, {"data_columns", src.data_columns}, {"version", 2}};
}

// The corpus cache's arrays, by name (name order puts the 8-byte offsets first, so every
// array of a mapped cache is aligned for its type).
constexpr const char* kOffsetsName = "doc_offsets";
constexpr const char* kIdsName = "ids";
constexpr const char* kTargetName = "target";
// The cache is written, and its spilled tokens read back, this many bytes at a time.
constexpr uint64_t kCorpusChunkBytes = uint64_t{16} << 20;

// Whether `offsets` partition `tokens` tokens into documents: 0 first, `tokens` last, never
// decreasing.
bool partitions(std::span<const int64_t> offsets, size_t tokens) {
  if (offsets.empty() || offsets.front() != 0 || offsets.back() != static_cast<int64_t>(tokens)) return false;
  for (size_t i = 1; i < offsets.size(); ++i)
    if (offsets[i] < offsets[i - 1]) return false;
  return true;
}

// The running sums of a corpus, a whole document at a time: the labels that count (never a
// document's first token) and the FNV-1a of each array.
struct CorpusSums {
  int64_t targets = 0;
  uint64_t ids = kFnv1aBasis, target = kFnv1aBasis;

  void add_document(std::span<const int32_t> i, std::span<const uint8_t> t) {
    for (size_t k = 1; k < t.size(); ++k) targets += t[k];
    ids = fnv1a(i.data(), i.size_bytes(), ids);
    target = fnv1a(t.data(), t.size(), target);
  }
  uint64_t fingerprint(std::span<const int64_t> offsets) const {
    const uint64_t arrays[2] = {ids, target};
    return fnv1a(offsets.data(), offsets.size_bytes(), fnv1a(arrays, sizeof arrays));
  }
};

// Where finished documents go: vectors in memory, or spill files on the way to a cache.
class DocumentSink {
 public:
  virtual ~DocumentSink() = default;
  virtual void append(std::span<const int32_t> ids, std::span<const uint8_t> target) = 0;
};

class VectorSink final : public DocumentSink {
 public:
  void append(std::span<const int32_t> i, std::span<const uint8_t> t) override {
    ids.insert(ids.end(), i.begin(), i.end());
    target.insert(target.end(), t.begin(), t.end());
  }
  std::vector<int32_t> ids;
  std::vector<uint8_t> target;
};

// A new, empty file "<near>-XXXXXX" that no other process takes; its name.
std::string unique_path(const std::string& near) {
  std::string name = near + "-XXXXXX";
  const int fd = ::mkstemp(name.data());
  if (fd < 0) throw IoError(name + ": cannot create: " + std::strerror(errno));
  ::close(fd);
  return name;
}

// A file of raw bytes beside `near` ("<near>.spill-XXXXXX"), appended through a buffer, read
// back at offsets, removed when destroyed.
class SpillFile {
 public:
  explicit SpillFile(const std::string& near) : path_(unique_path(near + ".spill")) {
    file_ = std::fopen(path_.c_str(), "w+b");
    if (file_ == nullptr) {
      std::filesystem::remove(path_);
      throw IoError(path_ + ": cannot open: " + std::strerror(errno));
    }
  }
  ~SpillFile() {
    std::fclose(file_);
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  SpillFile(const SpillFile&) = delete;
  SpillFile& operator=(const SpillFile&) = delete;

  void write(const void* data, size_t n) {
    if (n > 0 && std::fwrite(data, 1, n, file_) != n) fail("write");
  }
  void flush() {
    if (std::fflush(file_) != 0) fail("write");
  }
  void read(uint64_t at, std::span<uint8_t> out) const {
    for (size_t done = 0; done < out.size();) {
      const ssize_t n = ::pread(::fileno(file_), out.data() + done, out.size() - done, static_cast<off_t>(at + done));
      if (n <= 0) fail("read");
      done += static_cast<size_t>(n);
    }
  }

 private:
  [[noreturn]] void fail(const char* what) const {
    throw IoError(path_ + ": cannot " + what + ": " + std::strerror(errno));
  }
  std::string path_;
  std::FILE* file_ = nullptr;
};

// Tokens spilled to disk as they are made: ids and targets, one file each.
class SpillSink final : public DocumentSink {
 public:
  explicit SpillSink(const std::string& near) : ids(near), target(near) {}
  void append(std::span<const int32_t> i, std::span<const uint8_t> t) override {
    ids.write(i.data(), i.size_bytes());
    target.write(t.data(), t.size());
  }
  SpillFile ids, target;
};

// Examples in, documents out: text is split into seq_len windows, pairs and chats are cut at
// seq_len, documents of fewer than two tokens are dropped. The offsets and counts are kept here.
class DocumentMaker {
 public:
  DocumentMaker(const Tokenizer& tok, const TokenizeOptions& opt, DocumentSink& sink)
      : tok_(tok), opt_(opt), sink_(sink), format_(opt.chat_format) {
    ONN_CHECK_ARG(opt.seq_len >= 2, "--seq-len must be at least 2, got ", opt.seq_len);
    if (tok.bos_id()) bos_text_ = tok.id_to_token(*tok.bos_id());
    if (tok.eos_id()) eos_.push_back(*tok.eos_id());
  }

  // Text: BOS as the tokenizer adds it, EOS appended; pairs: prompt then completion + EOS; chat:
  // the template, assistant turns and their end tokens as targets.
  void add(const Example& e) {
    switch (e.kind) {
      case Example::Kind::text:
        push(tok_.encode(e.text, true), true);
        push(eos_, true);
        return close(true);
      case Example::Kind::pair:
        push(tok_.encode(e.prompt, true), opt_.train_on_inputs);
        push(tok_.encode(e.completion, false), true);
        push(eos_, true);
        return close(false);
      case Example::Kind::chat:
        chat(e);
        return close(false);
    }
  }

  int64_t documents() const { return static_cast<int64_t>(offsets.size()) - 1; }

  std::vector<int64_t> offsets{0};
  int64_t truncated = 0;
  CorpusSums sums;

 private:
  void push(const std::vector<int32_t>& ids, bool target) {
    ids_.insert(ids_.end(), ids.begin(), ids.end());
    target_.insert(target_.end(), ids.size(), target ? 1 : 0);
  }

  // The conversation is rendered once; each assistant turn's content and the end token right
  // after it are targets, the rest is prompt. A turn's content is searched for after its
  // header: the common prefix of the whole text and the prompt that opens that turn (templates
  // such as Qwen3's change earlier turns, so no render is a prefix of the next in general).
  void chat(const Example& e) {
    const ChatFormat format = chat_format_for(e);
    const std::string full = format_chat(format, e.messages, false, bos_text_);
    const std::vector<std::string> ends = chat_end_tokens(format);
    size_t at = 0;
    for (size_t i = 0; i < e.messages.size(); ++i) {
      if (e.messages[i].role != "assistant") continue;
      const std::vector<ChatMessage> before(e.messages.begin(), e.messages.begin() + static_cast<long>(i));
      const std::string prompt = format_chat(format, before, true, bos_text_);
      const size_t header = static_cast<size_t>(
          std::mismatch(prompt.begin(), prompt.end(), full.begin(), full.end()).first - prompt.begin());
      const std::string& content = e.messages[i].content;
      const size_t p = full.find(content, std::max(at, header));
      if (p == std::string::npos)
        throw InvalidArgument(e.where + ": the chat template lost assistant turn " + std::to_string(i));
      size_t q = p + content.size();
      for (const std::string& end : ends)
        if (full.compare(q, end.size(), end) == 0) {
          q += end.size();
          break;
        }
      push(tok_.encode(full.substr(at, p - at), false), opt_.train_on_inputs);
      push(tok_.encode(full.substr(p, q - p), false), true);
      at = q;
    }
    push(tok_.encode(full.substr(at), false), opt_.train_on_inputs);
  }

  // --chat-format, else the tokenizer's template (detected at the first chat record).
  ChatFormat chat_format_for(const Example& e) {
    if (format_) return *format_;
    if (tok_.chat_template().empty())
      throw InvalidArgument(e.where + ": chat records need a chat template, and the tokenizer has none; pick one "
                            "with --chat-format (" + chat_format_names() + ")");
    try {
      format_ = detect_chat_format(tok_.chat_template());
    } catch (const InvalidArgument& err) {
      throw InvalidArgument(e.where + ": " + err.what());
    }
    return *format_;
  }

  // The example's tokens as documents: longer than seq_len, text continues in the next window
  // (a 1-token tail teaches nothing and is dropped), others are cut.
  void close(bool split) {
    const size_t len = ids_.size(), window = static_cast<size_t>(opt_.seq_len);
    if (len <= window) {
      if (len >= 2) emit(0, len);
    } else if (!split) {
      emit(0, window);
      ++truncated;
    } else {
      for (size_t s = 0; s < len; s += window)
        if (std::min(len, s + window) - s >= 2) emit(s, std::min(len, s + window));
    }
    ids_.clear();
    target_.clear();
  }

  void emit(size_t begin, size_t end) {
    const std::span<const int32_t> ids(ids_.data() + begin, end - begin);
    const std::span<const uint8_t> target(target_.data() + begin, end - begin);
    sink_.append(ids, target);
    sums.add_document(ids, target);
    offsets.push_back(offsets.back() + static_cast<int64_t>(end - begin));
  }

  const Tokenizer& tok_;
  const TokenizeOptions& opt_;
  DocumentSink& sink_;
  std::optional<ChatFormat> format_;
  std::string bos_text_;
  std::vector<int32_t> eos_;
  std::vector<int32_t> ids_;  // the example being made into documents
  std::vector<uint8_t> target_;
};

// The counts a cache file carries in its metadata.
struct CorpusCounts {
  int64_t truncated = 0, targets = 0;
  uint64_t fnv1a = 0;
};

// A cache file of `docs` documents over `tokens` tokens, its bytes from `fill`, a chunk at a time.
void write_corpus_file(const std::string& path, int64_t docs, int64_t tokens, const CorpusCounts& n,
                       const TensorChunkFill& fill) {
  write_safetensors_chunked(path,
                            {{kOffsetsName, DType::i64, {docs + 1}},
                             {kIdsName, DType::i32, {tokens}},
                             {kTargetName, DType::u8, {tokens}}},
                            fill, kCorpusChunkBytes,
                            {{"truncated", std::to_string(n.truncated)},
                             {"targets", std::to_string(n.targets)},
                             {"fnv1a", std::to_string(n.fnv1a)}});
}

// Tensor t of a mapped file as an array of T (the caller checks its alignment).
template <typename T>
std::span<const T> array_of(const SafetensorsFile& f, const TensorInfo& t) {
  const std::span<const uint8_t> b = f.bytes(t);
  return {reinterpret_cast<const T*>(b.data()), b.size() / sizeof(T)};
}

// The corpus over a mapped cache file; nullopt for one that is not a consistent cache.
std::optional<Corpus> map_corpus(const std::string& path) {
  auto f = std::make_shared<SafetensorsFile>(SafetensorsFile::open(path));
  const TensorInfo *offsets = f->find(kOffsetsName), *ids = f->find(kIdsName), *target = f->find(kTargetName);
  if (!offsets || !ids || !target || offsets->dtype != DType::i64 || ids->dtype != DType::i32 ||
      target->dtype != DType::u8 || ids->numel() != target->numel())
    return std::nullopt;
  Corpus c;
  c.offsets = array_of<int64_t>(*f, *offsets);
  c.ids = array_of<int32_t>(*f, *ids);
  c.target = array_of<uint8_t>(*f, *target);
  if (reinterpret_cast<uintptr_t>(c.offsets.data()) % alignof(int64_t) != 0 ||
      reinterpret_cast<uintptr_t>(c.ids.data()) % alignof(int32_t) != 0 || !partitions(c.offsets, c.ids.size()))
    return std::nullopt;
  const auto& meta = f->metadata();
  const auto number = [&](const char* key) {
    const auto it = meta.find(key);
    if (it == meta.end()) throw FormatError(path + ": no " + key);
    return it->second;
  };
  c.truncated = std::stoll(number("truncated"));
  c.targets = std::stoll(number("targets"));
  c.fnv1a = std::stoull(number("fnv1a"));
  c.storage = std::move(f);
  return c;
}

// Streams src.data's records through `tok` into a cache file (src.cache, or a private one when
// the cache is not to be written) and maps it. The cache's folder exists.
Corpus tokenize_into_cache(const CorpusSource& src, const Tokenizer& tok, const nlohmann::json& fp,
                           DataReport& report) {
  ReadOptions ro;
  ro.skip_bad_records = src.skip_bad_records;
  ro.columns = parse_column_map(src.data_columns);
  TokenizeOptions to;
  to.seq_len = src.seq_len;
  to.train_on_inputs = src.train_on_inputs;
  if (!src.chat_format.empty()) to.chat_format = chat_format_from_name(src.chat_format);
  SpillSink spill(src.cache);
  DocumentMaker maker(tok, to, spill);
  for_each_example(src.data, ro, report, [&](Example& e) {
    maker.add(e);
    return true;
  });
  if (maker.documents() == 0) throw InvalidArgument(src.data + ": no document of two or more tokens");
  spill.ids.flush();
  spill.target.flush();
  const std::string json = src.cache + ".json", file = src.write_cache ? src.cache + ".safetensors"
                                                                         : unique_path(src.cache + ".rank");
  if (src.write_cache) fs::remove(json);  // a cache file is never paired with another's fingerprint
  const std::span<const int64_t> offsets(maker.offsets);
  write_corpus_file(file, maker.documents(), offsets.back(),
                    {maker.truncated, maker.sums.targets, maker.sums.fingerprint(offsets)},
                    [&](const TensorSpec& t, uint64_t at, std::span<uint8_t> out) {
                      if (t.name == kOffsetsName)
                        std::memcpy(out.data(), reinterpret_cast<const uint8_t*>(offsets.data()) + at, out.size());
                      else
                        (t.name == kIdsName ? spill.ids : spill.target).read(at, out);
                    });
  std::optional<Corpus> c = map_corpus(file);
  if (src.write_cache) write_file_atomic(json, fp.dump(2) + "\n");  // last: a cache without it is never used
  else fs::remove(file);  // the mapping stays
  if (!c) throw IoError(file + ": the corpus just written does not read back");
  return *c;
}

}  // namespace

Corpus Corpus::from_vectors(std::vector<int32_t> ids, std::vector<uint8_t> target, std::vector<int64_t> offsets,
                            int64_t truncated) {
  ONN_CHECK_ARG(target.size() == ids.size() && partitions(offsets, ids.size()),
                "a corpus needs one target per id and offsets from 0 to the token count, never decreasing");
  struct Arrays {
    std::vector<int32_t> ids;
    std::vector<uint8_t> target;
    std::vector<int64_t> offsets;
  };
  auto a = std::make_shared<Arrays>(Arrays{std::move(ids), std::move(target), std::move(offsets)});
  Corpus c;
  c.ids = a->ids;
  c.target = a->target;
  c.offsets = a->offsets;
  c.truncated = truncated;
  CorpusSums sums;
  for (int64_t d = 0; d < c.documents(); ++d) {
    const auto b = static_cast<size_t>(c.offsets[static_cast<size_t>(d)]), n = static_cast<size_t>(c.length(d));
    sums.add_document(c.ids.subspan(b, n), c.target.subspan(b, n));
  }
  c.targets = sums.targets;
  c.fnv1a = sums.fingerprint(c.offsets);
  c.storage = std::move(a);
  return c;
}

Corpus tokenize_examples(const Tokenizer& tok, const std::vector<Example>& examples, const TokenizeOptions& opt) {
  VectorSink sink;
  DocumentMaker maker(tok, opt, sink);
  for (const Example& e : examples) maker.add(e);
  return Corpus::from_vectors(std::move(sink.ids), std::move(sink.target), std::move(maker.offsets), maker.truncated);
}

void save_corpus(const Corpus& c, const std::string& path, const nlohmann::json& fingerprint) {
  const auto bytes_of = [](const auto& span) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(span.data()), span.size_bytes());
  };
  fs::remove(path + ".json");
  write_corpus_file(path + ".safetensors", c.documents(), static_cast<int64_t>(c.ids.size()),
                    {c.truncated, c.targets, c.fnv1a},
                    [&](const TensorSpec& t, uint64_t at, std::span<uint8_t> out) {
                      const std::span<const uint8_t> from = t.name == kOffsetsName ? bytes_of(c.offsets)
                                                            : t.name == kIdsName   ? bytes_of(c.ids)
                                                                                   : bytes_of(c.target);
                      std::memcpy(out.data(), from.data() + at, out.size());
                    });
  write_file_atomic(path + ".json", fingerprint.dump(2) + "\n");  // written last: a cache without it is never used
}

std::optional<Corpus> load_corpus(const std::string& path, const nlohmann::json& fingerprint) {
  std::error_code ec;
  if (!fs::exists(path + ".json", ec) || !fs::exists(path + ".safetensors", ec))
    return std::nullopt;
  try {
    if (read_json_file(path + ".json", 1 << 24) != fingerprint) return std::nullopt;
    return map_corpus(path + ".safetensors");
  } catch (const Error&) {
    return std::nullopt;  // a damaged cache is rebuilt, never trusted
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

Corpus load_or_tokenize_corpus(const CorpusSource& src, const Tokenizer& tok, DataReport& report, bool& from_cache) {
  const nlohmann::json fp = corpus_fingerprint(src);
  if (std::optional<Corpus> cached = load_corpus(src.cache, fp)) {
    from_cache = true;
    return *cached;
  }
  from_cache = false;
  // A folder made here for the cache goes again when the data is refused (it holds nothing).
  const fs::path dir = fs::path(src.cache).parent_path();
  const bool made = fs::create_directories(dir);
  try {
    return tokenize_into_cache(src, tok, fp, report);
  } catch (...) {
    std::error_code ec;
    if (made) fs::remove(dir, ec);  // only if empty
    throw;
  }
}

void split_documents(const Corpus& c, double fraction, uint64_t seed, std::vector<int64_t>& train,
                     std::vector<int64_t>& val) {
  ONN_CHECK_ARG(fraction >= 0 && fraction < 1, "--val-split must be in [0, 1), got ", fraction);
  std::vector<int64_t> all(static_cast<size_t>(c.documents()));
  std::iota(all.begin(), all.end(), 0);
  shuffle(all, counter_hash(seed, 0x5eed5011ull));
  int64_t n_val = static_cast<int64_t>(fraction * static_cast<double>(all.size()));
  if (fraction > 0 && n_val == 0 && all.size() >= 2) n_val = 1;
  val.assign(all.begin(), all.begin() + n_val);
  train.assign(all.begin() + n_val, all.end());
  std::sort(val.begin(), val.end());
  std::sort(train.begin(), train.end());
}

EpochPlan plan_epoch(const Corpus& c, const std::vector<int64_t>& docs, const PackOptions& opt, uint64_t seed,
                     int64_t epoch) {
  ONN_CHECK_ARG(opt.seq_len >= 2 && opt.micro_batch >= 1, "packing: seq_len >= 2 and micro_batch >= 1");
  EpochPlan plan;
  plan.docs = docs;
  if (opt.shuffle) shuffle(plan.docs, counter_hash(seed, static_cast<uint64_t>(epoch)));
  int64_t rows = 0, room = 0;
  for (size_t i = 0; i < plan.docs.size(); ++i) {
    const int64_t len = std::min(c.length(plan.docs[i]), opt.seq_len);
    if (!opt.packing || len > room) {  // a new row
      if (rows == opt.micro_batch) {
        plan.starts.push_back(static_cast<int64_t>(i));
        rows = 0;
      }
      ++rows;
      room = opt.seq_len;
    }
    room -= len;
  }
  if (!plan.docs.empty()) plan.starts.push_back(static_cast<int64_t>(plan.docs.size()));
  return plan;
}

int64_t batch_target_tokens(const Corpus& c, std::span<const int64_t> docs) {
  int64_t n = 0;
  for (int64_t d : docs)
    for (int64_t t = c.offsets[static_cast<size_t>(d)] + 1; t < c.offsets[static_cast<size_t>(d) + 1]; ++t)
      n += c.target[static_cast<size_t>(t)];
  return n;
}

TrainBatch make_batch(Context& ctx, const Corpus& c, std::span<const int64_t> docs) {
  std::vector<int32_t> ids, pos, labels;
  std::vector<int64_t> lens;
  for (int64_t d : docs) {
    const int64_t begin = c.offsets[static_cast<size_t>(d)], end = c.offsets[static_cast<size_t>(d) + 1];
    for (int64_t t = begin; t < end; ++t) {
      ids.push_back(c.ids[static_cast<size_t>(t)]);
      pos.push_back(static_cast<int32_t>(t - begin));
      labels.push_back(t + 1 < end && c.target[static_cast<size_t>(t) + 1] ? c.ids[static_cast<size_t>(t) + 1]
                                                                           : kIgnoreIndex);
    }
    lens.push_back(end - begin);
  }
  const auto host_tensor = [&](const std::vector<int32_t>& v) {
    Tensor host = Tensor::empty(Shape{static_cast<int64_t>(v.size())}, DType::i32);
    std::copy(v.begin(), v.end(), host.data_as<int32_t>());
    return host;
  };
  const auto upload = [&](const Tensor& host) { return ctx.device().is_cpu() ? host : host.to(ctx.device()); };
  TrainBatch b;
  b.host_ids = host_tensor(ids);
  b.ids = upload(b.host_ids);
  b.positions = upload(host_tensor(pos));
  b.labels = upload(host_tensor(labels));
  b.seqs = packed_seqs(ctx, lens);
  return b;
}

}  // namespace onn
