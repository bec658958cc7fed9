// onn-tokenize: token ids of a text, a file or JSONL records with a model's tokenizer.json, or
// (--decode) the text of a JSON array of ids.
#include <iostream>

#include "model/tokenizer.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/json.h"
#include "tools/cli.h"

namespace {

std::string ids_json(const std::vector<int32_t>& ids) {
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) out += (i ? "," : "") + std::to_string(ids[i]);
  return out + "]";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"onn-tokenize: print the token ids of a text (a JSON array; one per line with --jsonl), or with "
               "--decode the text of a JSON array of ids"};
  std::string model, tokenizer, text, file, jsonl;
  bool no_special = false, decode = false;
  auto* src = app.add_option_group("tokenizer", "where the tokenizer comes from");
  src->add_option("--model", model, "a Hugging Face model folder holding tokenizer.json");
  src->add_option("--tokenizer", tokenizer, "a tokenizer.json file");
  src->require_option(1);
  auto* in = app.add_option_group("input", "what to tokenize");
  in->add_option("--text", text, "the text itself");
  in->add_option("--file", file, "a file whose whole content is the text");
  in->add_option("--jsonl", jsonl, "a file of JSON lines {\"text\": ...}, one id array printed per line");
  in->require_option(1);
  app.add_flag("--no-special", no_special, "leave out the special tokens the tokenizer adds (BOS, ...)");
  app.add_flag("--decode", decode, "the input (--text or --file) is a JSON array of ids: print its text");
  return onn::tools::run_cli(app, "onn-tokenize", argc, argv, [&] {
    const onn::Tokenizer tok = onn::Tokenizer::load(model.empty() ? tokenizer : model);
    if (decode) {
      if (!jsonl.empty()) throw onn::InvalidArgument("--decode reads --text or --file, not --jsonl");
      const std::string source = file.empty() ? "--text" : file;
      const nlohmann::json j = onn::parse_json_strict(file.empty() ? text : onn::read_file(file, size_t{1} << 32), source);
      if (!j.is_array()) throw onn::InvalidArgument(source + ": expected a JSON array of token ids");
      std::vector<int32_t> ids;
      for (const auto& x : j) {
        if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > INT32_MAX)
          throw onn::InvalidArgument(source + ": " + x.dump() + " is not a token id");
        ids.push_back(static_cast<int32_t>(x.get<int64_t>()));
      }
      std::cout << tok.decode(ids, no_special) << "\n";
      return 0;
    }
    if (!jsonl.empty()) {
      for (const std::string& t : onn::tools::read_jsonl_texts(jsonl)) std::cout << ids_json(tok.encode(t, !no_special)) << "\n";
      return 0;
    }
    std::cout << ids_json(tok.encode(file.empty() ? text : onn::read_file(file, size_t{1} << 32), !no_special)) << "\n";
    return 0;
  });
}
