// Tokenization with loss masks, the corpus cache, the split and the packing.
#include "train/dataset.h"

#include <algorithm>
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
          {"skip_bad_records", src.skip_bad_records}, {"data_columns", src.data_columns}, {"version", 1}};
}

void append(Corpus& c, const std::vector<int32_t>& ids, bool target) {
  c.ids.insert(c.ids.end(), ids.begin(), ids.end());
  c.target.insert(c.target.end(), ids.size(), target ? 1 : 0);
}

}  // namespace

int64_t Corpus::target_tokens() const {
  int64_t n = 0;
  for (int64_t d = 0; d < documents(); ++d)
    for (int64_t t = offsets[static_cast<size_t>(d)] + 1; t < offsets[static_cast<size_t>(d) + 1]; ++t)
      n += target[static_cast<size_t>(t)];
  return n;
}

Corpus tokenize_examples(const Tokenizer& tok, const std::vector<Example>& examples, const TokenizeOptions& opt) {
  ONN_CHECK_ARG(opt.seq_len >= 2, "--seq-len must be at least 2, got ", opt.seq_len);
  Corpus c;
  c.offsets.push_back(0);
  std::optional<ChatFormat> format = opt.chat_format;
  const std::string bos_text = tok.bos_id() ? tok.id_to_token(*tok.bos_id()) : std::string();
  const auto close = [&](int64_t start, bool split) {
    // Documents longer than seq_len: text continues in the next window, others are cut.
    const int64_t len = static_cast<int64_t>(c.ids.size()) - start;
    if (len <= opt.seq_len) {
      if (len >= 2) c.offsets.push_back(static_cast<int64_t>(c.ids.size()));
      else c.ids.resize(static_cast<size_t>(start)), c.target.resize(static_cast<size_t>(start));
      return;
    }
    if (!split) {
      c.ids.resize(static_cast<size_t>(start + opt.seq_len));
      c.target.resize(static_cast<size_t>(start + opt.seq_len));
      c.offsets.push_back(static_cast<int64_t>(c.ids.size()));
      ++c.truncated;
      return;
    }
    for (int64_t s = start + opt.seq_len; s < start + len; s += opt.seq_len) c.offsets.push_back(s);
    if (c.ids.size() - static_cast<size_t>(c.offsets.back()) < 2) {  // a 1-token tail teaches nothing
      c.ids.resize(static_cast<size_t>(c.offsets.back()));
      c.target.resize(static_cast<size_t>(c.offsets.back()));
    } else {
      c.offsets.push_back(static_cast<int64_t>(c.ids.size()));
    }
  };
  std::vector<int32_t> eos;
  if (tok.eos_id()) eos.push_back(*tok.eos_id());
  for (const Example& e : examples) {
    const int64_t start = static_cast<int64_t>(c.ids.size());
    switch (e.kind) {
      case Example::Kind::text: {
        std::vector<int32_t> ids = tok.encode(e.text, true);
        ids.insert(ids.end(), eos.begin(), eos.end());
        append(c, ids, true);
        close(start, true);
        break;
      }
      case Example::Kind::pair: {
        append(c, tok.encode(e.prompt, true), opt.train_on_inputs);
        std::vector<int32_t> ids = tok.encode(e.completion, false);
        ids.insert(ids.end(), eos.begin(), eos.end());
        append(c, ids, true);
        close(start, false);
        break;
      }
      case Example::Kind::chat: {
        if (!format) {
          if (tok.chat_template().empty())
            throw InvalidArgument(e.where + ": chat records need a chat template, and the tokenizer has none; pick one "
                                  "with --chat-format (" + chat_format_names() + ")");
          try {
            format = detect_chat_format(tok.chat_template());
          } catch (const InvalidArgument& err) {
            throw InvalidArgument(e.where + ": " + err.what());
          }
        }
        // The conversation is rendered once; each assistant turn's content and the end token
        // right after it are targets, the rest is prompt. A turn's content is searched for
        // after its header: the common prefix of the whole text and the prompt that opens
        // that turn (templates such as Qwen3's change earlier turns, so no render is a prefix
        // of the next in general).
        const std::string full = format_chat(*format, e.messages, false, bos_text);
        const std::vector<std::string> ends = chat_end_tokens(*format);
        size_t at = 0;
        for (size_t i = 0; i < e.messages.size(); ++i) {
          if (e.messages[i].role != "assistant") continue;
          const std::vector<ChatMessage> before(e.messages.begin(), e.messages.begin() + static_cast<long>(i));
          const std::string prompt = format_chat(*format, before, true, bos_text);
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
          append(c, tok.encode(full.substr(at, p - at), false), opt.train_on_inputs);
          append(c, tok.encode(full.substr(p, q - p), false), true);
          at = q;
        }
        append(c, tok.encode(full.substr(at), false), opt.train_on_inputs);
        close(start, false);
        break;
      }
    }
  }
  return c;
}

void save_corpus(const Corpus& c, const std::string& path, const nlohmann::json& fingerprint) {
  const auto i64 = static_cast<uint64_t>(sizeof(int64_t));
  std::vector<TensorBytes> t = {
      {"ids", DType::i32, {static_cast<int64_t>(c.ids.size())}, c.ids.data(), c.ids.size() * sizeof(int32_t)},
      {"target", DType::u8, {static_cast<int64_t>(c.target.size())}, c.target.data(), c.target.size()},
      {"offsets", DType::i64, {static_cast<int64_t>(c.offsets.size())}, c.offsets.data(), c.offsets.size() * i64}};
  write_safetensors(path + ".safetensors", t, {{"truncated", std::to_string(c.truncated)}});
  write_file_atomic(path + ".json", fingerprint.dump(2) + "\n");  // written last: a cache without it is never used
}

std::optional<Corpus> load_corpus(const std::string& path, const nlohmann::json& fingerprint) {
  std::error_code ec;
  if (!fs::exists(path + ".json", ec) || !fs::exists(path + ".safetensors", ec))
    return std::nullopt;
  try {
    if (read_json_file(path + ".json", 1 << 24) != fingerprint) return std::nullopt;
    const SafetensorsFile f = SafetensorsFile::open(path + ".safetensors");
    Corpus c;
    const Tensor ids = f.tensor("ids"), target = f.tensor("target"), offsets = f.tensor("offsets");
    if (ids.dtype() != DType::i32 || target.dtype() != DType::u8 || offsets.dtype() != DType::i64 ||
        ids.numel() != target.numel() || offsets.numel() < 1)
      return std::nullopt;
    c.ids.assign(ids.data_as<int32_t>(), ids.data_as<int32_t>() + ids.numel());
    c.target.assign(target.data_as<uint8_t>(), target.data_as<uint8_t>() + target.numel());
    c.offsets.assign(offsets.data_as<int64_t>(), offsets.data_as<int64_t>() + offsets.numel());
    for (size_t i = 0; i < c.offsets.size(); ++i)
      if (c.offsets[i] < 0 || c.offsets[i] > ids.numel() || (i > 0 && c.offsets[i] < c.offsets[i - 1]) ||
          (i == 0 && c.offsets[0] != 0) || (i + 1 == c.offsets.size() && c.offsets[i] != ids.numel()))
        return std::nullopt;
    const auto it = f.metadata().find("truncated");
    c.truncated = it == f.metadata().end() ? 0 : std::stoll(it->second);
    return c;
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
  ReadOptions ro;
  ro.skip_bad_records = src.skip_bad_records;
  ro.columns = parse_column_map(src.data_columns);
  const std::vector<Example> examples = read_examples(src.data, ro, report);
  TokenizeOptions to;
  to.seq_len = src.seq_len;
  to.train_on_inputs = src.train_on_inputs;
  if (!src.chat_format.empty()) to.chat_format = chat_format_from_name(src.chat_format);
  Corpus corpus = tokenize_examples(tok, examples, to);
  if (corpus.documents() == 0) throw InvalidArgument(src.data + ": no document of two or more tokens");
  if (src.write_cache) {
    fs::create_directories(fs::path(src.cache).parent_path());
    save_corpus(corpus, src.cache, fp);
  }
  return corpus;
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

std::vector<std::vector<int64_t>> plan_epoch(const Corpus& c, const std::vector<int64_t>& docs, const PackOptions& opt,
                                             uint64_t seed, int64_t epoch) {
  ONN_CHECK_ARG(opt.seq_len >= 2 && opt.micro_batch >= 1, "packing: seq_len >= 2 and micro_batch >= 1");
  std::vector<int64_t> order = docs;
  if (opt.shuffle) shuffle(order, counter_hash(seed, static_cast<uint64_t>(epoch)));
  std::vector<std::vector<int64_t>> batches;
  std::vector<int64_t> current;
  int64_t rows = 0, room = 0;
  for (int64_t d : order) {
    const int64_t len = std::min(c.length(d), opt.seq_len);
    if (!opt.packing || len > room) {  // a new row
      if (rows == opt.micro_batch) {
        batches.push_back(std::move(current));
        current.clear();
        rows = 0;
      }
      ++rows;
      room = opt.seq_len;
    }
    current.push_back(d);
    room -= len;
  }
  if (!current.empty()) batches.push_back(std::move(current));
  return batches;
}

int64_t batch_target_tokens(const Corpus& c, const std::vector<int64_t>& docs) {
  int64_t n = 0;
  for (int64_t d : docs)
    for (int64_t t = c.offsets[static_cast<size_t>(d)] + 1; t < c.offsets[static_cast<size_t>(d) + 1]; ++t)
      n += c.target[static_cast<size_t>(t)];
  return n;
}

TrainBatch make_batch(Context& ctx, const Corpus& c, const std::vector<int64_t>& docs) {
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
