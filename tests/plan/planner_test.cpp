// The planner on real model shapes with assumed GPU figures: a Phi-4-shaped LoRA run fits a
// 4 GiB budget streamed, with its predicted peak under the budget; impossible budgets and too
// little host RAM are refused saying what would fit; small models stay resident; sparse
// layers shorten the backward's copies; a larger budget never predicts a slower step.
#include <doctest/doctest.h>

#include "model/init.h"
#include "runtime/error.h"
#include "plan/planner.h"

using namespace onn;

namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;

PlanHardware gpu(uint64_t host) {
  PlanHardware h;
  h.name = "assumed";
  h.h2d_gbs = h.d2h_gbs = 25;
  h.gemm_tflops = 600;
  h.device_free = 80 * kGiB;
  h.host_available = host;
  h.measured = true;
  return h;
}

// An H100-like device: PCIe 5 pinned copies and a fast bf16 GEMM.
PlanHardware h100_like() {
  PlanHardware h = gpu(64 * kGiB);
  h.h2d_gbs = h.d2h_gbs = 55;
  h.gemm_tflops = 750;
  return h;
}

PlanRequest phi4(uint64_t budget) {
  PlanRequest r;
  r.model = find_preset("phi4").config;  // 100352 vocabulary rows, as the real model
  r.lora.rank = 16;
  r.seq_len = 512;
  r.batch_rows = 32;
  r.budget = budget;
  return r;
}

}  // namespace

TEST_CASE("planner: Phi-4-shaped LoRA under 4 GiB is streamed and predicted under the budget") {
  const Plan p = plan_training(phi4(4 * kGiB), gpu(64 * kGiB));
  CHECK(p.streamed);
  CHECK(p.peak <= 4 * kGiB);
  CHECK(p.peak == p.resident_weights + p.chunk_buffers + p.trainable_state + p.activations + p.workspace + p.margin);
  CHECK(p.micro_batch * p.grad_accum == 32);
  CHECK(p.host_pinned > 27 * kGiB);  // the bf16 weights live in pinned host memory
  CHECK(p.step_ms > 0);
  CHECK(p.step_ms >= std::max(p.compute_ms, p.transfer_ms));
  CHECK(p.to_json()["predicted_peak_bytes"] == p.peak);
  CHECK(p.to_text().find("streamed") != std::string::npos);
}

TEST_CASE("planner: impossible budgets and short host RAM are refused with what would fit") {
  CHECK_THROWS_WITH_AS(plan_training(phi4(kGiB), gpu(64 * kGiB)), doctest::Contains("would fit with a budget of"),
                       InvalidArgument);
  CHECK_THROWS_WITH_AS(plan_training(phi4(4 * kGiB), gpu(16 * kGiB)), doctest::Contains("of host RAM"),
                       InvalidArgument);
  PlanRequest full = phi4(4 * kGiB);
  full.full = true;
  CHECK_THROWS_WITH_AS(plan_training(full, gpu(64 * kGiB)), doctest::Contains("LoRA instead of full training"),
                       InvalidArgument);
}

TEST_CASE("planner: a small model stays resident, sparse layers copy less, more budget is never slower") {
  PlanRequest small;
  small.model = find_preset("tinyllama").config;
  small.budget = 40 * kGiB;
  const Plan r = plan_training(small, gpu(64 * kGiB));
  CHECK_FALSE(r.streamed);
  CHECK(r.transfer_ms == 0);

  PlanRequest sparse = phi4(4 * kGiB);
  sparse.lora.layers = {36, 37, 38, 39};
  const Plan s = plan_training(sparse, gpu(64 * kGiB));
  const Plan d = plan_training(phi4(4 * kGiB), gpu(64 * kGiB));
  CHECK(s.lowest_trained_layer == 36);
  CHECK(s.weight_bytes_per_load < d.weight_bytes_per_load);
  // 4 of 40 layers (each kind packed into one allocation, rounded to 2 MiB once)
  CHECK(s.trainable_state * 10 == doctest::Approx(d.trainable_state).epsilon(0.05));

  double last = 1e300;
  for (uint64_t gb : {4, 6, 8, 16, 32, 64}) {
    CAPTURE(gb);
    const Plan p = plan_training(phi4(gb * kGiB), gpu(64 * kGiB));
    CHECK(p.peak <= gb * kGiB);
    CHECK(p.step_ms <= last * 1.0001);
    last = p.step_ms;
  }
}

TEST_CASE("planner: a forced placement, and the batch split into the largest micro-batch that streams") {
  PlanRequest small;
  small.model = find_preset("tinyllama").config;
  small.budget = 40 * kGiB;
  small.placement = PlanRequest::Placement::streamed;
  CHECK(plan_training(small, gpu(64 * kGiB)).streamed);
  PlanRequest resident = phi4(4 * kGiB);
  resident.placement = PlanRequest::Placement::resident;
  CHECK_THROWS_AS(plan_training(resident, gpu(64 * kGiB)), InvalidArgument);
  PlanRequest full = phi4(80 * kGiB);
  full.full = true;
  full.placement = PlanRequest::Placement::streamed;
  CHECK_THROWS_WITH_AS(plan_training(full, gpu(64 * kGiB)), doctest::Contains("cannot stream"), InvalidArgument);

  // Streamed: the planner's split of 16 rows is one that fits, and the step it predicts is the
  // fastest of the splits; only micro-batches above some size fail to fit.
  PlanRequest split = phi4(8 * kGiB);
  split.batch_rows = 16;
  const Plan chosen = plan_training(split, gpu(64 * kGiB));
  CHECK(chosen.streamed);
  CHECK(chosen.micro_batch * chosen.grad_accum == 16);
  CHECK(chosen.micro_batch > 1);
  int fitting = 0;
  int64_t largest_fitting = 0;
  for (int64_t d : {1, 2, 4, 8, 16}) {
    CAPTURE(d);
    PlanRequest fixed = split;
    fixed.micro_batch = d;
    try {
      const Plan p = plan_training(fixed, gpu(64 * kGiB));
      ++fitting;
      CHECK(largest_fitting == d / 2);  // every smaller split fitted too
      largest_fitting = d;
      CHECK(p.step_ms >= chosen.step_ms * 0.999);
    } catch (const InvalidArgument&) {
      CHECK(d > chosen.micro_batch);
    }
  }
  CHECK(fitting >= 2);
  CHECK(chosen.micro_batch <= largest_fitting);
}

TEST_CASE("planner: micro-batches share each weight load, so the weights cross once per step") {
  // 16 rows of the Phi-4 shape under 4 GiB on an H100-like device: one micro-batch of 16 does
  // not fit, and a load per micro-batch would be copy-bound. The planner's micro-batches take
  // turns on every weight load instead.
  const PlanHardware hw = h100_like();
  PlanRequest r = phi4(4 * kGiB);
  r.batch_rows = 16;
  const Plan p = plan_training(r, hw);
  CHECK(p.streamed);
  CHECK(p.peak <= r.budget);
  REQUIRE(p.grad_accum > 1);
  CHECK(p.micro_batches_per_load == p.grad_accum);
  CHECK(p.to_text().find("share each weight load") != std::string::npos);
  CHECK(p.to_json()["micro_batches_per_load"] == p.grad_accum);
  // The step's copies are one load's weights (and the offloaded activations), not grad_accum
  // loads' ...
  const double load_ms = p.weight_bytes_per_load / (hw.h2d_gbs * 1e9) * 1e3;
  CHECK(p.transfer_ms >= load_ms);
  CHECK(p.transfer_ms < 1.5 * load_ms);
  // ... so the step is faster than copying the weights per micro-batch could ever be.
  CHECK(p.step_ms < double(p.grad_accum) * load_ms);
  // A single micro-batch has nothing to share.
  PlanRequest one = r;
  one.batch_rows = 1;
  CHECK(plan_training(one, hw).micro_batches_per_load == 1);
}

TEST_CASE("planner: where the whole step's micro-batches cannot share a load, a smaller group of them does") {
  // 16 rows of the Phi-4 shape at the tightest budget the planner accepts: one row per
  // micro-batch, copy-bound. Sixteen lanes do not fit; two do, halving the copies.
  const PlanHardware hw = h100_like();
  PlanRequest r = phi4(2 * kGiB);
  r.batch_rows = 16;
  uint64_t mib = 0;
  try {
    plan_training(r, hw);
  } catch (const InvalidArgument& e) {
    const std::string what = e.what();
    const size_t at = what.find("--vram-budget ");
    REQUIRE(at != std::string::npos);
    mib = std::stoull(what.substr(at + 14));
  }
  REQUIRE(mib > 2048);
  r.budget = mib << 20;
  const Plan p = plan_training(r, hw);
  CHECK(p.peak <= r.budget);
  REQUIRE(p.grad_accum > 2);
  CHECK(p.micro_batches_per_load > 1);
  CHECK(p.micro_batches_per_load < p.grad_accum);
  CHECK(p.grad_accum % p.micro_batches_per_load == 0);
  const std::string loads = std::to_string(p.grad_accum / p.micro_batches_per_load);
  CHECK(p.to_text().find(std::to_string(p.micro_batches_per_load) + " sharing each weight load (the weights cross PCIe " +
                         loads + " times per step)") != std::string::npos);
  // One row per micro-batch is copy-bound, and the note says how often the weights cross.
  REQUIRE(p.transfer_ms > p.compute_ms);
  bool says = false;
  for (const std::string& n : p.notes)
    says = says || n.find("per group of " + std::to_string(p.micro_batches_per_load) + " micro-batches") !=
                       std::string::npos;
  CHECK(says);
  // Its copies are grad_accum / micro_batches_per_load loads ...
  const double load_ms = p.weight_bytes_per_load / (hw.h2d_gbs * 1e9) * 1e3;
  CHECK(p.transfer_ms >= std::stod(loads) * load_ms);
  // ... fewer than a load per micro-batch (--share-loads off), at the same split.
  PlanRequest off = r;
  off.micro_batch = p.micro_batch;
  off.sharing = PlanRequest::Sharing::off;
  const Plan unshared = plan_training(off, hw);
  CHECK(unshared.micro_batches_per_load == 1);
  CHECK(p.step_ms < 0.75 * unshared.step_ms);
  // Every micro-batch of the step on one load (--share-loads on) does not fit at that split.
  PlanRequest on = off;
  on.sharing = PlanRequest::Sharing::on;
  CHECK_THROWS_AS(plan_training(on, hw), InvalidArgument);
}

TEST_CASE("planner: activations stay on the device when they fit and offloading would not be faster") {
  // 16 rows of the Phi-4 shape in one micro-batch on a fast-GEMM device: compute-bound, so the
  // offload's copies predict no slower step. Under 8 GiB only the offload fits; under 12 GiB
  // the layer inputs fit on the device, and there they stay.
  const PlanHardware hw = h100_like();
  PlanRequest r = phi4(8 * kGiB);
  r.batch_rows = 16;
  r.micro_batch = 16;  // (split, the micro-batches could share loads with their inputs on the device)
  r.placement = PlanRequest::Placement::streamed;
  const Plan tight = plan_training(r, hw);
  CHECK(tight.micro_batch == 16);
  CHECK(tight.activations_on_host);
  // The top layer inputs use a third of what the budget has left; the rest go to the host.
  const double boundary = 16.0 * 512 * double(r.model.hidden_size) * 2;  // bf16 (N, C)
  CHECK(tight.activation_layers_on_device > 0);
  CHECK(tight.activation_layers_on_device < r.model.num_hidden_layers);
  CHECK(tight.peak <= r.budget);
  CHECK(double(r.budget - tight.peak) >= 1.9 * double(tight.activation_layers_on_device) * boundary);
  CHECK(tight.to_text().find("layer inputs on the device") != std::string::npos);
  CHECK(tight.to_json()["activation_layers_on_device"] == tight.activation_layers_on_device);
  r.budget = 12 * kGiB;
  const Plan roomy = plan_training(r, hw);
  CHECK(roomy.micro_batch == 16);
  CHECK_FALSE(roomy.activations_on_host);
  CHECK(roomy.activation_layers_on_device == 0);
  CHECK(roomy.peak <= r.budget);
  CHECK(roomy.peak > tight.peak);  // the lower peak alone would have offloaded
  CHECK(roomy.step_ms <= tight.step_ms * 1.001);
}

TEST_CASE("planner: when every split is compute-bound, the one that copies the weights least") {
  // A slow GEMM makes every split of 16 rows equally fast by the model; the step's PCIe bytes
  // decide (the copies are where the model is least sure), not the lower peak of one row at a time.
  PlanHardware hw = gpu(64 * kGiB);
  hw.gemm_tflops = 20;
  PlanRequest r = phi4(16 * kGiB);
  r.batch_rows = 16;
  r.placement = PlanRequest::Placement::streamed;
  const Plan p = plan_training(r, hw);
  REQUIRE(p.compute_ms > p.transfer_ms);
  CHECK(p.micro_batch == 16);
  CHECK(p.grad_accum == 1);
  PlanRequest one = r;
  one.micro_batch = 1;
  const Plan q = plan_training(one, hw);
  CHECK(q.step_ms <= p.step_ms * 1.001);  // as fast by the model
  CHECK(q.peak < p.peak);                 // and smaller, which used to decide
}

TEST_CASE("planner: an nf4 base under 4 GiB moves at most 0.3x the bf16 plan's weight bytes per step") {
  const Plan bf16 = plan_training(phi4(4 * kGiB), h100_like());
  PlanRequest q = phi4(4 * kGiB);
  q.quant = QuantFormat::nf4;
  const Plan nf4 = plan_training(q, h100_like());
  REQUIRE(nf4.streamed);
  CHECK(nf4.peak <= 4 * kGiB);
  const double bf16_bytes = bf16.to_json()["weight_bytes_per_step"].get<double>();
  const double nf4_bytes = nf4.to_json()["weight_bytes_per_step"].get<double>();
  MESSAGE("bf16 " << bf16_bytes / double(kGiB) << " GiB per step, nf4 " << nf4_bytes / double(kGiB) << " GiB");
  CHECK(nf4_bytes <= 0.3 * bf16_bytes);
  CHECK(nf4.layers_per_chunk >= bf16.layers_per_chunk);
  CHECK(nf4.host_pinned < bf16.host_pinned / 2);  // the quantized weights in pinned host memory
  CHECK(nf4.step_ms < bf16.step_ms);
  CHECK(nf4.to_json()["base"] == "nf4");
  CHECK(nf4.to_text().find("base: nf4") != std::string::npos);
  // Full training on a quantized base is refused, naming why.
  q.full = true;
  CHECK_THROWS_WITH_AS(plan_training(q, h100_like()), doctest::Contains("full training needs a dense base"),
                       InvalidArgument);
}
