// The LLaMA-family forward on CUDA against transformers' logits (label gpu): F32 compute
// below 1e-4 normalized error, BF16 weights and activations below 2e-2.
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>

#include "kernels/cross_entropy.h"
#include "model/init.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/streaming.h"
#include "model/training.h"
#include "runtime/safetensors.h"
#include "support/grad_check.h"
#include "support/test_util.h"

using namespace onn;
using namespace onn::test;

TEST_CASE("model forward on CUDA matches transformers' logits (F32 and BF16)") {
  Context ctx(Device::cuda(0));
  for (const char* name : {"llama_gqa", "llama_tied", "qwen2", "phi3"}) {
    for (DType t : {DType::f32, DType::bf16}) {
      CAPTURE(name);
      CAPTURE(dtype_name(t));
      // The GPU machine runs a carried binary from another checkout path: it says where the
      // data is (scripts/gpu-verify.sh).
      const char* env = std::getenv("ONN_TEST_DATA_DIR");
      const std::string dir = std::string(env ? env : ONN_TEST_DATA_DIR) + "/models/" + name;
      const LlamaModel model = LlamaModel::load(ctx, dir, t);
      const SafetensorsFile ref = SafetensorsFile::open(dir + "/reference.safetensors");
      const Tensor ids2 = clone(ref.tensor("input_ids"));
      const int64_t b = ids2.dim(0), n = ids2.dim(1);
      const Tensor ids = ids2.reshape(Shape{b * n}).to(ctx.device());
      const Tensor pos = sequence_positions(b, n).to(ctx.device());
      const Tensor logits = model.logits(ctx, ids, pos, uniform_seqs(ctx, b, n));
      ctx.synchronize();
      const double err = rel_error(logits.to(Device::cpu()), ref.tensor("logits"));
      CAPTURE(err);
      CHECK(err < (t == DType::f32 ? 1e-4 : 2e-2));
    }
  }
}

namespace {
// Three optimizer-free passes of LoRA training on CUDA: losses and LoRA gradients on the host.
// queued: as the trainer runs them, batches (with host ids) first, then the passes back to
// back with their losses left on the device (PassOptions::loss_out), read once at the end.
// shared (queued): the three micro-batches share each weight load (forward_backward_group).
std::pair<std::vector<double>, std::vector<Tensor>> cuda_lora_pass(const std::string& dir, int64_t k, bool offload,
                                                                   bool queued = false, int64_t on_device = 0,
                                                                   bool shared = false,
                                                                   QuantFormat quantize = QuantFormat::none) {
  Context ctx(Device::cuda(0));
  LlamaModel model = k > 0 ? LlamaModel::load_to_host(ctx, dir, std::nullopt, quantize)
                           : LlamaModel::load(ctx, dir, std::nullopt, quantize);
  LoraSpec spec;
  spec.rank = 4;
  spec.dropout = 0.1;
  LoraAdapter ad = make_lora_adapter(ctx, model, spec, 5);
  std::mt19937 rng(9);
  for (LoraModule& m : ad.modules) m.b.copy_from(random64(m.b.shape(), rng, 0.05).to_dtype(m.b.dtype()));
  ad.sync_compute_copies(ctx);
  std::optional<StreamedWeights> sw;
  if (k > 0) {
    StreamOptions so;
    so.layers_per_chunk = k;
    so.head_granule = 64;
    so.offload_activations = offload;
    so.activation_layers_on_device = on_device;
    sw.emplace(ctx, model, so);
  }
  Gradients g = make_gradients(ctx, model, &ad);
  std::vector<TrainBatch> batches;
  for (int micro = 0; micro < 3; ++micro) {
    std::mt19937 r2(static_cast<uint32_t>(micro));
    const int64_t b = 3, n = 40;
    std::vector<int32_t> ids(static_cast<size_t>(b * n));
    for (int32_t& id : ids) id = static_cast<int32_t>(r2() % static_cast<uint32_t>(model.config().vocab_size));
    TrainBatch batch;
    if (queued) batch.host_ids = i32_tensor(ids);
    batch.ids = i32_tensor(ids).to(ctx.device());
    batch.positions = sequence_positions(b, n).to(ctx.device());
    batch.labels = next_token_labels(i32_tensor(ids), b, n).to(ctx.device());
    batch.seqs = uniform_seqs(ctx, b, n);
    batches.push_back(std::move(batch));
  }
  std::vector<double> losses;
  Tensor device_losses = Tensor::empty(Shape{3}, loss_dtype(model.dtype()), ctx.allocator());
  std::vector<Tensor> outs(3);
  std::vector<PassOptions> opts;
  for (int micro = 0; micro < 3; ++micro) {
    PassOptions opt;
    opt.lora = &ad;
    opt.dropout_seed = static_cast<uint64_t>(micro);
    opt.head_granule = 64;
    opt.stream = sw ? &*sw : nullptr;
    outs[static_cast<size_t>(micro)] = device_losses.slice(micro, micro + 1);
    if (queued) opt.loss_out = &outs[static_cast<size_t>(micro)];
    opts.push_back(opt);
  }
  if (shared) {
    forward_backward_group(ctx, model, {&batches[0], &batches[1], &batches[2]}, g, opts);
  } else {
    for (int micro = 0; micro < 3; ++micro) {
      const double l = forward_backward(ctx, model, batches[static_cast<size_t>(micro)], g, opts[static_cast<size_t>(micro)]);
      if (!queued) losses.push_back(l);
    }
  }
  if (queued) {
    ctx.synchronize();
    const Tensor host = device_losses.to(Device::cpu());
    for (int i = 0; i < 3; ++i) losses.push_back(load_as_double(host.data(), host.dtype(), static_cast<size_t>(i)));
  }
  std::vector<Tensor> grads;
  for (const Tensor& t : gradient_tensors(g)) grads.push_back(t.to(Device::cpu()));
  ctx.synchronize();
  return {losses, grads};
}
}  // namespace

TEST_CASE("streamed LoRA training on CUDA (copy and compute streams overlapping) has the bits of resident training") {
  TempDir tmp;
  ModelPreset p = find_preset("tiny");
  p.config.num_hidden_layers = 5;
  InitOptions io;
  io.seed = 4;
  write_random_model(p, tmp.path().string(), io);  // BF16 weights
  const auto resident = cuda_lora_pass(tmp.path().string(), 0, false);
  struct Case {
    int64_t k;
    bool offload, queued;
    int64_t on_device;  // with offload: the top layer inputs kept on the device
    bool shared = false;  // the micro-batches share each weight load
  };
  for (const Case& c : {Case{1, false, false, 0}, Case{2, true, false, 0}, Case{3, false, false, 0},
                        Case{1, true, false, 0}, Case{1, true, true, 0}, Case{2, false, true, 0},
                        Case{1, true, true, 2}, Case{1, false, true, 0, true}, Case{2, true, true, 0, true},
                        Case{1, true, true, 2, true}}) {
    CAPTURE(c.k);
    CAPTURE(c.offload);
    CAPTURE(c.queued);
    CAPTURE(c.on_device);
    CAPTURE(c.shared);
    const auto streamed = cuda_lora_pass(tmp.path().string(), c.k, c.offload, c.queued, c.on_device, c.shared);
    CHECK(streamed.first == resident.first);
    REQUIRE(streamed.second.size() == resident.second.size());
    bool same = true;
    for (size_t i = 0; i < streamed.second.size(); ++i)
      same = same && std::memcmp(streamed.second[i].data(), resident.second[i].data(), streamed.second[i].nbytes()) == 0;
    CHECK(same);
  }
}

TEST_CASE("QLoRA on CUDA: streamed nf4, int8 and fp8 bases have the bits of resident ones, and differ from bf16") {
  TempDir tmp;
  ModelPreset p = find_preset("tiny");
  p.config.num_hidden_layers = 4;
  InitOptions io;
  io.seed = 6;
  write_random_model(p, tmp.path().string(), io);  // BF16 weights
  const auto dense = cuda_lora_pass(tmp.path().string(), 0, false);
  for (QuantFormat f : {QuantFormat::nf4, QuantFormat::int8, QuantFormat::fp8}) {
    CAPTURE(quant_format_name(f));
    const auto resident = cuda_lora_pass(tmp.path().string(), 0, false, false, 0, false, f);
    CHECK(resident.first != dense.first);
    for (double l : resident.first) CHECK(std::abs(l - dense.first[0]) < 0.5);
    for (int64_t k : {1, 2}) {
      const auto streamed = cuda_lora_pass(tmp.path().string(), k, k == 2, true, 0, k == 2, f);
      CHECK(streamed.first == resident.first);
      bool same = streamed.second.size() == resident.second.size();
      for (size_t i = 0; same && i < streamed.second.size(); ++i)
        same = std::memcmp(streamed.second[i].data(), resident.second[i].data(), streamed.second[i].nbytes()) == 0;
      CHECK(same);
    }
  }
}
