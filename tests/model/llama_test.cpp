// The LLaMA-family forward on the CPU against transformers: small random LlamaForCausalLM
// (GQA with llama3 rope scaling and an untied head; MHA with tied embeddings),
// Qwen2ForCausalLM (q/k/v biases, tied) and Phi3ForCausalLM (fused projections, partial
// rotary) saved by save_pretrained, with logits and loss recorded by transformers
// (tests/data/make_model_fixtures.py). Also: missing and mis-shaped weights.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>

#include "kernels/reference.h"
#include "model/init.h"
#include "model/llama.h"
#include "runtime/error.h"
#include "runtime/safetensors.h"
#include "support/grad_check.h"
#include "support/test_util.h"

using namespace onn;
using namespace onn::test;

namespace {
const std::string kModels = std::string(ONN_TEST_DATA_DIR) + "/models/";
}  // namespace

TEST_CASE("forward logits and loss match transformers for Llama, Qwen2 and Phi-3 (CPU, F32)") {
  Context ctx(Device::cpu());
  for (const char* name : {"llama_gqa", "llama_tied", "qwen2", "phi3"}) {
    CAPTURE(name);
    const std::string dir = kModels + name;
    const LlamaModel model = LlamaModel::load(ctx, dir);
    const SafetensorsFile ref = SafetensorsFile::open(dir + "/reference.safetensors");
    const Tensor ids2 = clone(ref.tensor("input_ids"));
    const int64_t b = ids2.dim(0), t = ids2.dim(1);
    const Tensor ids = ids2.reshape(Shape{b * t});
    const Tensor pos = sequence_positions(b, t);
    const AttentionSeqs seqs = uniform_seqs(ctx, b, t);
    const Tensor logits = model.logits(ctx, ids, pos, seqs);
    const double err = rel_error(logits, ref.tensor("logits"));
    CAPTURE(err);
    CHECK(err < 1e-4);
    const double loss = model.loss(ctx, ids, pos, seqs, next_token_labels(ids, b, t));
    const double want = load_as_double(ref.tensor("loss").data(), DType::f32, 0);
    CHECK(std::abs(loss - want) / want < 1e-4);
  }
}

TEST_CASE("a missing or mis-shaped weight is an error naming the tensor") {
  Context ctx(Device::cpu());
  TempDir dir;
  const std::string src = kModels + "llama_gqa";
  std::filesystem::copy_file(src + "/config.json", dir.file("config.json"));
  const SafetensorsFile f = SafetensorsFile::open(src + "/model.safetensors");
  std::vector<std::pair<std::string, Tensor>> all;
  for (const TensorInfo& info : f.tensors()) all.emplace_back(info.name, f.tensor(info.name));
  std::vector<std::pair<std::string, Tensor>> missing;
  for (const auto& [name, t] : all)
    if (name != "model.layers.1.mlp.up_proj.weight") missing.emplace_back(name, t);
  write_safetensors(dir.file("model.safetensors"), missing);
  CHECK_THROWS_WITH_AS(LlamaModel::load(ctx, dir.path()),
                       doctest::Contains("tensor \"model.layers.1.mlp.up_proj.weight\" is missing"), FormatError);
  std::vector<std::pair<std::string, Tensor>> bad = all;
  for (auto& [name, t] : bad)
    if (name == "model.norm.weight") t = Tensor::zeros(Shape{63}, DType::f32);
  write_safetensors(dir.file("model.safetensors"), bad);
  CHECK_THROWS_WITH_AS(LlamaModel::load(ctx, dir.path()),
                       doctest::Contains("tensor \"model.norm.weight\" has shape (63,) but config.json implies (64,)"),
                       FormatError);
}

TEST_CASE("prefill + decode with the KV cache gives the full forward's logits, batched prompts of different lengths") {
  Context ctx(Device::cpu());
  for (const char* name : {"llama_gqa", "phi3", "qwen2"}) {
    CAPTURE(name);
    const std::string dir = kModels + name;
    const LlamaModel model = LlamaModel::load(ctx, dir);
    const SafetensorsFile ref = SafetensorsFile::open(dir + "/reference.safetensors");
    const Tensor ids2 = clone(ref.tensor("input_ids"));  // (2, 9)
    const int32_t* row0 = ids2.data_as<int32_t>();
    const int32_t* row1 = row0 + 9;
    // Full forward of the two continuations, packed: 9 and 6 tokens.
    std::vector<int32_t> all(row0, row0 + 9);
    all.insert(all.end(), row1, row1 + 6);
    std::vector<int32_t> pos;
    for (int i = 0; i < 9; ++i) pos.push_back(i);
    for (int i = 0; i < 6; ++i) pos.push_back(i);
    const Tensor full = model.logits(ctx, i32_tensor(all), i32_tensor(pos), packed_seqs(ctx, {9, 6}));
    const int64_t v = model.config().vocab_size;
    const auto expect_rows = [&](const Tensor& got, int64_t r0, int64_t r1) {
      Tensor want = Tensor::empty(Shape{2, v}, DType::f32);
      std::copy(full.data_as<float>() + r0 * v, full.data_as<float>() + (r0 + 1) * v, want.data_as<float>());
      std::copy(full.data_as<float>() + r1 * v, full.data_as<float>() + (r1 + 1) * v, want.data_as<float>() + v);
      const double err = rel_error(got, want);
      CAPTURE(err);
      CHECK(err < 1e-5);
    };
    KVCache cache = model.make_cache(ctx, 2, 12);
    const Tensor first = model.prefill(ctx, cache, {std::vector<int32_t>(row0, row0 + 5), std::vector<int32_t>(row1, row1 + 2)});
    expect_rows(first, 4, 9 + 1);
    for (int s = 0; s < 4; ++s) {
      const Tensor step = model.decode(ctx, cache, {row0[5 + s], row1[2 + s]});
      expect_rows(step, 5 + s, 9 + 2 + s);
    }
    CHECK(cache.lens == std::vector<int32_t>{9, 6});
  }
}

TEST_CASE("prefill and decode refuse what does not fit") {
  Context ctx(Device::cpu());
  const LlamaModel model = LlamaModel::load(ctx, kModels + "llama_tied");
  KVCache cache = model.make_cache(ctx, 1, 3);
  CHECK_THROWS_WITH_AS(model.prefill(ctx, cache, {{1, 2, 3, 4}}), doctest::Contains("does not fit a cache of 3"),
                       InvalidArgument);
  CHECK_THROWS_WITH_AS(model.prefill(ctx, cache, {{1, 500}}), doctest::Contains("token id 500 is outside the vocabulary"),
                       InvalidArgument);
  model.prefill(ctx, cache, {{1, 2, 3}});
  CHECK_THROWS_WITH_AS(model.decode(ctx, cache, {4}), doctest::Contains("has filled its cache of 3 tokens"),
                       InvalidArgument);
  CHECK_THROWS_WITH_AS(model.make_cache(ctx, 1, 100000), doctest::Contains("exceeds max_position_embeddings"),
                       InvalidArgument);
}

TEST_CASE("onn-init folders: weights N(0, 0.02) and norms 1, the same values whether sharded or not") {
  Context ctx(Device::cpu());
  TempDir dir;
  InitOptions opt;
  opt.seed = 7;
  opt.dtype = DType::f32;
  write_random_model(find_preset("tiny"), dir.file("one"), opt);
  opt.max_shard_bytes = 100'000;  // the tiny model is ~0.5 MB: several shards
  write_random_model(find_preset("tiny"), dir.file("sharded"), opt);
  CHECK(std::filesystem::exists(dir.file("sharded") + "/model.safetensors.index.json"));
  const SafetensorsModel one = SafetensorsModel::open(dir.file("one"));
  const SafetensorsModel sharded = SafetensorsModel::open(dir.file("sharded"));
  CHECK(one.files().size() == 1);
  CHECK(sharded.files().size() > 2);
  REQUIRE(one.tensors().size() == sharded.tensors().size());
  for (const auto& [name, entry] : one.tensors()) {
    CAPTURE(name);
    const Tensor a = one.tensor(name), b = sharded.tensor(name);
    REQUIRE(a.nbytes() == b.nbytes());
    CHECK(std::memcmp(a.data(), b.data(), a.nbytes()) == 0);
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < a.numel(); ++i) {
      sum += a.data_as<float>()[i];
      sq += double(a.data_as<float>()[i]) * a.data_as<float>()[i];
    }
    const double n = static_cast<double>(a.numel()), mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
    if (a.shape().rank() == 1) {
      CHECK(mean == 1.0);
      CHECK(sd == 0.0);
    } else {  // thousands of samples: the estimates are within a few percent
      CHECK(std::abs(mean) < 0.002);
      CHECK(sd == doctest::Approx(0.02).epsilon(0.05));
    }
  }
  // Different tensors get different values, and the seed changes them.
  CHECK(std::memcmp(one.tensor("model.layers.0.mlp.gate_proj.weight").data(),
                    one.tensor("model.layers.0.mlp.up_proj.weight").data(), 1024) != 0);
  opt.seed = 8;
  write_random_model(find_preset("tiny"), dir.file("other"), opt);
  CHECK(std::memcmp(one.tensor("lm_head.weight").data(),
                    SafetensorsModel::open(dir.file("other")).tensor("lm_head.weight").data(), 1024) != 0);
  // Both load as models and agree.
  const LlamaModel m1 = LlamaModel::load(ctx, dir.file("one")), m2 = LlamaModel::load(ctx, dir.file("sharded"));
  const Tensor ids = i32_tensor({1, 5, 9, 200});
  const Tensor pos = sequence_positions(1, 4);
  const AttentionSeqs seqs = uniform_seqs(ctx, 1, 4);
  CHECK(rel_error(m1.logits(ctx, ids, pos, seqs), m2.logits(ctx, ids, pos, seqs)) == 0.0);
}
