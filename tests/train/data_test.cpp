// Training data: every record layout and file type, each kind of bad record with its file,
// line and field (or skipped and reported), loss masks for prompts and chat turns, packing
// with document boundaries, the split, the epoch order and the corpus cache.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "kernels/cross_entropy.h"
#include "model/tokenizer.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/json.h"
#include "runtime/safetensors.h"
#include "support/test_util.h"
#include "train/data.h"
#include "train/dataset.h"

using namespace onn;
using namespace onn::test;

namespace {

std::string write(TempDir& dir, const std::string& name, const std::string& text) {
  const std::string p = dir.file(name);
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

std::vector<Example> read(const std::string& path, bool skip = false) {
  ReadOptions o;
  o.skip_bad_records = skip;
  DataReport r;
  return read_examples(path, o, r);
}


Tokenizer qwen() { return Tokenizer::load(std::string(ONN_TEST_DATA_DIR) + "/tokenizers/qwen3"); }

bool same_corpus(const Corpus& a, const Corpus& b) {
  return std::ranges::equal(a.ids, b.ids) && std::ranges::equal(a.target, b.target) &&
         std::ranges::equal(a.offsets, b.offsets) && a.targets == b.targets && a.fnv1a == b.fnv1a &&
         a.truncated == b.truncated;
}

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_CASE("every record layout and file type reads") {
  TempDir dir;
  const auto io = read(write(dir, "a.jsonl", "{\"input\":\"12+7=\",\"output\":\"19\"}\n\n{\"input\":\"1+1=\",\"output\":\"2\"}\n"));
  REQUIRE(io.size() == 2);
  CHECK(io[0].kind == Example::Kind::pair);
  CHECK(io[0].prompt == "12+7=");
  CHECK(io[1].completion == "2");
  CHECK(io[1].where == dir.file("a.jsonl") + ":3");  // blank lines count
  const auto pc = read(write(dir, "b.jsonl", "{\"prompt\":\"Q\",\"completion\":\"A\"}"));
  CHECK(pc[0].prompt == "Q");
  const auto ins = read(write(dir, "c.jsonl", "{\"instruction\":\"Add\",\"input\":\"1 2\",\"output\":\"3\"}\n"
                                              "{\"instruction\":\"Say hi\",\"output\":\"hi\"}\n"));
  CHECK(ins[0].prompt == "### Instruction:\nAdd\n\n### Input:\n1 2\n\n### Response:\n");
  CHECK(ins[1].prompt == "### Instruction:\nSay hi\n\n### Response:\n");
  const auto txt = read(write(dir, "d.jsonl", "{\"text\":\"hello world\"}\n"));
  CHECK(txt[0].kind == Example::Kind::text);
  const auto chat = read(write(dir, "e.json",
                               R"([{"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},
                                   {"role":"assistant","content":"a"}]}])"));
  REQUIRE(chat[0].messages.size() == 3);
  CHECK(chat[0].messages[2].role == "assistant");
  CHECK(chat[0].where == dir.file("e.json") + ": record 1");
  const auto plain = read(write(dir, "f.md", "# Title\n\nSome text.\n"));
  CHECK(plain[0].text == "# Title\n\nSome text.\n");
  // A folder: the supported files in name order, others and hidden files left out.
  std::filesystem::create_directory(dir.file("folder"));
  write(dir, "folder/2.txt", "second");
  write(dir, "folder/1.jsonl", "{\"text\":\"first\"}");
  write(dir, "folder/notes.csv", "a,b");
  write(dir, "folder/.hidden.txt", "x");
  const auto folder = read(dir.file("folder"));
  REQUIRE(folder.size() == 2);
  CHECK(folder[0].text == "first");
  CHECK(folder[1].text == "second");
}

TEST_CASE("bad records: file, line and field, or skipped and reported") {
  TempDir dir;
  struct Case {
    std::string name, text, message;
  };
  const std::vector<Case> cases = {
      {"m.jsonl", "{\"input\":\"a\",\"output\":\"b\"}\n{\"input\":\"c\"}\n", "m.jsonl:2: field \"output\" missing"},
      {"t.jsonl", "{\"input\":\"a\",\"output\":7}\n", "t.jsonl:1: field \"output\" must be a string"},
      {"j.jsonl", "{\"text\":\"a\"}\n{\"text\": \"b\"\n", "j.jsonl:2: invalid JSON"},
      {"u.jsonl", "{\"foo\":1}\n", "u.jsonl:1: no known fields; records are {\"text\"}"},
      {"e.jsonl", "{\"prompt\":\"a\",\"completion\":\"\"}\n", "e.jsonl:1: field \"completion\" is empty"},
      {"r.jsonl", "[1,2]\n", "r.jsonl:1: a record must be a JSON object"},
      {"c.jsonl", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}\n",
       "c.jsonl:1: field \"messages\" has no assistant turn"},
      {"c2.jsonl", "{\"messages\":[{\"role\":\"bot\",\"content\":\"hi\"}]}\n",
       "c2.jsonl:1: field \"messages[0].role\" is \"bot\"; roles: system, user, assistant"},
      {"c3.jsonl", "{\"messages\":[{\"role\":\"user\"}]}\n", "c3.jsonl:1: field \"messages[0].content\" missing"},
      {"d.jsonl", "{\"text\":\"a\",\"text\":\"b\"}\n", "d.jsonl:1: invalid JSON: duplicate key"},
      {"a.json", "{\"text\":\"a\"}", "a.json: a .json data file must hold an array of records"},
      {"r.json", "[{\"input\":\"a\",\"output\":\"b\"},{\"input\":\"a\"}]", "r.json: record 2: field \"output\" missing"},
      {"x.xml", "<a/>", "x.xml: unsupported data file type \".xml\""},
      {"w.csv", "input,output\nq,a\nq2,a2,extra\n", "w.csv:row 2: 3 fields where the header has 2"},
      {"u.csv", "input,output\n\"q,a\n", "u.csv:row 1: a quoted field is not closed"},
      {"h.csv", "input,input\nq,a\n", "h.csv:header: column names must be non-empty and distinct"},
      {"bad.txt", std::string("ok \xff\xfe"), "bad.txt: invalid UTF-8 at byte 3"},
      {"empty.jsonl", "\n\n", "empty.jsonl: no usable records"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const std::string path = write(dir, c.name, c.text);
    CHECK_THROWS_WITH_AS(read(path), doctest::Contains(c.message.c_str()), InvalidArgument);
  }
  CHECK_THROWS_AS(read(dir.file("missing.jsonl")), IoError);
  // Skipping: the good records stay, the bad ones are listed.
  const std::string mixed = write(dir, "mixed.jsonl",
                                  "{\"input\":\"a\",\"output\":\"b\"}\n{\"input\":\"c\"}\nnot json\n"
                                  "{\"input\":\"d\",\"output\":\"e\"}\n");
  ReadOptions o;
  o.skip_bad_records = true;
  DataReport r;
  const auto kept = read_examples(mixed, o, r);
  CHECK(kept.size() == 2);
  CHECK(r.records == 2);
  REQUIRE(r.skipped.size() == 2);
  CHECK(r.skipped[0] == mixed + ":2: field \"output\" missing");
  CHECK(r.skipped[1].find(mixed + ":3: invalid JSON") == 0);
}

TEST_CASE("loss masks: answers only by default, everything with train_on_inputs, chat assistant turns") {
  const Tokenizer tok = qwen();
  TokenizeOptions opt;
  opt.seq_len = 256;
  Example pair;
  pair.kind = Example::Kind::pair;
  pair.prompt = "What is 12+7?";
  pair.completion = " 19";
  const Corpus c = tokenize_examples(tok, {pair}, opt);
  const std::vector<int32_t> p = tok.encode(pair.prompt, true), a = tok.encode(pair.completion, false);
  REQUIRE(c.documents() == 1);
  REQUIRE(c.length(0) == static_cast<int64_t>(p.size() + a.size() + 1));  // + EOS
  for (size_t i = 0; i < c.ids.size(); ++i) CHECK(c.target[i] == (i >= p.size() ? 1 : 0));
  CHECK(c.ids.back() == *tok.eos_id());
  CHECK(c.target_tokens() == static_cast<int64_t>(a.size() + 1));
  opt.train_on_inputs = true;
  CHECK(tokenize_examples(tok, {pair}, opt).target_tokens() == c.length(0) - 1);
  opt.train_on_inputs = false;

  // Chat: the assistant turns and their end tokens are targets, the rest is prompt.
  Example chat;
  chat.kind = Example::Kind::chat;
  chat.messages = {{"user", "hi"}, {"assistant", "hello"}, {"user", "bye"}, {"assistant", "see you"}};
  const Corpus cc = tokenize_examples(tok, {chat}, opt);
  std::string targets;
  for (size_t i = 0; i < cc.ids.size(); ++i)
    if (cc.target[i]) targets += tok.decode(std::span<const int32_t>(&cc.ids[i], 1));
  CHECK(targets.find("hello<|im_end|>") != std::string::npos);
  CHECK(targets.find("see you<|im_end|>") != std::string::npos);
  CHECK(targets.find("hi") == std::string::npos);
  CHECK(targets.find("bye") == std::string::npos);
  CHECK(tok.decode(cc.ids) == format_chat(detect_chat_format(tok.chat_template()), chat.messages, false));

  // Without a template: a clear error naming the record.
  TempDir dir;
  const Tokenizer plain = Tokenizer::load(std::string(ONN_TEST_DATA_DIR) + "/tokenizers/sp32k");
  chat.where = "chat.jsonl:4";
  CHECK_THROWS_WITH_AS(tokenize_examples(plain, {chat}, opt),
                       doctest::Contains("chat.jsonl:4: chat records need a chat template"), InvalidArgument);
  opt.chat_format = ChatFormat::llama2;
  CHECK(tokenize_examples(plain, {chat}, opt).target_tokens() > 0);
}

TEST_CASE("long documents: text continues in the next window, answers are cut and counted") {
  const Tokenizer tok = qwen();
  TokenizeOptions opt;
  opt.seq_len = 8;
  Example text;
  text.kind = Example::Kind::text;
  for (int i = 0; i < 30; ++i) text.text += "word" + std::to_string(i) + " ";
  const Corpus c = tokenize_examples(tok, {text}, opt);
  CHECK(c.documents() > 3);
  for (int64_t d = 0; d < c.documents(); ++d) CHECK(c.length(d) <= 8);
  CHECK(c.truncated == 0);
  Example pair;
  pair.kind = Example::Kind::pair;
  pair.prompt = text.text;
  pair.completion = "end";
  const Corpus p = tokenize_examples(tok, {pair, pair}, opt);
  CHECK(p.documents() == 2);
  CHECK(p.length(0) == 8);
  CHECK(p.truncated == 2);
}

TEST_CASE("packing keeps documents whole, restarts positions, and labels only targets inside a document") {
  std::vector<int32_t> ids;
  std::vector<uint8_t> target;
  std::vector<int64_t> offsets = {0};
  for (int d = 0; d < 5; ++d) {
    for (int t = 0; t < 3 + d; ++t) {
      ids.push_back(100 * d + t);
      target.push_back(t >= 1 ? 1 : 0);
    }
    offsets.push_back(static_cast<int64_t>(ids.size()));
  }
  const Corpus c = Corpus::from_vectors(ids, target, offsets);
  CHECK(c.target_tokens() == 2 + 3 + 4 + 5 + 6);
  PackOptions o;
  o.seq_len = 8;
  o.micro_batch = 2;
  std::vector<int64_t> all = {0, 1, 2, 3, 4};
  const auto batches = plan_epoch(c, all, o, 1, 0);
  std::multiset<int64_t> seen;
  for (size_t i = 0; i < batches.size(); ++i) {
    // rows of 8: the documents of a micro-batch fit micro_batch rows
    int64_t tokens = 0;
    for (int64_t d : batches.batch(i)) tokens += c.length(d), seen.insert(d);
    CHECK(tokens <= 16);
  }
  CHECK(seen == std::multiset<int64_t>{0, 1, 2, 3, 4});  // every document exactly once
  CHECK(plan_epoch(c, all, o, 1, 0) == batches);        // a pure function of (seed, epoch)
  CHECK(plan_epoch(c, all, o, 1, 1) != batches);
  o.packing = false;
  CHECK(plan_epoch(c, all, o, 1, 0).size() == 3);  // one document per row: 2 + 2 + 1
  Context ctx(Device::cpu());
  const TrainBatch b = make_batch(ctx, c, std::vector<int64_t>{1, 3});
  const std::vector<int32_t> batch_ids(b.ids.data_as<int32_t>(), b.ids.data_as<int32_t>() + b.ids.numel());
  CHECK(batch_ids == std::vector<int32_t>{100, 101, 102, 103, 300, 301, 302, 303, 304, 305});
  const std::vector<int32_t> pos(b.positions.data_as<int32_t>(), b.positions.data_as<int32_t>() + 10);
  CHECK(pos == std::vector<int32_t>{0, 1, 2, 3, 0, 1, 2, 3, 4, 5});
  const std::vector<int32_t> labels(b.labels.data_as<int32_t>(), b.labels.data_as<int32_t>() + 10);
  CHECK(labels == std::vector<int32_t>{101, 102, 103, kIgnoreIndex, 301, 302, 303, 304, 305, kIgnoreIndex});
  CHECK(batch_target_tokens(c, std::vector<int64_t>{1, 3}) == 8);
  CHECK(b.seqs.max_seqlen == 6);
}

TEST_CASE("validation split and the corpus cache") {
  std::vector<int32_t> ids;
  std::vector<uint8_t> target;
  std::vector<int64_t> offsets = {0};
  for (int d = 0; d < 40; ++d) {
    ids.insert(ids.end(), {d, d + 1, d + 2});
    target.insert(target.end(), {0, 1, 1});
    offsets.push_back(static_cast<int64_t>(ids.size()));
  }
  Corpus c = Corpus::from_vectors(ids, target, offsets, 3);
  std::vector<int64_t> train, val;
  split_documents(c, 0.1, 3, train, val);
  CHECK(val.size() == 4);
  CHECK(train.size() == 36);
  std::vector<int64_t> t2, v2;
  split_documents(c, 0.1, 3, t2, v2);
  CHECK(v2 == val);
  split_documents(c, 0.01, 3, t2, v2);
  CHECK(v2.size() == 1);  // at least one validation document
  CHECK_THROWS_AS(split_documents(c, 1.0, 3, t2, v2), InvalidArgument);

  TempDir dir;
  const nlohmann::json fp = {{"data", "x.jsonl"}, {"seq_len", 8}};
  save_corpus(c, dir.file("corpus"), fp);
  const std::optional<Corpus> back = load_corpus(dir.file("corpus"), fp);
  REQUIRE(back.has_value());
  CHECK(same_corpus(*back, c));
  CHECK(back->truncated == 3);
  CHECK(!load_corpus(dir.file("corpus"), nlohmann::json{{"data", "x.jsonl"}, {"seq_len", 9}}).has_value());
  // Arrays that do not fit together are never used: offsets past the tokens, a target short.
  const auto tensors_of = [&](std::vector<int64_t> o, std::vector<uint8_t> t) {
    const std::map<std::string, std::string> meta = {{"truncated", "0"}, {"targets", "0"}, {"fnv1a", "0"}};
    write_safetensors(dir.file("corpus.safetensors"),
                      {{"doc_offsets", DType::i64, {static_cast<int64_t>(o.size())}, o.data(), o.size() * 8},
                       {"ids", DType::i32, {static_cast<int64_t>(ids.size())}, ids.data(), ids.size() * 4},
                       {"target", DType::u8, {static_cast<int64_t>(t.size())}, t.data(), t.size()}},
                      meta);
    return load_corpus(dir.file("corpus"), fp).has_value();
  };
  CHECK(tensors_of(offsets, target));
  std::vector<int64_t> past = offsets;
  past.back() += 1;
  CHECK(!tensors_of(past, target));
  std::vector<int64_t> down = offsets;
  down[5] = down[7];
  CHECK(!tensors_of(down, target));
  CHECK(!tensors_of(offsets, std::vector<uint8_t>(target.begin(), target.end() - 1)));
  write(dir, "corpus.safetensors", "garbage");
  CHECK(!load_corpus(dir.file("corpus"), fp).has_value());  // damaged: rebuilt, never trusted
  CHECK_THROWS_AS(Corpus::from_vectors(ids, target, past), InvalidArgument);
}

TEST_CASE("a training corpus is tokenized once, then served from its cache until an input changes") {
  TempDir dir;
  CorpusSource src;
  src.data = write(dir, "train.jsonl", "{\"text\": \"hello world, hello again\"}\n{\"text\": \"a second document\"}\n");
  src.model_dir = std::string(ONN_TEST_DATA_DIR) + "/tokenizers/qwen3";
  src.cache = dir.file("cache/train-corpus");
  src.seq_len = 16;
  const Tokenizer tok = qwen();
  DataReport report;
  bool cached = true;
  const Corpus first = load_or_tokenize_corpus(src, tok, report, cached);
  CHECK(!cached);
  CHECK(first.documents() == 2);
  bool again = false;
  const Corpus second = load_or_tokenize_corpus(src, tok, report, again);
  CHECK(again);
  CHECK(same_corpus(second, first));
  // Each input of the fingerprint misses the cache: an option, then the data file's contents.
  src.seq_len = 8;
  load_or_tokenize_corpus(src, tok, report, again);
  CHECK(!again);
  load_or_tokenize_corpus(src, tok, report, again);
  CHECK(again);
  write(dir, "train.jsonl", "{\"text\": \"one short document now\"}\n");
  const Corpus changed = load_or_tokenize_corpus(src, tok, report, again);
  CHECK(!again);
  CHECK(changed.documents() == 1);
  // Nothing to train on is an error naming the file, and leaves no folder or file behind.
  src.data = write(dir, "empty.jsonl", "");
  src.cache = dir.file("refused/cache/train-corpus");
  CHECK_THROWS_WITH_AS(load_or_tokenize_corpus(src, tok, report, again), doctest::Contains("empty.jsonl"),
                       InvalidArgument);
  CHECK(!std::filesystem::exists(dir.file("refused/cache")));
  src.data = write(dir, "bad.jsonl", "{\"text\": \"fine\"}\n{\"text\": 3}\n");
  CHECK_THROWS_WITH_AS(load_or_tokenize_corpus(src, tok, report, again), doctest::Contains("bad.jsonl:2"),
                       InvalidArgument);
  CHECK(!std::filesystem::exists(dir.file("refused/cache")));
}

TEST_CASE("records stream from the files into the cache: the corpus tokenized in memory, no spill file left") {
  TempDir dir;
  std::filesystem::create_directories(dir.file("data"));
  std::string long_text;
  for (int i = 0; i < 40; ++i) long_text += "word" + std::to_string(i) + " ";
  write(dir, "data/a.jsonl", "{\"text\": \"" + long_text + "\"}\n{\"text\": \"short\"}\n");
  write(dir, "data/b.jsonl", "{\"input\": \"a longer question, cut at eight\", \"output\": \" an answer\"}\n");
  write(dir, "data/d.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, "
                             "{\"role\": \"assistant\", \"content\": \"hello\"}]}\n");
  write(dir, "data/c.csv", "input,output\n\"q, one\",a one\nq two,\"a \"\"two\"\"\"\n");
  std::filesystem::copy_file(std::string(ONN_TEST_DATA_DIR) + "/parquet/pairs_zstd.parquet", dir.file("data/e.parquet"));
  const Tokenizer tok = qwen();
  TokenizeOptions to;
  to.seq_len = 8;
  const Corpus in_memory = tokenize_examples(tok, read(dir.file("data")), to);
  CHECK(in_memory.documents() > 10);
  CHECK(in_memory.truncated > 0);

  CorpusSource src;
  src.data = dir.file("data");
  src.model_dir = std::string(ONN_TEST_DATA_DIR) + "/tokenizers/qwen3";
  src.cache = dir.file("cache/train-corpus");
  src.seq_len = 8;
  DataReport report;
  bool cached = true;
  CHECK(same_corpus(load_or_tokenize_corpus(src, tok, report, cached), in_memory));
  CHECK(!cached);
  CHECK(report.files.size() == 5);
  CHECK(names_in(dir.file("cache")) == std::vector<std::string>{"train-corpus.json", "train-corpus.safetensors"});
  // A rank that does not write the cache maps a private file and removes it at once.
  src.cache = dir.file("private/train-corpus");
  src.write_cache = false;
  const Corpus mine = load_or_tokenize_corpus(src, tok, report, cached);
  CHECK(same_corpus(mine, in_memory));
  CHECK(names_in(dir.file("private")).empty());
  // A copy shares the arrays.
  const Corpus copy = mine;
  CHECK(copy.ids.data() == mine.ids.data());
}

TEST_CASE("a CSV file's UTF-8 is checked in windows: a character across a window's end reads, a bad byte past it is named") {
  TempDir dir;
  constexpr size_t kWindow = size_t{8} << 20;  // the reader's release step
  // The header, then one row whose field runs past the first window with an "é" (2 bytes) cut
  // by the window's end.
  std::string text = "text\n";
  text += std::string(kWindow - 1 - text.size(), 'a');
  text += "\xc3\xa9 and more\n";
  const std::string good = write(dir, "good.csv", text);
  const std::vector<Example> rows = read(good);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].text.size() == text.size() - 6);
  std::string bad = text;
  bad[kWindow + 5] = '\xff';
  const std::string at_bad = "bad.csv: invalid UTF-8 at byte " + std::to_string(kWindow + 5);
  CHECK_THROWS_WITH_AS(read(write(dir, "bad.csv", bad)), doctest::Contains(at_bad.c_str()), InvalidArgument);
  bad = text;
  bad[kWindow] = 'x';  // the "é" cut in two: its lead byte is the window's last
  const std::string at_cut = "cut.csv: invalid UTF-8 at byte " + std::to_string(kWindow - 1);
  CHECK_THROWS_WITH_AS(read(write(dir, "cut.csv", bad)), doctest::Contains(at_cut.c_str()), InvalidArgument);
}

TEST_CASE("for_each_example stops when its callback says so") {
  TempDir dir;
  const std::string path = write(dir, "d.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"text\": \"c\"}\n");
  DataReport r;
  std::vector<std::string> seen;
  for_each_example(path, {}, r, [&](Example& e) {
    seen.push_back(e.text);
    return seen.size() < 2;
  });
  CHECK(seen == std::vector<std::string>{"a", "b"});
}

namespace {

// The records pyarrow read from a fixture, as a JSONL file.
std::string jsonl_of_rows(TempDir& dir, const std::string& fixture) {
  const nlohmann::json rows = read_json_file(std::string(ONN_TEST_DATA_DIR) + "/parquet/" + fixture + ".rows.json");
  std::string text;
  for (const nlohmann::json& r : rows) text += r.dump() + "\n";
  return write(dir, fixture + ".jsonl", text);
}

}  // namespace

TEST_CASE("parquet: records are the JSONL adapter's for the same rows, with file:row positions") {
  TempDir dir;
  const std::string fixtures = std::string(ONN_TEST_DATA_DIR) + "/parquet/";
  for (const std::string name : {"pairs_none", "pairs_snappy", "pairs_zstd", "pairs_gzip", "pairs_plain_v2", "messages"}) {
    CAPTURE(name);
    const bool chat = name == "messages";
    // The fixture's one empty messages list is a bad record in both.
    const std::vector<Example> want = read(jsonl_of_rows(dir, name), chat), got = read(fixtures + name + ".parquet", chat);
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      CHECK(got[i].kind == want[i].kind);
      CHECK(got[i].prompt == want[i].prompt);
      CHECK(got[i].completion == want[i].completion);
      REQUIRE(got[i].messages.size() == want[i].messages.size());
      for (size_t m = 0; m < want[i].messages.size(); ++m) {
        CHECK(got[i].messages[m].role == want[i].messages[m].role);
        CHECK(got[i].messages[m].content == want[i].messages[m].content);
      }
    }
    CHECK(got[0].where == fixtures + name + ".parquet:row 1");
  }
  // A null in a text column: a bad record at its row, or skipped and reported.
  const std::string typed = fixtures + "typed_nulls.parquet";
  CHECK_THROWS_WITH_AS(read(typed), doctest::Contains("typed_nulls.parquet:row 2: field \"text\" must be a string"),
                       InvalidArgument);
  ReadOptions o;
  o.skip_bad_records = true;
  DataReport r, rj;
  CHECK(read_examples(typed, o, r).size() == 4);  // "alpha", "gamma", "epsilon ...", "zeta"
  CHECK(read_examples(jsonl_of_rows(dir, "typed_nulls"), o, rj).size() == 4);
  CHECK(r.skipped.size() == 3);  // two nulls and an empty text, as in the JSONL
  CHECK(r.skipped[0].find("typed_nulls.parquet:row 2: ") != std::string::npos);
  // Columns no layout names: one line listing them.
  CHECK_THROWS_WITH_AS(read(fixtures + "qa.parquet"),
                       doctest::Contains("qa.parquet: no record layout fits its columns (answer, question)"),
                       InvalidArgument);
  // A broken file is a FormatError naming it, never a bad record to skip.
  std::string bytes = read_file(fixtures + "pairs_snappy.parquet", 1 << 20);
  bytes.resize(bytes.size() - 3);
  CHECK_THROWS_AS(read(write(dir, "cut.parquet", bytes), true), FormatError);
}

TEST_CASE("--data-columns maps other names onto the record fields, in Parquet and JSONL alike") {
  TempDir dir;
  ReadOptions o;
  o.columns = parse_column_map("question=input,answer=output");
  DataReport r;
  const std::vector<Example> got =
      read_examples(std::string(ONN_TEST_DATA_DIR) + "/parquet/qa.parquet", o, r);
  REQUIRE(got.size() == 10);
  CHECK(got[3].kind == Example::Kind::pair);
  CHECK(got[3].prompt == "Q3 is");
  CHECK(got[3].completion == " A3");
  DataReport rj;
  const std::vector<Example> jsonl =
      read_examples(write(dir, "qa.jsonl", "{\"question\": \"Q3 is\", \"answer\": \" A3\"}\n"), o, rj);
  CHECK(jsonl[0].prompt == "Q3 is");
  CHECK(jsonl[0].completion == " A3");
  CHECK_THROWS_WITH_AS(parse_column_map("question"), doctest::Contains("--data-columns: \"question\" is not COLUMN=FIELD"),
                       InvalidArgument);
  CHECK_THROWS_WITH_AS(parse_column_map("q=answer"), doctest::Contains("\"answer\" is not a record field"),
                       InvalidArgument);
}

TEST_CASE("CSV and TSV: RFC 4180 quoting, the JSONL adapter's records for the same rows") {
  TempDir dir;
  const std::string csv = write(dir, "d.csv",
                                "input,output\r\n"
                                "\"Q, with a comma\",\" A \"\"quoted\"\"\"\r\n"
                                "\"two\nlines\",plain\r\n"
                                "\r\n"  // a blank line
                                "last,row");  // no final line end
  const std::vector<Example> e = read(csv);
  REQUIRE(e.size() == 3);
  CHECK(e[0].prompt == "Q, with a comma");
  CHECK(e[0].completion == " A \"quoted\"");
  CHECK(e[1].prompt == "two\nlines");
  CHECK(e[2].completion == "row");
  CHECK(e[2].where == csv + ":row 3");
  CHECK_THROWS_WITH_AS(read(write(dir, "qa.csv", "question,answer\nq,a\n")),
                       doctest::Contains("qa.csv: no record layout fits its columns (answer, question)"), InvalidArgument);
  const std::vector<Example> t = read(write(dir, "d.tsv", "prompt\tcompletion\nQ1\t A1\n"));
  REQUIRE(t.size() == 1);
  CHECK(t[0].completion == " A1");
  // Bad rows skipped and reported like bad JSONL lines.
  ReadOptions o;
  o.skip_bad_records = true;
  DataReport r;
  CHECK(read_examples(write(dir, "s.csv", "input,output\nq,a\nq2\nq3,\n"), o, r).size() == 1);
  REQUIRE(r.skipped.size() == 2);
  CHECK(r.skipped[0].find("s.csv:row 2: 1 fields where the header has 2") != std::string::npos);
  CHECK(r.skipped[1].find("s.csv:row 3: field \"output\" is empty") != std::string::npos);
  // The same records as a Parquet fixture's, written as CSV: the same examples.
  std::string text = "input,output\n";
  const auto quote = [](const std::string& s) {
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  };
  for (const nlohmann::json& row : read_json_file(std::string(ONN_TEST_DATA_DIR) + "/parquet/pairs_none.rows.json"))
    text += quote(row["input"]) + "," + quote(row["output"]) + "\n";
  const std::vector<Example> from_csv = read(write(dir, "pairs.csv", text));
  const std::vector<Example> from_parquet = read(std::string(ONN_TEST_DATA_DIR) + "/parquet/pairs_none.parquet");
  REQUIRE(from_csv.size() == from_parquet.size());
  for (size_t i = 0; i < from_csv.size(); ++i) {
    CHECK(from_csv[i].prompt == from_parquet[i].prompt);
    CHECK(from_csv[i].completion == from_parquet[i].completion);
  }
}
