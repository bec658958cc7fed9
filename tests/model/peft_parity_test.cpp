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
#include "support/peft_reference.h"
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

    TrainBatch batch = reference_batch(ctx, ref);

    // The step's loss, and every gradient PEFT computed, by its key, and no module of ours without one.
    check_reference_step(ctx, model, adapter, batch, ref);

    // Logits: merged into the weights (what onn-generate --adapter runs) equal PEFT's adapted model.
    merge_lora(ctx, model, adapter);
    const Tensor logits = model.logits(ctx, batch.ids, batch.positions, batch.seqs);
    CHECK(rel_error(logits, ref.load("logits", Device::cpu())) < 1e-5);
  }
}
