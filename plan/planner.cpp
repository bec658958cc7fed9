// The planner's memory and time model (docs/design.md § Planner).
#include "plan/planner.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <sstream>

#include "kernels/defaults.h"
#include "model/llama.h"
#include "plan/flops.h"
#include "runtime/allocator.h"
#include "runtime/error.h"

namespace onn {

namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr double kGemmEfficiency = 0.6;  // of the GEMM rate, for a whole layer (attention, norms, launches)

// A budget that fits `bytes`, as the user would write it: "2.64 GiB (--vram-budget 2701MiB)".
std::string budget_hint(double bytes) {
  const uint64_t mib = static_cast<uint64_t>(std::ceil(bytes / double(kMiB)));
  std::ostringstream o;
  o.setf(std::ios::fixed);
  o.precision(2);
  o << double(mib) / 1024.0 << " GiB (--vram-budget " << mib << "MiB)";
  return o.str();
}

std::string gib(double bytes) {
  std::ostringstream o;
  o.setf(std::ios::fixed);
  o.precision(2);
  o << bytes / double(uint64_t{1} << 30) << " GiB";
  return o.str();
}

// The shape of the model as the planner needs it, in elements. A layer's bytes are
// model/llama.h's layer_bytes (the model's own list of a layer's tensors, each in its format), so
// an architecture's tensors are counted as loaded.
struct ModelDims {
  double C, F, HD, KD, V, L;
  double head_params;       // the LM head (the embedding's rows when tied)
  explicit ModelDims(const ModelConfig& c)
      : C(double(c.hidden_size)), F(double(c.intermediate_size)),
        HD(double(c.num_attention_heads * c.head_dim)), KD(double(c.num_key_value_heads * c.head_dim)),
        V(double(c.vocab_size)), L(double(c.num_hidden_layers)), head_params(V * C) {}
};

// The elements of each LoRA tensor of one adapted layer: A (R, in) and B (out, R) of every
// adapted module (a fused module has one A and one B), as model/lora.h makes them.
std::vector<double> lora_layer_tensors(const ModelConfig& c, const LoraSpec& s) {
  std::vector<double> t;
  for (const auto& [a, b] : lora_layer_shapes(c, s)) t.insert(t.end(), {double(a.numel()), double(b.numel())});
  return t;
}

double lora_layers(const ModelConfig& c, const LoraSpec& s) {
  return s.layers.empty() ? double(c.num_hidden_layers) : double(s.layers.size());
}

// Trained LoRA parameters (A and B of every adapted module).
double lora_parameters(const ModelConfig& c, const LoraSpec& s) {
  double per_layer = 0;
  for (double n : lora_layer_tensors(c, s)) per_layer += n;
  return per_layer * lora_layers(c, s);
}

// Device bytes of `bytes` as the caching allocator hands them out (its size classes): a tensor
// just over a 2 MiB multiple (one layer input of a short micro-batch) loses a large share to
// the rounding.
double held(double bytes) { return double(CachingAllocator::round_size(static_cast<size_t>(std::ceil(bytes)))); }

struct Candidate {
  Plan plan;
  bool fits = false;
  uint64_t short_by = 0;
};

// The training run's memory and time model for one request: the terms every candidate shares,
// and each candidate (placement, micro-batch, layers per chunk, activation offload, lanes per
// weight load) evaluated against them.
class TrainingModel {
 public:
  TrainingModel(const PlanRequest& req, const PlanHardware& hw);
  uint64_t budget() const { return budget_; }
  int64_t lowest() const { return lowest_; }
  Candidate evaluate(bool streamed, int64_t micro, int64_t k, bool offload, int64_t per_load) const;

 private:
  void memory(Plan& p, int64_t k, double lanes) const;
  void time(Plan& p, int64_t k, double lanes) const;
  // One layer's input, (N, C), as held; and the layer inputs kept for the backward.
  double boundary(const Plan& p) const { return held(double(p.micro_batch * p.seq_len) * m_.C * s_); }
  double kept_layers(const Plan& p) const { return p.recompute ? trained_layers_ + 1 : m_.L + 1; }

  const PlanRequest& req_;
  const PlanHardware& hw_;
  const ModelConfig& c_;
  ModelDims m_;
  double s_, layer_bytes_, head_bytes_, all_weights_, trained_layers_, state_, scratch_;
  int64_t L_, lowest_;
  uint64_t budget_;
};

TrainingModel::TrainingModel(const PlanRequest& req, const PlanHardware& hw)
    : req_(req), hw_(hw), c_(req.model), m_(req.model) {
  ONN_CHECK_ARG(!(req.full && req.quant != QuantFormat::none), "full training needs a dense base; this ",
                quant_format_name(req.quant), " base trains LoRA adapters (QLoRA)");
  s_ = double(dtype_size(req.dtype));
  layer_bytes_ = double(layer_bytes(c_, req.dtype, req.quant));
  // A quantized base dequantizes one projection at a time into the pass's scratch, in the
  // compute dtype (model/block: shared by the forward, the backward and every lane).
  scratch_ = req.quant != QuantFormat::none ? held(double(largest_projection(c_)) * s_) : 0.0;
  head_bytes_ = m_.head_params * s_;
  const double embed_bytes = c_.tie_word_embeddings ? 0.0 : m_.V * m_.C * s_;
  all_weights_ = m_.L * layer_bytes_ + head_bytes_ + embed_bytes + m_.C * s_;
  L_ = c_.num_hidden_layers;
  lowest_ = req.full || req.lora.layers.empty() ? 0 : req.lora.layers.front();
  trained_layers_ = double(L_ - lowest_);
  // Trained parameters: value, gradient and two AdamW moments in F32, plus the compute copy
  // (LoRA: each of the five kinds packed into one allocation, Tensor::empty_packed, each
  // tensor at a 256-byte boundary).
  const double trained = req.full ? all_weights_ / s_ : lora_parameters(c_, req.lora);
  state_ = trained * 16.0;
  if (!req.full) {
    const auto packed = [&](double elem_bytes) {
      double b = 0;
      for (double n : lora_layer_tensors(c_, req.lora)) b += std::ceil(n * elem_bytes / 256) * 256;
      return held(b * lora_layers(c_, req.lora));
    };
    state_ = 4 * packed(4) + (s_ != 4 ? packed(s_) : 0.0);
  }
  budget_ = req.budget > 0 ? req.budget : default_budget(hw.device_free);
  ONN_CHECK_ARG(budget_ > 0, "no device memory to plan with (free: ", hw.device_free, " bytes)");
}

// per_load micro-batches (lanes) take turns on every weight load, so the weights cross
// grad_accum / per_load times per step, and every lane's layer-boundary activations live at
// once.
Candidate TrainingModel::evaluate(bool streamed, int64_t micro, int64_t k, bool offload, int64_t per_load) const {
  Candidate cand;
  Plan& p = cand.plan;
  p.streamed = streamed;
  p.quant = req_.quant;
  p.layers = L_;
  p.layers_per_chunk = streamed ? k : L_;
  p.chunks = streamed ? (L_ + k - 1) / k : 1;
  p.lowest_trained_layer = lowest_;
  p.micro_batch = micro;
  p.grad_accum = req_.batch_rows / micro;
  p.micro_batches_per_load = per_load;
  p.seq_len = req_.seq_len;
  p.activations_on_host = offload;
  p.recompute = streamed || offload;
  p.lm_head_chunk_tokens = std::min(micro * req_.seq_len, kLmHeadChunkTokens);
  p.budget = budget_;
  memory(p, k, double(per_load));
  cand.fits = p.peak <= budget_ && p.host_pinned <= hw_.host_available;
  cand.short_by = p.peak > budget_ ? p.peak - budget_ : 0;
  time(p, k, double(per_load));
  return cand;
}

void TrainingModel::memory(Plan& p, int64_t k, double lanes) const {
  const double N = double(p.micro_batch * p.seq_len), s = s_;
  // Streamed: the embedding stays on the host (rows gathered there); the LM head streams in
  // vocabulary slices of a chunk's size (the loss is an online log-sum-exp over vocabulary
  // chunks), so two buffers of k layers are all the weights the device holds.
  p.resident_weights = static_cast<uint64_t>(p.streamed ? m_.C * s : all_weights_);
  p.chunk_buffers = static_cast<uint64_t>(p.streamed ? 2.0 * double(k) * layer_bytes_ : 0.0);
  p.trainable_state = static_cast<uint64_t>(state_);
  const double boundary = this->boundary(p), kept = kept_layers(p);
  // Without recomputation every layer keeps its internals (about 2C + 2HD + 2KD + 3F per token).
  const double internals =
      2 * held(N * m_.C * s) + 2 * held(N * m_.HD * s) + 2 * held(N * m_.KD * s) + 3 * held(N * m_.F * s);
  // Offloaded, a lane holds its layer input and the next (being produced, or brought back
  // ahead of the backward): two rows per lane in flight.
  p.activations = static_cast<uint64_t>(p.activations_on_host ? 2.0 * lanes * boundary
                                                              : lanes * kept * boundary +
                                                                    (p.recompute ? 0.0 : m_.L * internals));
  // One layer rebuilt and differentiated: its internals twice (values, gradients), the
  // attention statistics, five (N, C) rows (the residual stream's gradient and the norm's,
  // the recomputed output, the attention projection, the layer's input); the LM head's F32
  // logits chunk. (Two rows, as before, left the Phi-4 shape with 16 rows per load 0.14 GB
  // over its prediction on the H100.) The streamed (sliced) head's logits are one (token
  // chunk, granule) buffer and four F32 values per token; the resident head's are (token
  // chunk, V) in F32.
  const double chunk = double(p.lm_head_chunk_tokens);
  const double head = p.streamed ? held(chunk * std::min(m_.V, double(kLmHeadGranule)) * s) + 4 * held(N * 4.0)
                                 : held(chunk * m_.V * 4.0);
  // Each further lane keeps its residual stream's gradient row through the layers' backward
  // (its inputs are counted with the activations) and the head's four F32 values per token.
  p.workspace = static_cast<uint64_t>(scratch_ + 2.0 * internals + held(N * double(c_.num_attention_heads) * 4.0) +
                                      5.0 * boundary + head + (lanes - 1) * (boundary + 4 * held(N * 4.0)));
  p.margin = 128 * kMiB + budget_ / 50;
  p.peak = p.resident_weights + p.chunk_buffers + p.trainable_state + p.activations + p.workspace + p.margin;
  // Offloading, the top layer inputs stay on the device in a third of what the budget has
  // left (the backward needs them first): fewer activation copies on the link the weights
  // use. The rest is slack for the allocator's fragmentation and the model's error.
  int64_t on_device = 0;
  if (p.activations_on_host && p.peak < budget_) {
    on_device = std::min(static_cast<int64_t>(kept) - 1,
                         static_cast<int64_t>(double(budget_ - p.peak) / 3.0 / (lanes * boundary)));
    on_device = std::max<int64_t>(on_device, 0);
    p.activations += static_cast<uint64_t>(double(on_device) * lanes * boundary);
    p.peak += static_cast<uint64_t>(double(on_device) * lanes * boundary);
  }
  p.activation_layers_on_device = on_device;
  p.host_pinned = static_cast<uint64_t>((p.streamed ? all_weights_ : 0.0) +
                                        (p.activations_on_host ? lanes * kept * boundary : 0.0));
}

// Time of one pass (a micro-batch, or the group sharing a load): compute and copies overlap.
// The step's first chunk copy is not overlapped; later passes queue behind the one before, so
// theirs is.
void TrainingModel::time(Plan& p, int64_t k, double lanes) const {
  const double N = double(p.micro_batch * p.seq_len), context = (double(req_.seq_len) + 1) / 2;
  const double flops = N * training_flops_per_token(c_, context, req_.full, lowest_) +
                       (p.recompute ? N * trained_layers_ / m_.L *
                                          (forward_flops_per_token(c_, context) - 2 * m_.head_params)
                                    : 0.0);
  const double compute_s = lanes * flops / (hw_.gemm_tflops * 1e12 * kGemmEfficiency);
  double bytes = 0, offload_bytes = 0;
  if (p.streamed) bytes = m_.L * layer_bytes_ + head_bytes_ + trained_layers_ * layer_bytes_ + head_bytes_;
  if (p.activations_on_host)  // out forward, back backward
    offload_bytes = lanes * (kept_layers(p) - double(p.activation_layers_on_device)) * boundary(p);
  p.weight_bytes_per_load = bytes;
  const double transfer_s = (bytes + offload_bytes) / (hw_.h2d_gbs * 1e9) +
                            (p.activations_on_host ? offload_bytes / (hw_.d2h_gbs * 1e9) : 0.0);
  const double fill_s = p.streamed ? double(k) * layer_bytes_ / (hw_.h2d_gbs * 1e9) : 0.0;
  const double passes = double(p.grad_accum) / lanes;
  p.compute_ms = compute_s * 1e3 * passes;
  p.transfer_ms = transfer_s * 1e3 * passes;
  p.step_ms = (std::max(compute_s, transfer_s) * passes + fill_s) * 1e3;
  p.tokens_per_s = double(req_.batch_rows * req_.seq_len) / (p.step_ms / 1e3);
}

// Weight bytes across PCIe per step.
double step_bytes(const Plan& p) { return p.weight_bytes_per_load * double(p.grad_accum / p.micro_batches_per_load); }

// Among plans as fast as each other (within 0.1%): fewer weight bytes across PCIe per step
// (streamed: the larger micro-batch, each of which copies the weights), then activations on
// the device before offloaded ones, then the larger micro-batch, then the lower peak. Copies
// are where the time model is least sure: on the H100 every offloaded Phi-4 run stayed further
// from max(compute, transfer) (1.10-2.2) than the same shape with activations on the device
// (1.02).
bool better_than(const Plan& c, const Plan& b) {
  if (c.step_ms < b.step_ms * 0.999) return true;
  if (c.step_ms > b.step_ms * 1.001) return false;
  if (step_bytes(c) < step_bytes(b) * 0.999) return true;
  if (step_bytes(c) > step_bytes(b) * 1.001) return false;
  return c.activations_on_host != b.activations_on_host ? !c.activations_on_host
         : c.micro_batch != b.micro_batch                ? c.micro_batch > b.micro_batch
                                                         : c.peak < b.peak;
}

// The search: every micro-batch the request allows, resident and (LoRA) streamed with every
// chunking, activation placement and lanes per load. best: the fastest that fits; closest: the
// one short of the budget by the least.
void search(const PlanRequest& req, const TrainingModel& model, std::optional<Candidate>& best, Candidate& closest) {
  std::vector<int64_t> micros;
  for (int64_t d = 1; d <= req.batch_rows; ++d)
    if (req.batch_rows % d == 0 && (req.micro_batch == 0 || d == req.micro_batch)) micros.push_back(d);
  ONN_CHECK_ARG(!micros.empty(), "--micro-batch ", req.micro_batch, " does not divide the batch of ", req.batch_rows,
                " rows");
  closest.short_by = UINT64_MAX;
  const auto consider = [&](const Candidate& cand) {
    if (cand.fits) {
      if (!best || better_than(cand.plan, best->plan)) best = cand;
    } else if (cand.short_by < closest.short_by) {
      closest = cand;
    }
  };
  const int64_t L = req.model.num_hidden_layers;
  for (int64_t micro : micros) {
    // Activation offload is part of the streamed pass only: a resident run keeps its
    // activations on the device.
    if (req.placement != Placement::streamed) consider(model.evaluate(false, micro, L, false, 1));
    // Full training keeps its weights resident (their gradients and state are on the device).
    if (req.full || req.placement == Placement::resident) continue;
    // Micro-batches per load: a divisor of the step's; --share-loads on takes all of them, off one.
    const int64_t accum = req.batch_rows / micro;
    for (int64_t per_load = 1; per_load <= accum; ++per_load) {
      if (accum % per_load != 0) continue;
      if (req.sharing == Sharing::off && per_load > 1) continue;
      if (req.sharing == Sharing::on && per_load != accum) continue;
      for (bool offload : {false, true})
        for (int64_t k = 1; k <= std::max<int64_t>(1, L / 2); ++k)
          consider(model.evaluate(true, micro, k, offload, per_load));
    }
  }
}

// Why nothing fits, and what would: the closest plan's shortfall in device or host memory.
InvalidArgument refusal(const PlanRequest& req, const PlanHardware& hw, uint64_t budget, const Plan& p) {
  std::ostringstream why;
  why << "no plan fits a " << gib(double(budget)) << " device budget: the closest (" << (p.streamed ? "streamed, " : "resident, ")
      << p.layers_per_chunk << " layer(s) per chunk, micro-batch " << p.micro_batch << ") needs " << gib(double(p.peak))
      << " (weights " << gib(double(p.resident_weights + p.chunk_buffers)) << ", trained state "
      << gib(double(p.trainable_state)) << ", activations and workspace " << gib(double(p.activations + p.workspace))
      << ")";
  if (p.host_pinned > hw.host_available)
    why << " and " << gib(double(p.host_pinned)) << " of host RAM (" << gib(double(hw.host_available)) << " available)";
  if (p.peak > budget) why << "; it would fit with a budget of " << budget_hint(double(p.peak) * 1.02);
  if (req.full) why << ", or with LoRA instead of full training";
  else if (p.trainable_state > budget / 4) why << ", or with a smaller --lora-rank or fewer --train-layers";
  else if (p.workspace > budget / 4) why << ", or with a shorter --seq-len";
  return InvalidArgument(why.str());
}

void add_notes(Plan& p, const PlanHardware& hw, int64_t lowest) {
  if (!hw.measured)
    p.notes.push_back("bandwidth and GEMM rate are assumptions (" + std::to_string(hw.h2d_gbs).substr(0, 4) +
                      " GB/s, " + std::to_string(hw.gemm_tflops).substr(0, 5) + " TFLOP/s), not measured");
  if (p.streamed && p.transfer_ms > p.compute_ms)
    p.notes.push_back("copy-bound: the weights cross PCIe " +
                      std::string(lowest > 0 ? "once forward and from the lowest trained layer up backward"
                                             : "twice (forward and backward)") +
                      (p.micro_batches_per_load == p.grad_accum
                           ? std::string(" per step")
                       : p.micro_batches_per_load > 1
                           ? " per group of " + std::to_string(p.micro_batches_per_load) + " micro-batches"
                           : std::string(" per micro-batch")) +
                      "; a larger batch per step (--batch-rows) or fewer trained layers amortise it");
}

}  // namespace

uint64_t default_budget(uint64_t device_free) {
  return device_free > kDeviceMemoryMargin ? device_free - kDeviceMemoryMargin : 0;
}

PlanHardware plan_hardware(const HardwareProfile& p, int cuda_index) {
  PlanHardware h;
  h.host_available = p.ram_available;
  if (cuda_index < 0 || cuda_index >= static_cast<int>(p.devices.size())) {
    h.name = "cpu";
    h.h2d_gbs = h.d2h_gbs = p.host_memcpy_gbs > 0 ? p.host_memcpy_gbs / 2 : 5.0;
    h.gemm_tflops = 0.2;
    h.device_free = p.ram_available;
    h.measured = p.host_memcpy_gbs > 0;
    return h;
  }
  const CudaDeviceProfile& d = p.devices[static_cast<size_t>(cuda_index)];
  h.name = d.name;
  h.device_free = d.vram_free;
  h.measured = d.measured;
  h.h2d_gbs = d.measured ? d.h2d_pinned_gbs : 20.0;
  h.d2h_gbs = d.measured ? d.d2h_pinned_gbs : 20.0;
  h.gemm_tflops = d.measured ? d.bf16_gemm_tflops : 100.0;
  return h;
}

PlanHardware plan_hardware_for(Device device, uint64_t budget, uint64_t host_ram) {
  PlanHardware hw;
  if (device.is_cuda() && device.index >= cuda_device_count()) {
    ONN_CHECK_ARG(budget > 0, "no CUDA device here to plan for: give --vram-budget");
    HardwareProfile none;
    none.ram_available = profile_hardware({.measure = false}).ram_available;
    none.devices.push_back({});
    none.devices.back().name = "an absent CUDA device";
    hw = plan_hardware(none, 0);
  } else {
    ProfileOptions o;
    o.reps = 3;
    o.gemm_n = 4096;
    hw = plan_hardware(profile_hardware(o), device.is_cuda() ? device.index : -1);
  }
  if (host_ram > 0) hw.host_available = host_ram;
  return hw;
}

Plan plan_training(const PlanRequest& req, const PlanHardware& hw) {
  ONN_CHECK_ARG(req.seq_len >= 2, "the sequence length must be at least 2");
  ONN_CHECK_ARG(req.batch_rows >= 1, "the batch must hold at least one row");
  if (!req.full) check_lora_spec(req.model, req.lora);
  const TrainingModel model(req, hw);
  ONN_CHECK_ARG(!(req.full && req.placement == Placement::streamed),
                "full training keeps its weights, gradients and optimizer state on the device: it cannot stream");
  std::optional<Candidate> best;
  Candidate closest;
  search(req, model, best, closest);
  if (!best) throw refusal(req, hw, model.budget(), closest.plan);
  Plan p = best->plan;
  add_notes(p, hw, model.lowest());
  return p;
}

nlohmann::ordered_json Plan::to_json() const {
  return {{"base", quant_format_name(quant)},
          {"streamed", streamed},
          {"layers", layers},
          {"layers_per_chunk", layers_per_chunk},
          {"chunks", chunks},
          {"lowest_trained_layer", lowest_trained_layer},
          {"micro_batch", micro_batch},
          {"grad_accum", grad_accum},
          {"seq_len", seq_len},
          {"activations", activations_on_host ? "host" : "device"},
          {"activation_layers_on_device", activation_layers_on_device},
          {"recompute", recompute},
          {"lm_head_chunk_tokens", lm_head_chunk_tokens},
          {"budget_bytes", budget},
          {"predicted_peak_bytes", peak},
          {"memory_bytes",
           {{"resident_weights", resident_weights},
            {"chunk_buffers", chunk_buffers},
            {"trainable_state", trainable_state},
            {"activations", activations},
            {"workspace", workspace},
            {"margin", margin}}},
          {"host_pinned_bytes", host_pinned},
          {"predicted_step_ms", step_ms},
          {"predicted_compute_ms", compute_ms},
          {"predicted_transfer_ms", transfer_ms},
          {"predicted_tokens_per_s", tokens_per_s},
          {"micro_batches_per_load", micro_batches_per_load},
          {"weight_bytes_per_load", weight_bytes_per_load},
          {"weight_bytes_per_step", step_bytes(*this)},
          {"notes", notes}};
}

std::string Plan::to_text() const {
  std::ostringstream o;
  o.setf(std::ios::fixed);
  o.precision(1);
  if (quant != QuantFormat::none)
    o << "base: " << quant_format_name(quant) << " (frozen; each projection dequantized just before its GEMM)\n";
  if (streamed)
    o << "streamed: " << chunks << " chunks of " << layers_per_chunk << " layer(s) through two device buffers, "
      << gib(step_bytes(*this)) << " of weights across PCIe per step\n";
  else
    o << "resident: every weight on the device\n";
  o << "batch: " << micro_batch << " x " << seq_len << " tokens per micro-batch, " << grad_accum << " micro-batch(es) per step"
    << (streamed && micro_batches_per_load > 1
            ? micro_batches_per_load == grad_accum
                  ? std::string(", which share each weight load (the weights cross PCIe once per step)")
                  : ", " + std::to_string(micro_batches_per_load) + " sharing each weight load (the weights cross PCIe " +
                        std::to_string(grad_accum / micro_batches_per_load) + " times per step)"
            : std::string())
    << "; activations on the " << (activations_on_host ? "host" : "device")
    << (activations_on_host && activation_layers_on_device > 0
            ? activation_layers_on_device == 1
                  ? std::string(" (the top layer's input on the device)")
                  : " (the top " + std::to_string(activation_layers_on_device) + " layer inputs on the device)"
            : std::string())
    << (recompute ? ", recomputed per layer" : "") << "; backward from layer " << lowest_trained_layer << "\n";
  o << "device memory: " << gib(double(peak)) << " predicted of " << gib(double(budget)) << " (weights "
    << gib(double(resident_weights + chunk_buffers)) << ", trained state " << gib(double(trainable_state))
    << ", activations " << gib(double(activations)) << ", workspace " << gib(double(workspace)) << ", margin "
    << gib(double(margin)) << ")\n";
  if (host_pinned > 0) o << "host pinned memory: " << gib(double(host_pinned)) << "\n";
  o << "step: " << step_ms << " ms predicted (compute " << compute_ms << " ms, transfer " << transfer_ms << " ms), "
    << tokens_per_s << " tokens/s\n";
  for (const std::string& n : notes) o << "note: " << n << "\n";
  return o.str();
}

GenerationPlan plan_generation(const ModelConfig& c, DType dtype, QuantFormat quant, uint64_t budget, int64_t batch,
                               int64_t max_len, int64_t prefill_tokens, const PlanHardware& hw) {
  ONN_CHECK_ARG(batch >= 1 && max_len >= 1 && prefill_tokens >= 1, "generation plan: batch, length and prompt must "
                "be positive");
  const ModelDims m(c);
  const double s = double(dtype_size(dtype));
  const double layer_bytes = double(onn::layer_bytes(c, dtype, quant)), head_bytes = m.head_params * s;
  const double scratch = quant != QuantFormat::none ? held(double(largest_projection(c)) * s) : 0.0;
  const double embed_bytes = c.tie_word_embeddings ? 0.0 : m.V * m.C * s;
  const double all_weights = m.L * layer_bytes + head_bytes + embed_bytes + m.C * s;
  GenerationPlan p;
  p.budget = budget > 0 ? budget : default_budget(hw.device_free);
  ONN_CHECK_ARG(p.budget > 0, "no device memory to plan with");
  p.layers = c.num_hidden_layers;
  p.batch = batch;
  p.max_len = max_len;
  p.kv_cache = static_cast<uint64_t>(2.0 * m.L * double(batch * max_len) * m.KD * s);
  // The prefill's activations for its tokens (a layer's internals) and one row of logits each.
  const double n = double(prefill_tokens);
  p.workspace = static_cast<uint64_t>(scratch + n * (3 * m.C + 2 * m.HD + 2 * m.KD + 2 * m.F) * s +
                                      double(batch) * m.V * 4.0 + n * double(c.num_attention_heads) * 4.0);
  p.quant = quant;
  p.margin = 128 * kMiB + p.budget / 50;
  p.weights = static_cast<uint64_t>(all_weights);
  p.peak = p.weights + p.kv_cache + p.workspace + p.margin;
  if (p.peak <= p.budget) {
    p.layers_per_chunk = p.layers;
    p.chunks = 1;
    p.notes.push_back("resident: decoding is bound by device memory bandwidth, not PCIe");
    return p;
  }
  p.streamed = true;
  p.host_pinned = static_cast<uint64_t>(all_weights);
  for (int64_t k = std::max<int64_t>(1, p.layers / 2); k >= 1; --k) {
    const double buffers = 2.0 * double(k) * layer_bytes;
    const uint64_t peak = static_cast<uint64_t>(buffers + m.C * s) + p.kv_cache + p.workspace + p.margin;
    if (peak <= p.budget || k == 1) {
      p.layers_per_chunk = k;
      p.chunks = (p.layers + k - 1) / k;
      p.weights = static_cast<uint64_t>(m.C * s);
      p.chunk_buffers = static_cast<uint64_t>(buffers);
      p.peak = peak;
      if (peak <= p.budget) break;
    }
  }
  if (p.peak > p.budget) {
    std::ostringstream why;
    why << "no generation plan fits a " << gib(double(p.budget)) << " device budget: streamed one layer at a time it "
        << "needs " << gib(double(p.peak)) << " (two layer buffers " << gib(double(p.chunk_buffers)) << ", KV cache "
        << gib(double(p.kv_cache)) << ", workspace " << gib(double(p.workspace)) << "); it would fit with a budget of "
        << budget_hint(double(p.peak) * 1.02) << ", or with a shorter --max-new-tokens / prompt";
    throw InvalidArgument(why.str());
  }
  ONN_CHECK_ARG(double(p.host_pinned) <= double(hw.host_available),
                "streamed generation keeps the weights in host memory: ", gib(double(p.host_pinned)), " needed, ",
                gib(double(hw.host_available)), " available");
  p.weight_bytes_per_forward = m.L * layer_bytes + head_bytes;
  p.decode_ms_per_token = p.weight_bytes_per_forward / (hw.h2d_gbs * 1e9) * 1e3;
  p.notes.push_back("streamed: every decode step copies the weights across PCIe once (" +
                    gib(p.weight_bytes_per_forward) + "), so batch-1 decoding is PCIe-bound; a prompt is prefilled "
                    "with one weight load for all its tokens");
  if (!hw.measured) p.notes.push_back("the PCIe rate is an assumption (" + std::to_string(hw.h2d_gbs).substr(0, 4) +
                                      " GB/s), not measured");
  return p;
}

nlohmann::ordered_json GenerationPlan::to_json() const {
  return {{"base", quant_format_name(quant)},
          {"streamed", streamed},
          {"layers", layers},
          {"layers_per_chunk", layers_per_chunk},
          {"chunks", chunks},
          {"batch", batch},
          {"max_len", max_len},
          {"budget_bytes", budget},
          {"predicted_peak_bytes", peak},
          {"memory_bytes", {{"resident_weights", weights}, {"chunk_buffers", chunk_buffers}, {"kv_cache", kv_cache},
                            {"workspace", workspace}, {"margin", margin}}},
          {"host_pinned_bytes", host_pinned},
          {"weight_bytes_per_forward", weight_bytes_per_forward},
          {"predicted_decode_ms_per_token", streamed ? nlohmann::ordered_json(decode_ms_per_token) : nlohmann::ordered_json(nullptr)},
          {"notes", notes}};
}

std::string GenerationPlan::to_text() const {
  std::ostringstream o;
  if (quant != QuantFormat::none) o << "base: " << quant_format_name(quant) << "\n";
  o << (streamed ? "streamed: " + std::to_string(layers_per_chunk) + " layer(s) per chunk, " + std::to_string(chunks) +
                       " chunks through two device buffers"
                 : std::string("resident: every weight on the device"))
    << "\n";
  o << "device memory: " << gib(double(peak)) << " predicted of a " << gib(double(budget)) << " budget (weights "
    << gib(double(weights + chunk_buffers)) << ", KV cache " << gib(double(kv_cache)) << " for " << batch << " x "
    << max_len << " tokens, workspace " << gib(double(workspace)) << ")\n";
  if (streamed)
    o << "host memory: " << gib(double(host_pinned)) << " pinned; decode: " << decode_ms_per_token
      << " ms per token predicted (PCIe)\n";
  for (const std::string& n : notes) o << "note: " << n << "\n";
  return o.str();
}

}  // namespace onn
