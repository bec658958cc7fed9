// ONN's LoRA against Hugging Face transformers + PEFT (tests/data/make_lora_reference.py):
// the adapter folder PEFT wrote loads; one training step's loss and every lora_A/lora_B
// gradient match PEFT's in F32 (normalized error below 1e-4); the adapted model's logits,
// and the merged model's, match PEFT's. Llama (GQA, every projection), Qwen2 (biases, three
// targets on one layer, rsLoRA) and Phi-3 (fused qkv_proj / gate_up_proj).
#include <doctest/doctest.h>

#include <string>

#include "model/llama.h"
#include "model/lora.h"
#include "model/training.h"
#include "runtime/safetensors.h"
#include "support/grad_check.h"
#include "support/test_util.h"

using namespace onn;
using namespace onn::test;

TEST_CASE("LoRA step parity with transformers + PEFT: loss, gradients and logits from PEFT's own adapter files") {
  for (const std::string name : {"llama_gqa", "qwen2", "phi3"}) {
    CAPTURE(name);
    const std::string dir = std::string(ONN_TEST_DATA_DIR) + "/models/" + name;
    const SafetensorsFile ref = SafetensorsFile::open(dir + "/lora_reference.safetensors");
    Context ctx(Device::cpu());
    LlamaModel model = LlamaModel::load(ctx, dir, DType::f32);
    const LoraAdapter adapter = load_peft_adapter(ctx, model, dir + "/lora_reference");

    TrainBatch batch;
    batch.ids = ref.load("ids", Device::cpu());
    batch.positions = ref.load("positions", Device::cpu());
    batch.labels = ref.load("labels", Device::cpu());
    const Tensor lens = ref.load("seq_lens", Device::cpu());
    std::vector<int64_t> seq_lens(lens.data_as<int32_t>(), lens.data_as<int32_t>() + lens.numel());
    batch.seqs = packed_seqs(ctx, seq_lens);

    Gradients grads = make_gradients(ctx, model, &adapter);
    PassOptions opt;
    opt.lora = &adapter;
    opt.dropout = false;
    const double loss = forward_backward(ctx, model, batch, grads, opt);
    const double want = ref.load("loss", Device::cpu()).data_as<double>()[0];
    CHECK(std::abs(loss - want) / want < 1e-5);

    // Every gradient PEFT computed, by its key, and no module of ours without one.
    size_t matched = 0;
    for (const LoraModule& m : grads.lora.modules) {
      const std::string key = "base_model.model.model.layers." + std::to_string(m.layer) + "." + m.name;
      for (const auto& [suffix, g] : {std::pair<const char*, const Tensor*>{".lora_A.weight", &m.a}, {".lora_B.weight", &m.b}}) {
        CAPTURE(key + suffix);
        const Tensor r = ref.load("grad." + key + suffix, Device::cpu());
        REQUIRE(r.shape() == g->shape());
        CHECK(rel_error(*g, r) < 1e-4);
        ++matched;
      }
    }
    size_t grads_in_ref = 0;
    for (const TensorInfo& t : ref.tensors()) grads_in_ref += t.name.rfind("grad.", 0) == 0;
    CHECK(matched == grads_in_ref);

    // Logits: merged into the weights (what onn-generate --adapter runs) equal PEFT's adapted model.
    merge_lora(ctx, model, adapter);
    const Tensor logits = model.logits(ctx, batch.ids, batch.positions, batch.seqs);
    CHECK(rel_error(logits, ref.load("logits", Device::cpu())) < 1e-5);
  }
}
