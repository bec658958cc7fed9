// The planner's memory prediction against the allocator, at a real model's shapes: a rehearsal
// (Context::start_rehearsal) runs the streamed LoRA training step of a Phi-4-shaped model (40
// layers, 14.7B parameters, bf16, 16 rows of 512 tokens) on the CPU with every allocation the
// step makes on CUDA and no compute, against a caching allocator with the plan's budget. The
// plan must fit (the allocator refuses anything over its budget), its predicted peak must cover
// the real one, and a second step must be served from the cache (a cudaFree waits for the whole
// device, which would drain the streaming pipeline).
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <regex>
#include <string>

#include "kernels/adamw.h"
#include "model/init.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/streaming.h"
#include "model/training.h"
#include "runtime/error.h"
#include "support/train_batch.h"
#include "plan/planner.h"

using namespace onn;

namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;

PlanHardware h100_like() {
  PlanHardware h;
  h.name = "assumed";
  h.h2d_gbs = h.d2h_gbs = 55;
  h.gemm_tflops = 700;
  h.device_free = 80 * kGiB;
  h.host_available = 120 * kGiB;
  h.measured = true;
  return h;
}

struct Rehearsed {
  Plan plan;
  AllocatorStats second;              // after the second step
  uint64_t second_backend_calls = 0;  // the allocator's backend allocations and frees in it
};

// Two optimizer steps of the plan (grad_accum micro-batches each) as the trainer runs them.
Rehearsed rehearse(const ModelConfig& mc, uint64_t budget, int64_t rows) {
  PlanRequest req;
  req.model = mc;
  req.lora.rank = 16;
  req.lora.targets = parse_lora_targets("all-linear");
  req.seq_len = 512;
  req.batch_rows = rows;
  req.budget = budget;
  Rehearsed r;
  r.plan = plan_training(req, h100_like());
  REQUIRE(r.plan.streamed);
  CachingAllocator alloc(make_host_raw_backend(), budget);
  Context ctx(Device::cpu(), alloc, 0);
  ctx.start_rehearsal();
  LlamaModel model = LlamaModel::placeholder_on_host(ctx, mc, DType::bf16);
  StreamOptions so;
  so.layers_per_chunk = r.plan.layers_per_chunk;
  so.offload_activations = r.plan.activations_on_host;
  so.activation_layers_on_device = r.plan.activations_on_host ? r.plan.activation_layers_on_device : 0;
  StreamedWeights sw(ctx, model, so);
  LoraAdapter ad = make_lora_adapter(ctx, model, req.lora, 1);
  Gradients g = make_gradients(ctx, model, &ad);
  std::vector<Tensor> params = gradient_tensors(Gradients{ad, std::nullopt, mc}), grads = gradient_tensors(g), ms, vs;
  std::vector<Tensor> copies;  // the compute-dtype copies AdamW refreshes
  for (const LoraModule& m : ad.modules)
    for (const Tensor* c : {&m.a_c, &m.b_c}) copies.push_back(*c);
  std::vector<std::pair<Shape, DType>> specs;  // the moments packed, as the trainer has them
  for (const Tensor& p : params) specs.emplace_back(p.shape(), p.dtype());
  ms = Tensor::empty_packed(specs, alloc);
  vs = Tensor::empty_packed(specs, alloc);
  std::mt19937 rng(3);
  for (int step = 0; step < 2; ++step) {
    const AllocatorStats before = alloc.stats();
    zero_gradients(ctx, g);
    std::vector<TrainBatch> batches;
    for (int64_t i = 0; i < r.plan.grad_accum; ++i)
      batches.push_back(test::packed_train_batch(
          ctx, mc.vocab_size, std::vector<int64_t>(static_cast<size_t>(r.plan.micro_batch), 512), 0, rng));
    Tensor losses = Tensor::empty(Shape{r.plan.grad_accum}, DType::f32, alloc);
    std::vector<Tensor> outs(static_cast<size_t>(r.plan.grad_accum));
    std::vector<PassOptions> opts;
    for (int64_t i = 0; i < r.plan.grad_accum; ++i) {
      PassOptions opt;
      opt.lora = &ad;
      opt.stream = &sw;
      opt.head_granule = so.head_granule;
      opt.loss_tokens = r.plan.micro_batch * r.plan.grad_accum * 512;
      outs[static_cast<size_t>(i)] = losses.slice(i, i + 1);
      opt.loss_out = &outs[static_cast<size_t>(i)];
      opts.push_back(opt);
    }
    // Groups of micro_batches_per_load share each weight load, as the trainer runs them.
    REQUIRE(r.plan.micro_batches_per_load >= 1);
    forward_backward_groups(ctx, model, batches, g, opts, static_cast<size_t>(r.plan.micro_batches_per_load));
    std::vector<const Tensor*> gp;
    for (const Tensor& t : grads) gp.push_back(&t);
    global_grad_norm(ctx, gp);
    AdamWConfig cfg;
    cfg.step = step + 1;
    for (size_t i = 0; i < params.size(); ++i)
      adamw_step(ctx, params[i], grads[i], ms[i], vs[i], cfg, copies[i].data() != params[i].data() ? &copies[i] : nullptr);
    r.second = alloc.stats();
    r.second_backend_calls = r.second.backend_allocs + r.second.backend_frees - before.backend_allocs -
                             before.backend_frees;
  }
  return r;
}

void check_rehearsal(const Rehearsed& r, uint64_t budget) {
  INFO("plan: ", r.plan.to_text());
  INFO("peak reserved ", r.second.peak_reserved, ", peak in use ", r.second.peak_in_use, ", predicted ", r.plan.peak);
  INFO("split ", r.plan.micro_batch, " x ", r.plan.grad_accum, " (", r.plan.micro_batches_per_load, " per weight load), ",
       r.plan.layers_per_chunk, " layer(s) per chunk, ",
       r.plan.activations_on_host ? "activations offloaded" : "activations on the device");
  CHECK(r.second.peak_reserved <= budget);
  // The prediction covers what the step holds at once (its margin is for what a rehearsal
  // does not see: the CUDA kernels' own temporaries, the allocator's rounding).
  CHECK(r.second.peak_in_use <= r.plan.peak);
  // ... and is not far above it: without the margin, within 10%.
  const double modelled = double(r.plan.peak - r.plan.margin), real = double(r.second.peak_in_use);
  CHECK(std::abs(modelled - real) <= 0.1 * real);
  CHECK(r.second_backend_calls == 0);
}

}  // namespace

TEST_CASE("rehearsal: Phi-4-shaped streamed LoRA steps, 16 rows, fit the planner's budgets and reuse the cache") {
  const ModelConfig mc = find_preset("phi4").config;
  // 2 GiB is refused with the budget that would fit; that one is rehearsed too (one row per
  // micro-batch, the tightest plan).
  uint64_t suggested = 0;
  try {
    rehearse(mc, 2 * kGiB, 16);
  } catch (const InvalidArgument& e) {
    std::smatch m;
    const std::string what = e.what();
    REQUIRE(std::regex_search(what, m, std::regex("--vram-budget ([0-9]+)MiB")));
    suggested = std::stoull(m[1]);
  }
  REQUIRE(suggested > 2048);
  for (const uint64_t mib : {suggested, uint64_t{3072}, uint64_t{4096}, uint64_t{6144}, uint64_t{8192}, uint64_t{12288}}) {
    const uint64_t budget = mib << 20;
    CAPTURE(mib);
    check_rehearsal(rehearse(mc, budget, 16), budget);
  }
}
