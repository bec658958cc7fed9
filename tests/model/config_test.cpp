// config.json: the files transformers itself writes for each supported architecture
// (tests/data/configs, from make_config_fixtures.py), the transformers 4 layout, and every
// refusal naming the field or listing the supported architectures.
#include <doctest/doctest.h>

#include <fstream>
#include <string>

#include "model/config.h"
#include "runtime/error.h"
#include "support/test_util.h"

using namespace onn;
using namespace onn::test;

namespace {
const std::string kConfigs = std::string(ONN_TEST_DATA_DIR) + "/configs/";

ModelConfig parse(const std::string& text) { return parse_model_config(nlohmann::json::parse(text), "config.json"); }

const char* kLlama4 = R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 96, "intermediate_size": 256,
  "num_attention_heads": 6, "num_key_value_heads": 2, "num_hidden_layers": 3, "vocab_size": 500,
  "max_position_embeddings": 1024, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
  "rope_scaling": {"type": "linear", "factor": 2.0}, "torch_dtype": "bfloat16", "bos_token_id": 1,
  "eos_token_id": 2, "hidden_act": "silu", "tie_word_embeddings": false})";

std::string with(const std::string& base, const std::string& key, const std::string& value) {
  nlohmann::json j = nlohmann::json::parse(base);
  j[key] = nlohmann::json::parse(value);
  return j.dump();
}
}  // namespace

TEST_CASE("config.json as transformers writes it: Llama 3 with llama3 rope scaling and tied embeddings") {
  const ModelConfig c = load_model_config(kConfigs + "llama3.json");
  CHECK(c.arch == Architecture::llama);
  CHECK(c.architecture == "LlamaForCausalLM");
  CHECK(c.hidden_size == 64);
  CHECK(c.intermediate_size == 160);
  CHECK(c.num_attention_heads == 4);
  CHECK(c.num_key_value_heads == 2);
  CHECK(c.head_dim == 16);
  CHECK(c.num_hidden_layers == 2);
  CHECK(c.vocab_size == 300);
  CHECK(c.rms_norm_eps == 1e-5);
  CHECK(c.tie_word_embeddings);
  CHECK(c.rope.theta == 500000.0);
  CHECK(c.rope.head_dim == 16);
  CHECK(c.rope.scaling.type == RopeScaling::Type::llama3);
  CHECK(c.rope.scaling.factor == 8.0);
  CHECK(c.rope.scaling.original_max_position_embeddings == 8192);
  CHECK(c.bos_token_ids == std::vector<int64_t>{1});
  CHECK(c.eos_token_ids == std::vector<int64_t>{2, 3});
  CHECK_FALSE(c.attention_bias);
  CHECK_FALSE(c.sliding_window.has_value());
}

TEST_CASE("config.json for Mistral (sliding window), Qwen2 (q/k/v biases), Phi-3 (fused projections, partial rotary)") {
  const ModelConfig m = load_model_config(kConfigs + "mistral.json");
  CHECK(m.arch == Architecture::mistral);
  REQUIRE(m.sliding_window.has_value());
  CHECK(*m.sliding_window == 128);
  check_context_length(m, 128, "mistral");
  CHECK_THROWS_WITH_AS(check_context_length(m, 129, "mistral"),
                       doctest::Contains("sliding window of 128 tokens"), InvalidArgument);
  const ModelConfig q = load_model_config(kConfigs + "qwen2.json");
  CHECK(q.arch == Architecture::qwen2);
  CHECK(q.attention_bias);
  CHECK_FALSE(q.o_bias);
  CHECK(q.rope.theta == 1000000.0);
  CHECK_FALSE(q.sliding_window.has_value());  // present in the file, but use_sliding_window is false
  const ModelConfig p = load_model_config(kConfigs + "phi3.json");
  CHECK(p.arch == Architecture::phi3);
  CHECK(p.fused_qkv);
  CHECK(p.fused_gate_up);
  CHECK(p.rope.partial_rotary_factor == 0.75);
  CHECK(rope_rotary_dims(p.rope) == 12);
  const ModelConfig l = load_model_config(kConfigs + "llama_linear.json");
  CHECK(l.rope.scaling.type == RopeScaling::Type::linear);
  CHECK(l.rope.scaling.factor == 2.0);
  CHECK_THROWS_WITH_AS(check_context_length(l, 257, "llama"), doctest::Contains("exceeds max_position_embeddings (256)"),
                       InvalidArgument);
}

TEST_CASE("config.json in the transformers 4 layout, from a folder") {
  TempDir dir;
  std::ofstream(dir.file("config.json")) << kLlama4;
  const ModelConfig c = load_model_config(dir.path());
  CHECK(c.head_dim == 16);
  CHECK(c.torch_dtype == DType::bf16);
  CHECK(c.rope.scaling.type == RopeScaling::Type::linear);
  CHECK(c.rope.scaling.factor == 2.0);
  CHECK(c.eos_token_ids == std::vector<int64_t>{2});
  CHECK(parse(with(kLlama4, "head_dim", "32")).head_dim == 32);
  CHECK(parse(with(kLlama4, "num_key_value_heads", "null")).num_key_value_heads == 6);
  CHECK_THROWS_AS(load_model_config(dir.file("missing")), IoError);
}

TEST_CASE("unsupported models and field values are refused by name") {
  CHECK_THROWS_WITH_AS(load_model_config(kConfigs + "gemma_unsupported.json"),
                       doctest::Contains("model_type \"gemma\" (and no \"architectures\") is not supported; ONN runs "
                                         "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Phi3ForCausalLM"),
                       InvalidArgument);
  CHECK_THROWS_WITH_AS(parse(with(kLlama4, "architectures", R"(["GPT2LMHeadModel"])")),
                       doctest::Contains("architecture \"GPT2LMHeadModel\" is not supported"), InvalidArgument);
  CHECK_THROWS_WITH_AS(parse(with(kLlama4, "hidden_act", R"("gelu")")), doctest::Contains("field \"hidden_act\""),
                       InvalidArgument);
  CHECK_THROWS_WITH_AS(parse(with(kLlama4, "mlp_bias", "true")), doctest::Contains("field \"mlp_bias\""),
                       InvalidArgument);
  CHECK_THROWS_WITH_AS(parse(with(kLlama4, "rope_scaling", R"({"type": "yarn", "factor": 4.0})")),
                       doctest::Contains("field \"rope_scaling.rope_type\" is \"yarn\""), InvalidArgument);
  CHECK_THROWS_WITH_AS(parse(with(kLlama4, "torch_dtype", R"("float8_e4m3fn")")),
                       doctest::Contains("field \"torch_dtype\""), InvalidArgument);
}

TEST_CASE("malformed config.json fields are FormatErrors naming the field") {
  nlohmann::json j = nlohmann::json::parse(kLlama4);
  j.erase("hidden_size");
  CHECK_THROWS_WITH_AS(parse(j.dump()), doctest::Contains("config.json: field \"hidden_size\" is missing"), FormatError);
  CHECK_THROWS_WITH_AS(parse(with(kLlama4, "num_hidden_layers", R"("3")")),
                       doctest::Contains("field \"num_hidden_layers\" must be an integer"), FormatError);
  CHECK_THROWS_WITH_AS(parse(with(kLlama4, "vocab_size", "0")), doctest::Contains("field \"vocab_size\" must be at least 1"),
                       FormatError);
  CHECK_THROWS_WITH_AS(parse(with(kLlama4, "num_key_value_heads", "4")),
                       doctest::Contains("(4) must divide num_attention_heads (6)"), FormatError);
  CHECK_THROWS_WITH_AS(parse(with(kLlama4, "eos_token_id", "[2, -1]")), doctest::Contains("field \"eos_token_id\""),
                       FormatError);
  CHECK_THROWS_WITH_AS(parse(with(kLlama4, "partial_rotary_factor", "1.5")), doctest::Contains("partial_rotary_factor"),
                       FormatError);
  CHECK_THROWS_WITH_AS(parse("[1, 2]"), doctest::Contains("not a JSON object"), FormatError);
}
