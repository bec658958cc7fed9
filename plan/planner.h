// The run planner: from the hardware (measured, or assumed when planning for a machine that
// is not this one), the model's config.json and a device-memory budget, decides how a LoRA or
// full training run fits — weights resident or streamed in chunks of layers through two
// device buffers, the micro-batch and gradient accumulation, where the layer-boundary
// activations live, recomputation — and predicts peak device memory and step time. Needs
// config.json only: no weights.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "model/lora.h"
#include "runtime/device.h"
#include "runtime/dtype.h"
#include "runtime/hardware.h"

namespace onn {

struct PlanHardware {
  std::string name;              // "NVIDIA H100 80GB HBM3", "cpu"
  double h2d_gbs = 0;            // pinned host-to-device copies, GB/s
  double d2h_gbs = 0;
  double gemm_tflops = 0;        // dense GEMM rate in the compute dtype
  uint64_t device_free = 0;      // bytes
  uint64_t host_available = 0;   // bytes
  bool measured = false;         // false: the figures below are assumptions (named in notes)
};

// The planning view of a device: measured figures from the profile where it has them, else
// conservative assumptions (PCIe 4.0 x16: 20 GB/s; 100 TFLOP/s bf16; for the CPU backend the
// measured host copy rate and 0.2 TFLOP/s).
PlanHardware plan_hardware(const HardwareProfile& profile, int cuda_index);
// The planning view of `device` on this machine, profiled (3 copy and GEMM repetitions). A
// CUDA device this machine lacks is planned on the assumptions, which needs a budget
// (InvalidArgument when `budget` is 0). host_ram > 0 replaces the available host memory.
PlanHardware plan_hardware_for(Device device, uint64_t budget, uint64_t host_ram = 0);

// Weights resident or streamed: the planner's choice (auto, --stream auto), or forced (--stream
// off / on).
enum class Placement { auto_, resident, streamed };
// Streamed: whether a step's micro-batches may share each weight load (auto: where faster;
// --share-loads auto|on|off).
enum class Sharing { auto_, on, off };

// The budget a run gets without --vram-budget: the device's free memory less
// kDeviceMemoryMargin (0 when less than that is free).
uint64_t default_budget(uint64_t device_free);

struct PlanRequest {
  using Placement = onn::Placement;
  using Sharing = onn::Sharing;
  ModelConfig model;
  DType dtype = DType::bf16;   // compute dtype of the weights on the device
  QuantFormat quant = QuantFormat::none;  // the projection weights' format (frozen; LoRA only)
  bool full = false;
  LoraSpec lora;               // rank, targets, layers (when !full)
  int64_t seq_len = 512;
  int64_t batch_rows = 4;      // rows of seq_len per optimizer step (micro-batch x accumulation)
  int64_t micro_batch = 0;     // 0: the planner chooses (a divisor of batch_rows)
  Placement placement = Placement::auto_;
  Sharing sharing = Sharing::auto_;
  uint64_t budget = 0;         // device bytes; 0: the device's free memory less the margin
};

struct Plan {
  QuantFormat quant = QuantFormat::none;  // the frozen base's format
  bool streamed = false;
  int64_t layers = 0, layers_per_chunk = 0, chunks = 0;
  int64_t lowest_trained_layer = 0;  // the backward runs from here up
  int64_t micro_batch = 0, grad_accum = 0, seq_len = 0;
  // Streamed: how many micro-batches each weight load serves (forward_backward_groups): a
  // divisor of grad_accum, so the weights cross PCIe grad_accum / micro_batches_per_load times
  // per step (once when it is the whole step's).
  int64_t micro_batches_per_load = 1;
  bool activations_on_host = false;
  // With activations on the host: how many layer inputs (the top ones) stay on the device.
  int64_t activation_layers_on_device = 0;
  bool recompute = false;
  int64_t lm_head_chunk_tokens = 0;
  // Predicted device bytes.
  uint64_t budget = 0;
  uint64_t resident_weights = 0;   // weights kept on the device (all of them when not streamed)
  uint64_t chunk_buffers = 0;      // two chunk buffers (streamed)
  uint64_t trainable_state = 0;    // trained parameters, gradients, AdamW moments, compute copies
  uint64_t activations = 0;        // layer-boundary activations kept on the device
  uint64_t workspace = 0;          // one layer's internals and gradients, the LM head's logits
  uint64_t margin = 0;             // cuBLAS workspaces, allocator rounding
  uint64_t peak = 0;
  uint64_t host_pinned = 0;        // streamed weights + offloaded activations in pinned host memory
  // Predicted time of one optimizer step.
  double compute_ms = 0, transfer_ms = 0, step_ms = 0, tokens_per_s = 0;
  double weight_bytes_per_load = 0;  // copied host to device per pass (one per micro_batches_per_load)
  std::vector<std::string> notes;

  nlohmann::ordered_json to_json() const;
  std::string to_text() const;
};

// Generation and evaluation: resident when the weights, the KV cache and the workspace fit the
// budget; else streamed with the most layers per chunk that fit (each decoded token then
// copies every weight across PCIe once).
struct GenerationPlan {
  QuantFormat quant = QuantFormat::none;  // the projection weights' format
  bool streamed = false;
  int64_t layers = 0, layers_per_chunk = 0, chunks = 0;
  int64_t batch = 0, max_len = 0;
  uint64_t budget = 0, weights = 0, chunk_buffers = 0, kv_cache = 0, workspace = 0, margin = 0, peak = 0;
  uint64_t host_pinned = 0;
  double weight_bytes_per_forward = 0;  // copied host to device per prefill or decode step
  double decode_ms_per_token = 0;       // streamed: the PCIe time of one decode step
  std::vector<std::string> notes;
  nlohmann::ordered_json to_json() const;
  std::string to_text() const;
};
GenerationPlan plan_generation(const ModelConfig& model, DType dtype, QuantFormat quant, uint64_t budget, int64_t batch,
                               int64_t max_len, int64_t prefill_tokens, const PlanHardware& hw);

// The fastest plan that fits the budget. InvalidArgument when none does, saying what is short
// and what would fit (a larger budget, a smaller rank or sequence, fewer trained layers, LoRA
// instead of full training, more host RAM).
Plan plan_training(const PlanRequest& req, const PlanHardware& hw);

}  // namespace onn
