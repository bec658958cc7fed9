// QLoRA against transformers + bitsandbytes + PEFT (tests/data/make_quant_reference.py): the
// bitsandbytes 4-bit folder transformers wrote loads as it is; the base model's loss and one
// QLoRA step's loss and every lora_A / lora_B gradient match (normalized error below 1e-4), and
// the adapter merged into the dequantized weights gives PEFT's logits;
// quantizing the unquantized folder while loading gives the folder's bytes; malformed quantized
// tensors and quantization methods ONN does not implement are refused by name.
#include <doctest/doctest.h>

#include <cstring>
#include <random>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "model/init.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/quantized.h"
#include "model/streaming.h"
#include "model/training.h"
#include "runtime/error.h"
#include "runtime/safetensors.h"
#include "support/grad_check.h"
#include "support/peft_reference.h"
#include "support/test_util.h"
#include "support/train_batch.h"

using namespace onn;
using namespace onn::test;
namespace fs = std::filesystem;

namespace {

const std::string kNf4Dir = std::string(ONN_TEST_DATA_DIR) + "/models/llama_gqa_nf4";
const std::string kDenseDir = std::string(ONN_TEST_DATA_DIR) + "/models/llama_gqa";

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

// A copy of the nf4 folder whose model.safetensors has `edit` applied to its tensors.
using Entries = std::vector<std::pair<std::string, Tensor>>;
using Edit = std::function<void(Entries&)>;
std::string edited_copy(const TempDir& tmp, const Edit& edit) {
  fs::copy_file(kNf4Dir + "/config.json", tmp.file("config.json"));
  const SafetensorsFile f = SafetensorsFile::open(kNf4Dir + "/model.safetensors");
  std::vector<std::pair<std::string, Tensor>> t;
  for (const TensorInfo& i : f.tensors()) t.emplace_back(i.name, clone(f.tensor(i.name)));
  edit(t);
  write_safetensors(tmp.file("model.safetensors"), t);
  return tmp.path().string();
}

Tensor& entry(std::vector<std::pair<std::string, Tensor>>& t, const std::string& name) {
  for (auto& [n, x] : t)
    if (n == name) return x;
  FAIL("no tensor " << name);
  static Tensor none;
  return none;
}

Tensor json_bytes(const std::string& s) {
  Tensor t = Tensor::empty(Shape{static_cast<int64_t>(s.size())}, DType::u8);
  std::memcpy(t.data(), s.data(), s.size());
  return t;
}

const std::string kDown = "model.layers.1.mlp.down_proj.weight";

}  // namespace

TEST_CASE("QLoRA parity with transformers + bitsandbytes + PEFT on a bitsandbytes 4-bit folder") {
  const SafetensorsFile ref = SafetensorsFile::open(kNf4Dir + "/qlora_reference.safetensors");
  Context ctx(Device::cpu());
  LlamaModel model = LlamaModel::load(ctx, kNf4Dir, DType::f32);
  CHECK(model.quant_format() == QuantFormat::nf4);
  CHECK(model.config().stored_quant == QuantFormat::nf4);
  CHECK(model.weights().layers[0].qwdown.double_quant());
  CHECK(!model.weights().layers[0].wdown.defined());
  TrainBatch batch = reference_batch(ctx, ref);

  const double base = model.loss(ctx, batch.ids, batch.positions, batch.seqs, batch.labels);
  CHECK(std::abs(base - ref.load("base_loss", Device::cpu()).data_as<double>()[0]) < 1e-5);

  const LoraAdapter adapter = load_peft_adapter(ctx, model, kNf4Dir + "/qlora_reference");
  CHECK(check_reference_step(ctx, model, adapter, batch, ref) == 2 * 7 * 2);
  // Merged into the dequantized projections (what --adapter does on a quantized base): PEFT's
  // adapted logits.
  merge_lora(ctx, model, adapter);
  CHECK(!model.weights().layers[0].qwdown.defined());
  CHECK(model.weights().layers[0].wdown.defined());
  CHECK(rel_error(model.logits(ctx, batch.ids, batch.positions, batch.seqs), ref.load("logits", Device::cpu())) < 1e-5);
}

TEST_CASE("quantizing the unquantized folder while loading gives the bitsandbytes folder's bytes") {
  Context ctx(Device::cpu());
  const LlamaModel bnb = LlamaModel::load(ctx, kNf4Dir, DType::f32);
  const LlamaModel ours = LlamaModel::load(ctx, kDenseDir, DType::f32, QuantFormat::nf4);
  const SafetensorsModel dense = SafetensorsModel::open(kDenseDir);
  REQUIRE(ours.quant_format() == QuantFormat::nf4);
  for (size_t l = 0; l < bnb.weights().layers.size(); ++l)
    for (const LayerTensor& spec : layer_tensors(bnb.config())) {
      if (!spec.quant) continue;
      const std::string name = layer_prefix(static_cast<int64_t>(l)) + spec.name;
      CAPTURE(name);
      const QuantTensor& a = bnb.weights().layers[l].*spec.quant;
      const QuantTensor& b = ours.weights().layers[l].*spec.quant;
      // The codes, both code books and the nested absmax blocks' layout do not depend on the
      // offset; the offset (torch's fp32 mean, summed in fp32 in an order set by the machine's
      // SIMD width) agrees to a few ulps.
      CHECK(same_bytes(a.data, b.data));
      CHECK(same_bytes(a.code, b.code));
      CHECK(same_bytes(a.nested_code, b.nested_code));
      CHECK(std::abs(a.nested_offset - b.nested_offset) <= 1e-6f * std::abs(a.nested_offset));
      // Given bitsandbytes' offset, every byte is bitsandbytes'.
      const QuantTensor again = quantize(dense.tensor(name), QuantFormat::nf4, true, cpu_allocator(), a.nested_offset);
      REQUIRE(again.parts().size() == a.parts().size());
      for (size_t i = 0; i < a.parts().size(); ++i) CHECK(same_bytes(a.parts()[i], again.parts()[i]));
    }
  // A quantized folder is not quantized again to another format.
  CHECK_THROWS_WITH_AS(LlamaModel::load(ctx, kNf4Dir, DType::f32, QuantFormat::int8),
                       doctest::Contains("applies to unquantized folders"), InvalidArgument);
}

TEST_CASE("full training on a quantized base is refused: it trains LoRA adapters") {
  Context ctx(Device::cpu());
  const LlamaModel model = LlamaModel::load(ctx, kNf4Dir, DType::f32);
  CHECK_THROWS_WITH_AS(make_gradients(ctx, model, nullptr), doctest::Contains("LoRA"), InvalidArgument);
}

TEST_CASE("malformed bitsandbytes tensors are refused naming the tensor and what is wrong") {
  Context ctx(Device::cpu());
  struct Case {
    const char* what;
    Edit edit;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"absmax count", [](Entries& t) { entry(t, kDown + ".absmax") = clone(entry(t, kDown + ".absmax").slice(0, 95)); },
       "absmax has 95 elements, expected 96"},
      {"packed size", [](Entries& t) { entry(t, kDown) = clone(entry(t, kDown).slice(0, 3000)); },
       "packed weight has 3000 elements, expected 3072"},
      {"nested absmax missing",
       [](Entries& t) { std::erase_if(t, [](const auto& e) { return e.first == kDown + ".nested_absmax"; }); },
       "nested_absmax\" is missing"},
      {"a quant_state that lies about the shape",
       [](Entries& t) {
         entry(t, kDown + kBnbNf4StateSuffix) = json_bytes(
             R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [96, 64], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.2})");
       },
       "quant_state shape [96,64] but config.json implies (64, 96)"},
      {"a quant_state with another block size",
       [](Entries& t) {
         entry(t, kDown + kBnbNf4StateSuffix) = json_bytes(
             R"({"quant_type": "nf4", "blocksize": 128, "dtype": "float32", "shape": [64, 96], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.2})");
       },
       "blocksize 128 is not implemented"},
      {"fp4", [](Entries& t) { entry(t, kDown + kBnbNf4StateSuffix) = json_bytes(R"({"quant_type": "fp4"})"); },
       "quant_type \"fp4\" is not implemented"},
      {"not JSON", [](Entries& t) { entry(t, kDown + kBnbNf4StateSuffix) = json_bytes("{\"quant_type\": "); },
       "quant_state is not a JSON object"},
      {"a non-finite offset",
       [](Entries& t) {
         entry(t, kDown + kBnbNf4StateSuffix) = json_bytes(
             R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [64, 96], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 1e300})");
       },
       "nested_offset is not a finite float"},
      {"a NaN scale",
       [](Entries& t) { entry(t, kDown + ".nested_absmax").data_as<float>()[0] = std::nanf(""); },
       "nested_absmax[0] = nan is not a finite scale"},
      {"a quant map outside [-1, 1]",
       [](Entries& t) { entry(t, kDown + ".quant_map").data_as<float>()[3] = 4.0f; }, "quant_map[3] = 4"},
      {"the wrong dtype", [](Entries& t) { entry(t, kDown + ".absmax") = Tensor::zeros(Shape{96}, DType::f32); },
       "absmax has dtype F32, expected U8"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    TempDir tmp;
    const std::string dir = edited_copy(tmp, c.edit);
    try {
      (void)LlamaModel::load(ctx, dir, DType::f32);
      FAIL("loaded");
    } catch (const FormatError& e) {
      const std::string m = e.what();
      CAPTURE(m);
      CHECK(m.find(kDown) != std::string::npos);
      if (m.find(c.message) == std::string::npos) MESSAGE(c.what << ": " << m);
      CHECK(m.find(c.message) != std::string::npos);
    }
  }
}

TEST_CASE("quantization methods other than bitsandbytes 4-bit nf4 are refused by name") {
  for (const auto& [patch, message] : std::vector<std::pair<nlohmann::json, std::string>>{
           {{{"quant_method", "gptq"}, {"bits", 4}}, "quant_method\" is \"gptq\""},
           {{{"quant_method", "awq"}}, "quant_method\" is \"awq\""},
           {{{"quant_method", "bitsandbytes"}, {"load_in_8bit", true}}, "load_in_8bit"},
           {{{"quant_method", "bitsandbytes"}, {"load_in_4bit", true}, {"bnb_4bit_quant_type", "fp4"}},
            "bnb_4bit_quant_type\" is \"fp4\""}}) {
    CAPTURE(message);
    std::ifstream in(kNf4Dir + "/config.json");
    nlohmann::json cfg = nlohmann::json::parse(in);
    cfg["quantization_config"] = patch;
    CHECK_THROWS_WITH_AS(parse_model_config(cfg, "config.json"), doctest::Contains(message.c_str()), InvalidArgument);
  }
}

TEST_CASE("the bitsandbytes quant_state JSON ONN writes is the one bitsandbytes wrote") {
  const SafetensorsFile f = SafetensorsFile::open(kNf4Dir + "/model.safetensors");
  const SafetensorsModel st = SafetensorsModel::open(kNf4Dir);
  const QuantTensor q = read_bnb_nf4(st, kDown, Shape{64, 96});
  const Tensor stored = f.tensor(kDown + kBnbNf4StateSuffix);
  const std::string theirs(static_cast<const char*>(stored.data()), stored.nbytes());
  CHECK(bnb_nf4_state_json(q, DType::f32) == theirs);
}

TEST_CASE("Phi-3's fused qkv_proj and gate_up_proj quantize whole, and streamed evaluation gives the resident loss") {
  const std::string dir = std::string(ONN_TEST_DATA_DIR) + "/models/phi3";
  const SafetensorsFile ref = SafetensorsFile::open(dir + "/lora_reference.safetensors");
  Context ctx(Device::cpu());
  TrainBatch batch = reference_batch(ctx, ref);
  const LlamaModel dense = LlamaModel::load(ctx, dir, DType::f32);
  const double dense_loss = dense.loss(ctx, batch.ids, batch.positions, batch.seqs, batch.labels);
  for (QuantFormat f : {QuantFormat::nf4, QuantFormat::int8, QuantFormat::fp8}) {
    CAPTURE(quant_format_name(f));
    const LlamaModel resident = LlamaModel::load(ctx, dir, DType::f32, f);
    const LayerWeights& w = resident.weights().layers[0];
    REQUIRE(w.qqkv.defined());
    CHECK(w.qwk.row0 == resident.config().num_attention_heads * resident.config().head_dim);
    CHECK(w.qwup.row0 == resident.config().intermediate_size);
    CHECK(!w.qkv.defined());
    const double loss = resident.loss(ctx, batch.ids, batch.positions, batch.seqs, batch.labels);
    CHECK(loss != dense_loss);
    CHECK(std::abs(loss - dense_loss) < 0.05);
    const LlamaModel host = LlamaModel::load_to_host(ctx, dir, DType::f32, f);
    StreamOptions so;
    so.head_granule = 64;
    StreamedWeights sw(ctx, host, so);
    CHECK(host.loss(ctx, batch.ids, batch.positions, batch.seqs, batch.labels, &sw) == loss);
  }
}

TEST_CASE("bf16 storage on the CPU: a bf16 folder's projections stay bf16 (half the bytes) with the f32 run's bits") {
  TempDir tmp;
  InitOptions io;
  io.seed = 6;
  io.dtype = DType::bf16;
  write_random_model(find_preset("tiny"), tmp.path().string(), io);
  const std::string dir = tmp.path().string();
  Context ctx(Device::cpu());
  LlamaModel dense = LlamaModel::load(ctx, dir, DType::f32);
  LlamaModel stored = LlamaModel::load(ctx, dir, DType::f32, QuantFormat::bf16);
  const LayerWeights& w = stored.weights().layers[0];
  REQUIRE(w.qwdown.format == QuantFormat::bf16);
  CHECK(!w.wdown.defined());
  CHECK(w.qwdown.nbytes() * 2 == dense.weights().layers[0].wdown.nbytes());
  // Widening bf16 is exact, so every GEMM sees the dense run's f32 values: the same bits.
  std::mt19937 rng(3);
  const TrainBatch batch = packed_train_batch(ctx, dense.config().vocab_size, {70, 41}, 2, rng);
  const auto lora_step = [&](LlamaModel& m, StreamedWeights* stream, int64_t head_granule) {
    LoraSpec spec;
    spec.rank = 4;
    LoraAdapter ad = make_lora_adapter(ctx, m, spec, 5);
    std::mt19937 brng(9);
    for (LoraModule& mod : ad.modules) mod.b.copy_from(random64(mod.b.shape(), brng, 0.05).to_dtype(mod.b.dtype()));
    ad.sync_compute_copies(ctx);
    Gradients g = make_gradients(ctx, m, &ad);
    PassOptions opt;
    opt.lora = &ad;
    opt.stream = stream;
    opt.head_granule = head_granule;
    const double loss = forward_backward(ctx, m, batch, g, opt);
    return std::pair{loss, gradient_tensors(g)};
  };
  const auto [dense_loss, dense_grads] = lora_step(dense, nullptr, 0);
  const auto [loss, grads] = lora_step(stored, nullptr, 0);
  CHECK(loss == dense_loss);
  REQUIRE(grads.size() == dense_grads.size());
  for (size_t i = 0; i < grads.size(); ++i)
    CHECK(std::memcmp(grads[i].data(), dense_grads[i].data(), grads[i].nbytes()) == 0);
  // Streamed from host memory: the resident run's bits (the same sliced LM head on both).
  LlamaModel host = LlamaModel::load_to_host(ctx, dir, DType::f32, QuantFormat::bf16);
  StreamOptions so;
  so.head_granule = 64;
  StreamedWeights sw(ctx, host, so);
  CHECK(lora_step(host, &sw, 64).first == lora_step(stored, nullptr, 64).first);
  // Generation keeps its KV cache in bf16 too; the logits stay those of the f32 run within the
  // cache's rounding.
  KVCache cache = stored.make_cache(ctx, 1, 40), dense_cache = dense.make_cache(ctx, 1, 40);
  CHECK(cache.k[0].dtype() == DType::bf16);
  const std::vector<int32_t> prompt = {5, 9, 77, 3, 41, 12, 8, 100, 7, 66};
  stored.prefill(ctx, cache, {prompt});
  dense.prefill(ctx, dense_cache, {prompt});
  const Tensor logits = stored.decode(ctx, cache, {17}), dense_logits = dense.decode(ctx, dense_cache, {17});
  CHECK(rel_error(logits.to_dtype(DType::f64), dense_logits.to_dtype(DType::f64)) < 1e-2);
  CHECK(rel_error(logits.to_dtype(DType::f64), dense_logits.to_dtype(DType::f64)) > 0);
}
