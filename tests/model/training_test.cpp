// The training pass against finite differences in F64 on the CPU: full-weight gradients of
// every tensor kind and LoRA gradients, for Llama (GQA, untied), tied embeddings, Qwen2
// (q/k/v biases) and Phi-3 (fused qkv/gate_up, partial rotary), over packed documents with
// ignored labels; recomputation gives the same bits; LoRA backward stops at the lowest
// adapted layer and still gets that layer right; PEFT files round trip.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "kernels/adamw.h"
#include "kernels/cross_entropy.h"
#include "kernels/matmul.h"
#include "model/init.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/training.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/json.h"
#include "runtime/safetensors.h"
#include "support/grad_check.h"
#include "support/train_batch.h"
#include "support/test_util.h"

using namespace onn;
using namespace onn::test;

namespace {

const std::string kModels = std::string(ONN_TEST_DATA_DIR) + "/models/";

// Two documents (7 and 4 tokens) packed into one micro-batch, with a few ignored labels.
TrainBatch make_batch(Context& ctx, int64_t vocab, std::mt19937& rng) { return packed_train_batch(ctx, vocab, {7, 4}, 1, rng); }

// Central differences on `count` random elements of t against the analytic gradient g.
void check_elements(Tensor& t, const Tensor& g, const std::function<double()>& loss, std::mt19937& rng, int count) {
  REQUIRE(t.dtype() == DType::f64);
  REQUIRE(g.dtype() == DType::f64);
  std::uniform_int_distribution<int64_t> pick(0, t.numel() - 1);
  double* x = t.data_as<double>();
  for (int i = 0; i < count; ++i) {
    const int64_t j = pick(rng);
    const double keep = x[j], h = 1e-5;
    x[j] = keep + h;
    const double up = loss();
    x[j] = keep - h;
    const double down = loss();
    x[j] = keep;
    const double numeric = (up - down) / (2 * h), analytic = g.data_as<double>()[j];
    CAPTURE(j);
    CHECK(std::abs(numeric - analytic) <= 1e-6 * std::max(1.0, std::abs(numeric)) + 1e-9);
  }
}

void randomize(Tensor& t, std::mt19937& rng, double scale) {
  const Tensor r = random64(t.shape(), rng, scale);
  t.copy_from(r);
}

}  // namespace

TEST_CASE("full-weight gradients match finite differences (F64) for every tensor of every architecture") {
  Context ctx(Device::cpu());
  for (const char* name : {"llama_gqa", "llama_tied", "qwen2", "phi3"}) {
    CAPTURE(name);
    std::mt19937 rng(11);
    LlamaModel model = LlamaModel::load(ctx, kModels + name, DType::f64);
    const TrainBatch batch = make_batch(ctx, model.config().vocab_size, rng);
    Gradients g = make_gradients(ctx, model, nullptr);
    PassOptions opt;
    const double loss = forward_backward(ctx, model, batch, g, opt);
    CHECK(std::abs(loss - forward_loss(ctx, model, batch, opt)) < 1e-12);
    const auto f = [&] { return forward_loss(ctx, model, batch, opt); };
    const auto weights = named_weights(model.config(), model.mutable_weights());
    const auto grads = named_weights(model.config(), *g.full);
    REQUIRE(weights.size() == grads.size());
    for (size_t i = 0; i < weights.size(); ++i) {
      CAPTURE(weights[i].first);
      Tensor w = weights[i].second;
      check_elements(w, grads[i].second, f, rng, 3);
    }
    // Recomputation rebuilds the same internals: the same gradient bits.
    Gradients g2 = make_gradients(ctx, model, nullptr);
    opt.recompute = true;
    CHECK(forward_backward(ctx, model, batch, g2, opt) == loss);
    const std::vector<Tensor> a = gradient_tensors(g), b = gradient_tensors(g2);
    for (size_t i = 0; i < a.size(); ++i) CHECK(std::memcmp(a[i].data(), b[i].data(), a[i].nbytes()) == 0);
  }
}

TEST_CASE("gradient_tensors is every weight's gradient once, layer_gradients splits the layers' between them, and "
          "zero_gradients clears all of them (Qwen2's biases, Phi-3's fused projections, a tied head)") {
  Context ctx(Device::cpu());
  for (const char* name : {"llama_gqa", "llama_tied", "qwen2", "phi3"}) {
    CAPTURE(name);
    std::mt19937 rng(3);
    LlamaModel model = LlamaModel::load(ctx, kModels + name, DType::f64);
    const TrainBatch batch = make_batch(ctx, model.config().vocab_size, rng);
    Gradients g = make_gradients(ctx, model, nullptr);
    forward_backward(ctx, model, batch, g, PassOptions{});
    std::vector<const void*> all;
    for (const Tensor& t : gradient_tensors(g)) all.push_back(t.data());
    std::vector<const void*> named;
    for (const auto& [n, t] : named_weights(model.config(), *g.full)) named.push_back(t.data());
    CHECK(all == named);
    // Each layer's tensors come out of the list once; what is left is the embedding, the final
    // norm and an untied head.
    for (int64_t l = 0; l < model.config().num_hidden_layers; ++l)
      for (const Tensor& t : layer_gradients(g, l)) {
        const auto at = std::find(all.begin(), all.end(), t.data());
        REQUIRE(at != all.end());
        all.erase(at);
      }
    CHECK(all.size() == (model.config().tie_word_embeddings ? 2u : 3u));
    zero_gradients(ctx, g);
    for (const auto& [n, t] : named_weights(model.config(), *g.full)) {
      CAPTURE(n);
      const auto* p = static_cast<const uint8_t*>(t.data());
      CHECK(std::all_of(p, p + t.nbytes(), [](uint8_t b) { return b == 0; }));
    }
  }
}

namespace {

// A 2-layer model whose every product (256 rows) is large enough for the CPU's bf16 GEMM:
// Llama with a tied head, or Phi-3 (fused qkv and gate_up, untied).
std::string bf16_gemm_model(const TempDir& dir, bool phi3) {
  ModelPreset p = find_preset(phi3 ? "phi4" : "smollm-135m");
  ModelConfig& c = p.config;
  c.hidden_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = c.rope.head_dim = 32;
  c.intermediate_size = 256;
  c.vocab_size = 512;
  InitOptions o;
  o.seed = 5;
  o.dtype = DType::f32;
  write_random_model(p, dir.path().string(), o);
  return dir.path().string();
}

std::vector<uint8_t> gradient_bytes(const Gradients& g) {
  std::vector<uint8_t> out;
  for (const Tensor& t : gradient_tensors(g)) {
    const auto* b = static_cast<const uint8_t*>(t.data());
    out.insert(out.end(), b, b + t.nbytes());
  }
  return out;
}

// t's values widened to F32 (BF16 exactly).
std::vector<float> values(const Tensor& t) {
  const Tensor w = t.to_dtype(DType::f32);
  return {w.data_as<float>(), w.data_as<float>() + w.numel()};
}

struct Bf16MatmulScope {
  Bf16MatmulScope() { set_cpu_matmul(CpuMatmul::bf16); }
  ~Bf16MatmulScope() { set_cpu_matmul(CpuMatmul::f32); }
};

}  // namespace

TEST_CASE("bf16 compute weights (full training, --cpu-matmul bf16): the bits of the F32 weights' pass, the F32 "
          "tensors left as the masters, the copies refreshed by AdamW as a cast would") {
  const std::string missing = cpu_bf16_matmul_missing();
  if (!missing.empty()) {
    MESSAGE("skipped: " << missing);
    return;
  }
  const Bf16MatmulScope bf16;
  Context ctx(Device::cpu());
  for (const bool phi3 : {false, true}) {
    CAPTURE(phi3);
    TempDir dir;
    const std::string folder = bf16_gemm_model(dir, phi3);
    std::mt19937 rng(4);
    LlamaModel plain = LlamaModel::load(ctx, folder, DType::f32), copied = LlamaModel::load(ctx, folder, DType::f32);
    const TrainBatch batch = packed_train_batch(ctx, plain.config().vocab_size, {150, 106}, 3, rng);
    if (!phi3) {  // a frozen quantized base has no F32 weights to keep as masters
      LlamaModel quantized = LlamaModel::load(ctx, folder, DType::f32, QuantFormat::nf4);
      CHECK_THROWS_WITH_AS(use_bf16_compute_weights(ctx, quantized), doctest::Contains("not quantized (nf4)"),
                           InvalidArgument);
    }
    const auto masters = named_weights(copied.config(), copied.weights());
    const auto pairs = use_bf16_compute_weights(ctx, copied);
    const ModelConfig& c = copied.config();
    CHECK(pairs.size() == static_cast<size_t>(c.num_hidden_layers) * (phi3 ? 4 : 7) + 1);
    for (const auto& [f32, b16] : pairs) {
      CHECK(f32.dtype() == DType::f32);
      CHECK(values(b16) == values(f32.to_dtype(DType::bf16).to_dtype(DType::f32)));
      CHECK(std::any_of(masters.begin(), masters.end(), [&](const auto& m) { return m.second.data() == f32.data(); }));
    }
    const LayerWeights& l0 = copied.weights().layers[0];
    CHECK(l0.wq.dtype() == DType::bf16);
    CHECK(l0.wdown.dtype() == DType::bf16);
    CHECK(l0.input_norm.dtype() == DType::f32);
    CHECK(copied.weights().embed.dtype() == DType::f32);
    CHECK(copied.weights().lm_head.dtype() == DType::bf16);
    if (phi3) CHECK(l0.wv.data() > l0.qkv.data());  // the views are the copy's rows

    Gradients gp = make_gradients(ctx, plain, nullptr), gc = make_gradients(ctx, copied, nullptr);
    const double lp = forward_backward(ctx, plain, batch, gp, PassOptions{});
    const double lc = forward_backward(ctx, copied, batch, gc, PassOptions{});
    CHECK(std::memcmp(&lp, &lc, sizeof lp) == 0);
    CHECK(gradient_bytes(gp) == gradient_bytes(gc));

    Tensor master = pairs[0].first, copy = pairs[0].second, g = random_tensor(master.shape(), rng);
    Tensor m = Tensor::zeros(master.shape(), DType::f32), v = Tensor::zeros(master.shape(), DType::f32);
    adamw_step(ctx, master, g, m, v, AdamWConfig{}, &copy);
    CHECK(values(copy) == values(master.to_dtype(DType::bf16).to_dtype(DType::f32)));
  }
}

TEST_CASE("LoRA gradients match finite differences, and the backward stops at the lowest adapted layer") {
  Context ctx(Device::cpu());
  for (const char* name : {"llama_gqa", "qwen2", "phi3"}) {
    CAPTURE(name);
    std::mt19937 rng(5);
    LlamaModel model = LlamaModel::load(ctx, kModels + name, DType::f64);
    const TrainBatch batch = make_batch(ctx, model.config().vocab_size, rng);
    for (const std::vector<int64_t>& layers : {std::vector<int64_t>{}, std::vector<int64_t>{1}}) {
      CAPTURE(layers.size());
      LoraSpec spec;
      spec.rank = 3;
      spec.alpha = 6;
      spec.layers = layers;
      LoraAdapter ad = make_lora_adapter(ctx, model, spec, 3);
      for (LoraModule& m : ad.modules) randomize(m.b, rng, 0.05);  // B starts at zero: no signal for A
      ad.sync_compute_copies(ctx);
      Gradients g = make_gradients(ctx, model, &ad);
      PassOptions opt;
      opt.lora = &ad;
      forward_backward(ctx, model, batch, g, opt);
      const auto f = [&] { return forward_loss(ctx, model, batch, opt); };
      REQUIRE(g.lora.modules.size() == ad.modules.size());
      for (size_t i = 0; i < ad.modules.size(); ++i) {
        CAPTURE(ad.modules[i].name);
        CAPTURE(ad.modules[i].layer);
        check_elements(ad.modules[i].a, g.lora.modules[i].a, f, rng, 2);
        check_elements(ad.modules[i].b, g.lora.modules[i].b, f, rng, 2);
      }
      // Frozen weights get no gradient storage at all.
      CHECK(!g.full.has_value());
    }
  }
}

TEST_CASE("LoRA dropout: the backward regenerates the forward's masks (finite differences through a fixed mask)") {
  Context ctx(Device::cpu());
  std::mt19937 rng(9);
  LlamaModel model = LlamaModel::load(ctx, kModels + "phi3", DType::f64);
  const TrainBatch batch = make_batch(ctx, model.config().vocab_size, rng);
  LoraSpec spec;
  spec.rank = 2;
  spec.dropout = 0.3;
  LoraAdapter ad = make_lora_adapter(ctx, model, spec, 1);
  for (LoraModule& m : ad.modules) randomize(m.b, rng, 0.05);
  Gradients g = make_gradients(ctx, model, &ad);
  PassOptions opt;
  opt.lora = &ad;
  opt.dropout_seed = 42;
  const double with_dropout = forward_backward(ctx, model, batch, g, opt);
  CHECK(with_dropout != forward_loss(ctx, model, batch, opt));  // evaluation has no dropout
  // The loss with dropout as a function of the weights: forward_backward into scratch grads.
  const auto f = [&] {
    Gradients scratch = make_gradients(ctx, model, &ad);
    return forward_backward(ctx, model, batch, scratch, opt);
  };
  for (size_t i = 0; i < ad.modules.size(); i += 2) {
    CAPTURE(ad.modules[i].name);
    check_elements(ad.modules[i].a, g.lora.modules[i].a, f, rng, 2);
    check_elements(ad.modules[i].b, g.lora.modules[i].b, f, rng, 2);
  }
}

TEST_CASE("targets and layer ranges parse, and refuse what does not fit") {
  CHECK(parse_lora_targets("all-linear") == LoraTargets{true, true, true, true, true, true, true});
  CHECK(parse_lora_targets("q,v") == LoraTargets{true, false, true, false, false, false, false});
  CHECK(parse_lora_targets("qkv_proj,down") == LoraTargets{true, true, true, false, false, false, true});
  CHECK_THROWS_WITH_AS(parse_lora_targets("q,attn"), doctest::Contains("unknown LoRA target \"attn\"; targets: q, k"),
                       InvalidArgument);
  CHECK(parse_layer_ranges("0-3,36-39", 40) == std::vector<int64_t>{0, 1, 2, 3, 36, 37, 38, 39});
  CHECK(parse_layer_ranges("5,2,2-3", 8) == std::vector<int64_t>{2, 3, 5});
  CHECK_THROWS_WITH_AS(parse_layer_ranges("0-40", 40), doctest::Contains("layer 40 is past the model's 40 layers"),
                       InvalidArgument);
  CHECK_THROWS_WITH_AS(parse_layer_ranges("3-1", 40), doctest::Contains("3-1 is empty"), InvalidArgument);
  CHECK_THROWS_WITH_AS(parse_layer_ranges("a", 40), doctest::Contains("\"a\" is not a layer number"), InvalidArgument);
  Context ctx(Device::cpu());
  const LlamaModel phi3 = LlamaModel::load(ctx, kModels + "phi3");
  LoraSpec spec;
  spec.targets = parse_lora_targets("q,v");
  CHECK_THROWS_WITH_AS(make_lora_adapter(ctx, phi3, spec, 0),
                       doctest::Contains("fuses q, k and v into qkv_proj: target all of them or none"), InvalidArgument);
  spec.targets = parse_lora_targets("all-linear");
  spec.rank = 0;
  CHECK_THROWS_WITH_AS(make_lora_adapter(ctx, phi3, spec, 0), doctest::Contains("LoRA rank"), InvalidArgument);
}

TEST_CASE("a LoRA adapter and its gradients are packed: one allocation per kind, whatever the module count") {
  // Phi-4's shapes (its fused gate_up B is 2.2 MiB in F32, which alone the allocator would hold
  // as 4 MiB), bf16, so the masters and the compute copies differ.
  const ModelConfig mc = find_preset("phi4").config;
  CachingAllocator alloc(make_host_raw_backend(), 0);
  Context ctx(Device::cpu(), alloc, 0);
  const LlamaModel model = LlamaModel::placeholder_on_host(ctx, mc, DType::bf16);
  LoraSpec spec;
  spec.rank = 16;
  spec.targets = parse_lora_targets("all-linear");
  spec.layers = {36, 37, 38, 39};
  const AllocatorStats before = alloc.stats();
  const LoraAdapter ad = make_lora_adapter(ctx, model, spec, 1);
  REQUIRE(ad.modules.size() == 16);  // qkv, o, gate_up, down on 4 layers
  std::vector<std::pair<Shape, DType>> masters, copies;
  for (const LoraModule& m : ad.modules) {
    for (const Tensor* t : {&m.a, &m.b}) masters.emplace_back(t->shape(), t->dtype());
    for (const Tensor* t : {&m.a_c, &m.b_c}) copies.emplace_back(t->shape(), t->dtype());
    CHECK(m.a.dtype() == DType::f32);
    CHECK(m.b_c.dtype() == DType::bf16);
    CHECK(m.a.shares_storage_with(ad.modules[0].a));
    CHECK(m.b_c.shares_storage_with(ad.modules[0].a_c));
    CHECK_FALSE(m.a.overlaps(m.b));
  }
  const size_t adapter_bytes = CachingAllocator::round_size(Tensor::packed_bytes(masters)) +
                               CachingAllocator::round_size(Tensor::packed_bytes(copies));
  CHECK(alloc.stats().in_use - before.in_use == adapter_bytes);
  // One tensor per allocation would hold more: the 2 MiB classes round every B of gate_up up.
  size_t apart = 0;
  for (const auto& [shape, dtype] : masters) apart += CachingAllocator::round_size(size_t(shape.numel()) * dtype_size(dtype));
  CHECK(apart > CachingAllocator::round_size(Tensor::packed_bytes(masters)) + (size_t{6} << 20));
  // The compute copies hold the masters' values (bf16), A nonzero, B zero.
  const Tensor a0 = ad.modules[2].a.to_dtype(DType::bf16), b0 = ad.modules[2].b_c.to_dtype(DType::f32);
  CHECK(std::memcmp(a0.data(), ad.modules[2].a_c.data(), a0.nbytes()) == 0);
  for (int64_t i = 0; i < b0.numel(); ++i) REQUIRE(b0.data_as<float>()[i] == 0.0f);
  const AllocatorStats mid = alloc.stats();
  const Gradients g = make_gradients(ctx, model, &ad);
  CHECK(alloc.stats().in_use - mid.in_use == CachingAllocator::round_size(Tensor::packed_bytes(masters)));
  for (const LoraModule& m : g.lora.modules) {
    CHECK(m.a.shares_storage_with(g.lora.modules[0].a));
    for (int64_t i = 0; i < m.b.numel(); ++i) REQUIRE(m.b.data_as<float>()[i] == 0.0f);  // zeroed
  }
}

TEST_CASE("PEFT adapter files: names, shapes and config as PEFT writes them, and they load back bit for bit") {
  Context ctx(Device::cpu());
  TempDir dir;
  for (const char* name : {"llama_gqa", "phi3"}) {
    CAPTURE(name);
    const LlamaModel model = LlamaModel::load(ctx, kModels + name);
    LoraSpec spec;
    spec.rank = 4;
    spec.alpha = 8;
    spec.dropout = 0.05;
    spec.rslora = true;
    spec.layers = {1};
    spec.targets = parse_lora_targets(std::string(name) == "phi3" ? "qkv_proj,o" : "q,v,down");
    LoraAdapter ad = make_lora_adapter(ctx, model, spec, 7);
    std::mt19937 rng(1);
    for (LoraModule& m : ad.modules)
      for (int64_t i = 0; i < m.b.numel(); ++i) m.b.data_as<float>()[i] = static_cast<float>(rng() % 100) / 100.0f;
    const std::string out = dir.file(name);
    save_peft_adapter(ad, model.config(), out, "base/" + std::string(name));
    const nlohmann::json cfg = read_json_file(out + "/adapter_config.json", 1 << 20);
    CHECK(cfg["peft_type"] == "LORA");
    CHECK(cfg["task_type"] == "CAUSAL_LM");
    CHECK(cfg["r"] == 4);
    CHECK(cfg["lora_alpha"] == 8.0);
    CHECK(cfg["use_rslora"] == true);
    CHECK(cfg["layers_to_transform"] == nlohmann::json::array({1}));
    CHECK(cfg["base_model_name_or_path"] == "base/" + std::string(name));
    const SafetensorsFile st = SafetensorsFile::open(out + "/adapter_model.safetensors");
    const int64_t C = model.config().hidden_size;
    if (std::string(name) == "phi3") {
      CHECK(cfg["target_modules"] == nlohmann::json::array({"o_proj", "qkv_proj"}));
      const TensorInfo& b = st.info("base_model.model.model.layers.1.self_attn.qkv_proj.lora_B.weight");
      const ModelConfig& c = model.config();
      CHECK(b.shape == std::vector<int64_t>{(c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim, 4});
      CHECK(st.tensors().size() == 4);
    } else {
      CHECK(cfg["target_modules"] == nlohmann::json::array({"down_proj", "q_proj", "v_proj"}));
      const TensorInfo& a = st.info("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight");
      CHECK(a.shape == std::vector<int64_t>{4, C});
      CHECK(a.dtype == DType::f32);
      CHECK(st.info("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight").shape ==
            std::vector<int64_t>{4, model.config().intermediate_size});
      CHECK(st.find("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight") == nullptr);
      CHECK(st.tensors().size() == 6);
    }
    const LoraAdapter back = load_peft_adapter(ctx, model, out);
    CHECK(back.spec.rank == 4);
    CHECK(back.spec.rslora);
    CHECK(back.spec.layers == std::vector<int64_t>{1});
    REQUIRE(back.modules.size() == ad.modules.size());
    for (size_t i = 0; i < ad.modules.size(); ++i) {
      CHECK(std::memcmp(back.modules[i].a.data(), ad.modules[i].a.data(), ad.modules[i].a.nbytes()) == 0);
      CHECK(std::memcmp(back.modules[i].b.data(), ad.modules[i].b.data(), ad.modules[i].b.nbytes()) == 0);
    }
    // A damaged adapter names the file and the problem.
    std::filesystem::copy_file(out + "/adapter_config.json", dir.file("cfg.bak"),
                               std::filesystem::copy_options::overwrite_existing);
    nlohmann::json bad = cfg;
    bad["r"] = 5;
    std::ofstream(out + "/adapter_config.json") << bad.dump();
    CHECK_THROWS_WITH_AS(load_peft_adapter(ctx, model, out), doctest::Contains("has shape (4, "), FormatError);
    bad["r"] = 4;
    bad["peft_type"] = "IA3";
    std::ofstream(out + "/adapter_config.json") << bad.dump();
    CHECK_THROWS_WITH_AS(load_peft_adapter(ctx, model, out), doctest::Contains("field \"peft_type\" must be \"LORA\""),
                         FormatError);
    bad["peft_type"] = "LORA";
    bad["layers_to_transform"] = {0, 1};
    std::ofstream(out + "/adapter_config.json") << bad.dump();
    CHECK_THROWS_WITH_AS(load_peft_adapter(ctx, model, out), doctest::Contains("layers.0."), FormatError);
    // PEFT options that change what the adapter computes are refused, not ignored.
    bad["layers_to_transform"] = {1};
    for (const auto& [field, value] : {std::pair<const char*, nlohmann::json>{"use_dora", true}, {"lora_bias", true},
                                       {"modules_to_save", {"lm_head"}}}) {
      CAPTURE(field);
      nlohmann::json b = bad;
      b[field] = value;
      std::ofstream(out + "/adapter_config.json") << b.dump();
      const std::string message = std::string("field \"") + field + "\" is set";
      CHECK_THROWS_WITH_AS(load_peft_adapter(ctx, model, out), doctest::Contains(message.c_str()), FormatError);
    }
  }
}
