// Generation: greedy decoding through the KV cache picks the same tokens as argmax over a full
// forward of the growing sequence; sampling is a function of the seed; stop strings cut the
// text before them; streamed pieces add up to the text.
#include <doctest/doctest.h>

#include <string>

#include "kernels/attention.h"
#include "model/generate.h"
#include "model/init.h"
#include "support/test_util.h"

using namespace onn;

namespace {
const std::string kModel = std::string(ONN_TEST_DATA_DIR) + "/models/llama_gqa";
}  // namespace

TEST_CASE("greedy generation equals argmax over the full forward, step by step") {
  Context ctx(Device::cpu());
  const LlamaModel model = LlamaModel::load(ctx, kModel);
  const Tokenizer tok = Tokenizer::load(kModel);
  const std::vector<int32_t> prompt = tok.encode("The quick brown", true);
  GenerateOptions opt;
  opt.sampling.temperature = 0.0f;
  opt.max_new_tokens = 10;
  std::string streamed;
  const GenerateResult r = generate(ctx, model, tok, prompt, opt, [&](const std::string& s) { streamed += s; });
  REQUIRE(r.tokens.size() == 10);
  CHECK(r.finish_reason == "length");
  std::vector<int32_t> seq = prompt;
  for (int32_t want : r.tokens) {
    const int64_t n = static_cast<int64_t>(seq.size());
    Tensor ids = Tensor::empty(Shape{n}, DType::i32), pos = Tensor::empty(Shape{n}, DType::i32);
    for (int64_t i = 0; i < n; ++i) {
      ids.data_as<int32_t>()[i] = seq[static_cast<size_t>(i)];
      pos.data_as<int32_t>()[i] = static_cast<int32_t>(i);
    }
    const Tensor logits = model.logits(ctx, ids, pos, uniform_seqs(ctx, 1, n));
    const std::span<const float> last(logits.data_as<float>() + (n - 1) * logits.dim(1), static_cast<size_t>(logits.dim(1)));
    CHECK(argmax(last) == want);
    seq.push_back(want);
  }
  CHECK(streamed == r.text);
  CHECK(r.text == tok.decode(r.tokens, true));
}

TEST_CASE("sampling depends only on the seed, and stop strings end the text before them") {
  Context ctx(Device::cpu());
  const LlamaModel model = LlamaModel::load(ctx, kModel);
  const Tokenizer tok = Tokenizer::load(kModel);
  const std::vector<int32_t> prompt = tok.encode("Numbers", true);
  GenerateOptions opt;
  opt.sampling.temperature = 1.5f;  // a flat distribution: seeds differ quickly
  opt.max_new_tokens = 24;
  opt.seed = 11;
  const GenerateResult a = generate(ctx, model, tok, prompt, opt), b = generate(ctx, model, tok, prompt, opt);
  CHECK(a.tokens == b.tokens);
  opt.seed = 12;
  const GenerateResult c = generate(ctx, model, tok, prompt, opt);
  CHECK(a.tokens != c.tokens);
  // Stop at a piece of the first run's text: the same run ends right before it.
  REQUIRE(a.text.size() > 6);
  opt.seed = 11;
  opt.stop = {a.text.substr(4, 3)};
  std::string streamed;
  const GenerateResult d = generate(ctx, model, tok, prompt, opt, [&](const std::string& s) { streamed += s; });
  CHECK(d.finish_reason == "stop");
  CHECK(d.text == a.text.substr(0, a.text.find(opt.stop[0])));
  CHECK(streamed == d.text);
}

TEST_CASE("a padded vocabulary: rows past the tokenizer's ids are never generated") {
  test::TempDir dir;
  InitOptions io;
  io.seed = 3;
  io.dtype = DType::f32;
  io.vocab_size = 4 * 258;  // three quarters of the rows have no token
  write_random_model(find_preset("tiny"), dir.path().string(), io);
  Context ctx(Device::cpu());
  const LlamaModel model = LlamaModel::load(ctx, dir.path().string());
  const Tokenizer tok = Tokenizer::load(dir.path().string());
  REQUIRE(tok.vocab_size() < model.config().vocab_size);
  const std::vector<int32_t> prompt = tok.encode("the model learns", true);
  const int64_t n = static_cast<int64_t>(prompt.size());
  Tensor ids = Tensor::empty(Shape{n}, DType::i32), pos = Tensor::empty(Shape{n}, DType::i32);
  for (int64_t i = 0; i < n; ++i) {
    ids.data_as<int32_t>()[i] = prompt[static_cast<size_t>(i)];
    pos.data_as<int32_t>()[i] = static_cast<int32_t>(i);
  }
  const Tensor logits = model.logits(ctx, ids, pos, uniform_seqs(ctx, 1, n));
  const float* last = logits.data_as<float>() + (n - 1) * logits.dim(1);
  // Unmasked, greedy decoding would pick a padding row here.
  REQUIRE(argmax(std::span<const float>(last, static_cast<size_t>(logits.dim(1)))) >= tok.vocab_size());
  GenerateOptions opt;
  opt.sampling.temperature = 0.0f;
  opt.max_new_tokens = 16;
  const GenerateResult r = generate(ctx, model, tok, prompt, opt);
  REQUIRE(!r.tokens.empty());
  CHECK(r.tokens[0] == argmax(std::span<const float>(last, static_cast<size_t>(tok.vocab_size()))));
  for (int32_t t : r.tokens) CHECK(t < tok.vocab_size());
  opt.sampling.temperature = 1.0f;
  opt.seed = 5;
  for (int32_t t : generate(ctx, model, tok, prompt, opt).tokens) CHECK(t < tok.vocab_size());
}
