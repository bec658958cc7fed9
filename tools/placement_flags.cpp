// The placement flags (tools/placement_flags.h).
#include "tools/placement_flags.h"

#include "kernels/defaults.h"
#include "runtime/error.h"
#include "runtime/parallel.h"

namespace onn::tools {

namespace {

Placement placement_named(const std::string& v) {
  return v == "on" ? Placement::streamed : v == "off" ? Placement::resident : Placement::auto_;
}

Sharing sharing_named(const std::string& v) { return v == "on" ? Sharing::on : v == "off" ? Sharing::off : Sharing::auto_; }

}  // namespace

void add_placement_flags(CLI::App& app, PlacementFlags& f, const PlacementFlagUse& use) {
  const CLI::IsMember auto_on_off({"auto", "on", "off"});
  app.add_option("--vram-budget", f.vram_budget, "device memory " + use.what + " may use, e.g. 4GiB (default: the "
                 "free memory less " + std::to_string(kDeviceMemoryMargin >> 20) + " MiB); the device allocator "
                 "enforces it")
      ->transform(CLI::AsSizeValue(false));
  app.add_option_function<std::string>(
         "--stream", [&f](const std::string& v) { f.stream = placement_named(v); },
         std::string("keep the ") + (use.training ? "frozen (LoRA) " : "") + "weights in host memory and stream them "
         "to the device a chunk of layers at a time: auto (on CUDA the planner decides from the budget), on (also on "
         "the CPU: the same schedule), off (default auto)")
      ->check(auto_on_off);
  app.add_option("--layers-per-chunk", f.layers_per_chunk, "layers per streamed chunk (default: the plan's, or 1)")
      ->check(CLI::PositiveNumber);
  app.add_option_function<int>(
         "--threads", [](int n) { set_cpu_threads(n); },
         "CPU threads for the CPU backend's kernels, GEMMs included (one pool; OpenBLAS runs single-threaded "
         "inside it); results do not depend on it (default: the cores available)")
      ->check(CLI::Range(1, 1024));
  app.add_option_function<std::string>(
         "--cpu-matmul", [&f](const std::string& v) { f.cpu_matmul = v == "bf16" ? CpuMatmul::bf16 : CpuMatmul::f32; },
         "the CPU backend's products: f32 (OpenBLAS, the reference) or bf16 (inputs rounded to bf16, f32 "
         "accumulation and results, as transformers' bf16 autocast; oneDNN, on CPUs with AVX-512 BF16 or AMX, where its "
         "GEMMs ran at 3-4x the f32 rate on an AMX Xeon; with --quantize bf16 the stored weights are used as they are, "
         "and --full keeps bf16 copies of the projection weights and LM head beside the f32 masters; products of one "
         "row or under 2M multiply-adds stay f32) (default f32)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  app.add_option_function<std::string>(
         "--quantize", [&f](const std::string& v) { f.quantize = *parse_quant_format(v); },
         std::string("quantize the projection weights while loading, tensor by tensor: nf4 (QLoRA's 4-bit "
                     "NormalFloat, bitsandbytes' layout), int8 or fp8 (E4M3), per output channel, or bf16 (the CPU "
                     "backend: kept in bf16 and widened to f32 per product, or multiplied as stored with --cpu-matmul "
                     "bf16; exact for a bf16 folder, half the memory of f32); the base is frozen") + (use.training ? " (LoRA only)" : "") +
             ". A bitsandbytes 4-bit folder is read as it is, without this flag (default: none)")
      ->check(CLI::IsMember({"none", "nf4", "int8", "fp8", "bf16"}));
  if (!use.training) return;
  app.add_option_function<std::string>(
         "--share-loads", [&f](const std::string& v) { f.share_loads = sharing_named(v); },
         "streamed: the step's micro-batches take turns on every chunk of weights copied to the device, so the "
         "weights cross PCIe once per step instead of once per micro-batch (same results): auto (the planner's "
         "choice, which may group fewer micro-batches per load where all of them do not fit), on, off (default auto)")
      ->check(auto_on_off);
}

void add_plan_flags(CLI::App& app, bool& plan, PlacementFlags& f, const std::string& plan_help) {
  app.add_flag("--plan", plan, plan_help);
  app.add_option("--host-ram", f.host_ram, "with --plan: host memory the plan may use, e.g. 64GiB (default: what "
                 "this machine has available)")
      ->transform(CLI::AsSizeValue(false));
}

void check_host_ram(const PlacementFlags& f, bool plan) {
  if (f.host_ram > 0 && !plan) throw InvalidArgument("--host-ram is for --plan");
}

}  // namespace onn::tools
