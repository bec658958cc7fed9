// One training step's reference as the transformers + PEFT fixture scripts write it
// (tests/data/make_lora_reference.py, make_quant_reference.py): the packed batch, and every
// lora_A / lora_B gradient by its PEFT key.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "model/block.h"
#include "model/training.h"
#include "runtime/safetensors.h"
#include "support/grad_check.h"

namespace onn::test {

// ids, positions, labels and seq_lens of the reference step.
inline TrainBatch reference_batch(Context& ctx, const SafetensorsFile& ref) {
  TrainBatch batch;
  batch.ids = ref.load("ids", Device::cpu());
  batch.positions = ref.load("positions", Device::cpu());
  batch.labels = ref.load("labels", Device::cpu());
  const Tensor lens = ref.load("seq_lens", Device::cpu());
  std::vector<int64_t> seq_lens(lens.data_as<int32_t>(), lens.data_as<int32_t>() + lens.numel());
  batch.seqs = packed_seqs(ctx, seq_lens);
  return batch;
}

// Every gradient PEFT computed matches ours (normalized error below 1e-4), by its key, and no
// module of ours lacks one. Returns how many were compared.
inline size_t check_lora_gradients(const Gradients& grads, const SafetensorsFile& ref) {
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
  return matched;
}

// One training step of `adapter` on the reference batch without dropout: its loss within 1e-5
// (relative) of the reference's, and every gradient as check_lora_gradients. Returns how many
// gradients were compared.
inline size_t check_reference_step(Context& ctx, LlamaModel& model, const LoraAdapter& adapter,
                                   const TrainBatch& batch, const SafetensorsFile& ref) {
  Gradients grads = make_gradients(ctx, model, &adapter);
  PassOptions opt;
  opt.lora = &adapter;
  opt.dropout = false;
  const double loss = forward_backward(ctx, model, batch, grads, opt);
  const double want = ref.load("loss", Device::cpu()).data_as<double>()[0];
  CHECK(std::abs(loss - want) / want < 1e-5);
  return check_lora_gradients(grads, ref);
}

}  // namespace onn::test
