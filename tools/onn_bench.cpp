// onn-bench: end-to-end figures. `onn-bench train` times onn-train's own loop (the trainer
// library, not a copy) on a model shape (an onn-init preset written to a temporary folder, or
// --model DIR) with synthetic text: ms/step, tokens/s, peak memory, MFU, energy on CUDA.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>
#include <random>

#include "kernels/matmul.h"
#include "model/init.h"
#include "model/lora.h"
#include "runtime/context.h"
#include "runtime/cuda_backend.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "tools/cli.h"
#include "train/flops.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

namespace {

// A folder removed when the process ends.
struct TempFolder {
  fs::path path;
  TempFolder() {
    path = fs::temp_directory_path() / ("onn-bench-" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempFolder() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// Datasheet dense BF16 tensor-core peaks (TFLOP/s) of the GPUs MFU is usually quoted on.
double nominal_bf16_tflops(const std::string& name) {
  const struct {
    const char* key;
    double tflops;
  } table[] = {{"H100 PCIe", 756.0}, {"H100 NVL", 835.0}, {"H100", 989.4}, {"H200", 989.4}, {"GH200", 989.4},
               {"A100", 312.0}};
  for (const auto& t : table)
    if (name.find(t.key) != std::string::npos) return t.tflops;
  return 0.0;
}

// The CPU backend's measured F32 GEMM rate (1024^3 through ONN's matmul), TFLOP/s.
double measured_cpu_tflops() {
  onn::Context ctx(onn::Device::cpu());
  const int64_t n = 1024;
  onn::Tensor a = onn::Tensor::zeros(onn::Shape{n, n}, onn::DType::f32), b = onn::Tensor::zeros(onn::Shape{n, n}, onn::DType::f32),
              c = onn::Tensor::zeros(onn::Shape{n, n}, onn::DType::f32);
  std::vector<double> s;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    onn::matmul(ctx, a, b, c);
    s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(s.begin(), s.end());
  return 2.0 * n * n * n / s[2] / 1e12;
}

// Chrome trace event format: one complete ("X") event per span, microseconds, one thread per
// lane; timed steps one after another on one axis. Written atomically.
void write_chrome_trace(const std::string& path, const std::vector<nlohmann::ordered_json>& steps) {
  const char* lanes[] = {"compute", "copy", "act_out", "act_in", "host"};
  nlohmann::ordered_json events = nlohmann::ordered_json::array();
  for (int tid = 0; tid < 5; ++tid)
    events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", 1}, {"tid", tid + 1},
                      {"args", {{"name", lanes[tid]}}}});
  double offset_ms = 0;
  for (size_t s = 0; s < steps.size(); ++s) {
    double step_end = 0;
    for (const auto& span : steps[s]) {
      const std::string lane = span["lane"];
      const int tid = static_cast<int>(std::find(std::begin(lanes), std::end(lanes), lane) - std::begin(lanes)) + 1;
      const double start = span["start_ms"], end = span["end_ms"];
      step_end = std::max(step_end, end);
      const bool host = lane == "host";  // a host call: named by the call, not an index
      nlohmann::ordered_json args = {{"step", s},         {"lane", lane},         {"index", span["index"]},
                                     {"start_ms", start}, {"issued_ms", span["issued_ms"]}, {"buffer", span["slot"]}};
      if (host) {
        args["call"] = span["call"];
        args["bytes"] = span["bytes"];
      }
      events.push_back({{"name", host ? span["call"].get<std::string>()
                                      : lane + " " + std::to_string(span["index"].get<int64_t>())},
                        {"ph", "X"},
                        {"pid", 1},
                        {"tid", tid},
                        {"ts", (offset_ms + start) * 1000.0},
                        {"dur", (end - start) * 1000.0},
                        {"args", std::move(args)}});
    }
    offset_ms += step_end;
  }
  const std::string text = nlohmann::ordered_json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump() + "\n";
  onn::AtomicFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"onn-bench: end-to-end figures of ONN's training loop"};
  app.require_subcommand(1);
  CLI::App* train = app.add_subcommand("train", "time training steps of a model shape: ms/step, tokens/s, peak "
                                                "memory, MFU (and energy on CUDA)");
  std::string preset = "tiny", model_dir, device_flag, targets = "all-linear";
  onn::TrainConfig c;
  c.seq_len = 512;
  c.micro_batch = 4;
  c.lora.rank = 16;
  c.lora.alpha = 32;
  int64_t steps = 10, warmup = 3;
  bool json = false;
  auto* p = train->add_option("--preset", preset, "an onn-init preset, random weights (default tiny)");
  train->add_option("--model", model_dir, "a model folder instead of a preset")->excludes(p);
  train->add_option("--seq-len", c.seq_len, "tokens per row (default 512)")->check(CLI::Range(2, 1 << 20));
  auto* mb = train->add_option("--micro-batch", c.micro_batch, "rows per micro-batch (default 4)")->check(CLI::Range(1, 1 << 16));
  auto* ga = train->add_option("--grad-accum", c.grad_accum, "micro-batches per step (default 1)")->check(CLI::Range(1, 1 << 16));
  train->add_option("--batch-rows", c.batch_rows, "rows per step, split into micro-batches by the planner (instead of "
                                                  "--micro-batch and --grad-accum)")
      ->check(CLI::Range(1, 1 << 16))
      ->excludes(mb)
      ->excludes(ga);
  train->add_option("--steps", steps, "timed steps (default 10)")->check(CLI::Range(1, 1 << 20));
  train->add_option("--warmup", warmup, "untimed steps first (default 3)")->check(CLI::Range(0, 1 << 20));
  train->add_flag("--full", c.full, "full training instead of LoRA");
  train->add_option("--lora-rank", c.lora.rank, "LoRA rank (default 16)");
  train->add_option("--lora-targets", targets, "LoRA targets (default all-linear)");
  train->add_flag("--recompute", c.recompute, "recompute layer internals in the backward");
  train->add_option("--device", device_flag, "cpu or cuda[:N] (default: cuda when present)");
  train->add_flag("--json", json, "one JSON object instead of text");
  uint64_t vram_budget = 0;
  train->add_option("--vram-budget", vram_budget, "device memory the run may use, e.g. 4GiB (streaming when it does "
                                                  "not fit; default: the free memory less a margin)")
      ->transform(CLI::AsSizeValue(false));
  train->add_option("--stream", c.stream, "layer streaming: auto, on, off (default auto: the planner decides)")
      ->check(CLI::IsMember({"auto", "on", "off"}));
  train->add_option("--layers-per-chunk", c.layers_per_chunk, "layers per streamed chunk (default: the planner's)")
      ->check(CLI::PositiveNumber);
  train->add_option("--share-loads", c.share_loads, "streamed: the step's micro-batches share each weight load: auto "
                                                    "(the planner's groups), on (all of them), off (one per load) "
                                                    "(default auto)")
      ->check(CLI::IsMember({"auto", "on", "off"}));
  std::string train_layers;
  train->add_option("--train-layers", train_layers, "LoRA on these layers only, e.g. 36-39 (default all)");
  std::string trace_path;
  train->add_option("--trace", trace_path, "streamed runs: write the timed steps' timeline (weight copies, compute "
                                           "windows, activation copies) to FILE as a Chrome trace (Perfetto, "
                                           "chrome://tracing), and add where each step's time went to the figures");
  return onn::tools::run_cli(app, "onn-bench", argc, argv, [&] {
    const onn::Device device = onn::tools::device_from_flag(device_flag);
    if (!trace_path.empty() && c.stream == "off")
      throw onn::InvalidArgument("--trace needs a streamed run; --stream off has no timeline to write");
    TempFolder tmp;
    const std::string label = model_dir.empty() ? preset : model_dir;
    if (model_dir.empty()) {
      onn::InitOptions io;
      io.seed = 1;
      io.dtype = device.is_cuda() ? onn::DType::bf16 : onn::DType::f32;
      model_dir = (tmp.path / "model").string();
      onn::write_random_model(onn::find_preset(preset), model_dir, io);
    }
    const onn::ModelConfig mc = onn::load_model_config(model_dir);
    c.seq_len = std::min<int64_t>(c.seq_len, mc.max_position_embeddings);
    // Synthetic text: enough for every step (a window per row), at least one token per byte.
    const int64_t rows = c.batch_rows > 0 ? c.batch_rows : c.grad_accum * c.micro_batch;
    const int64_t tokens = (steps + warmup) * rows * c.seq_len;
    {
      std::ofstream f(tmp.path / "data.jsonl");
      std::mt19937 rng(7);
      const char* words[] = {"the", "model", "learns", "from", "data", "tokens", "stream", "across", "layers", "fast"};
      for (int64_t written = 0; written < 4 * tokens;) {
        std::string text;
        while (static_cast<int64_t>(text.size()) < 8 * c.seq_len) text += std::string(words[rng() % 10]) + " ";
        written += static_cast<int64_t>(text.size());
        f << nlohmann::json{{"text", text}}.dump() << "\n";
      }
    }
    c.model_dir = model_dir;
    c.data = (tmp.path / "data.jsonl").string();
    c.out_dir = (tmp.path / "run").string();
    c.device = device.str();
    c.steps = steps + warmup;
    c.lora.targets = onn::parse_lora_targets(targets);
    if (!train_layers.empty()) c.lora.layers = onn::parse_layer_ranges(train_layers, mc.num_hidden_layers);
    c.vram_budget = vram_budget;
    c.lr = 1e-5;
    c.write_outputs = false;
    c.trace = !trace_path.empty();
    std::vector<double> ms, tok_s, tokens_per_step, joules_per_token, transfer_ms, compute_ms, pcie_gbs, stream_bytes;
    std::vector<nlohmann::ordered_json> traces, trace_summaries;  // per timed step
    size_t peak = 0;
    nlohmann::ordered_json plan;
    int64_t params_total = 0, params_trained = 0;
    onn::AllocatorStats timed_from;
    onn::train(c, false, [&](const nlohmann::ordered_json& e) {
      if (e["type"] == "init") {
        params_total = e["parameters_total"];
        params_trained = e["parameters_trainable"];
        plan = e["plan"];
        c.micro_batch = plan["micro_batch"];  // the planner's split with --batch-rows
        c.grad_accum = plan["grad_accum"];
      }
      // The allocator's backend calls in the timed steps only (after setup and warm-up).
      if (device.is_cuda() && (e["type"] == "init" || (e["type"] == "step" && e["step"].get<int64_t>() == warmup)))
        timed_from = onn::cuda_caching_allocator(device.index).stats();
      if (e["type"] != "step" || e["step"].get<int64_t>() <= warmup) return;
      ms.push_back(e["ms"]);
      tok_s.push_back(e["tokens_per_s"]);
      tokens_per_step.push_back(e["tokens"].get<double>());
      peak = std::max(peak, e["mem_bytes"].get<size_t>());
      if (!e["j_per_token"].is_null()) joules_per_token.push_back(e["j_per_token"]);
      if (const auto& st = e["stream"]; !st.is_null()) {
        transfer_ms.push_back(st["transfer_ms"]);
        compute_ms.push_back(st["compute_ms"]);
        pcie_gbs.push_back(st["pcie_gbs"]);
        stream_bytes.push_back(st["bytes"].get<double>());
        if (st.contains("trace")) {
          traces.push_back(st["trace"]);
          trace_summaries.push_back(st["trace_summary"]);
        }
      }
    });
    size_t reserved_peak = 0, budget = 0;
    uint64_t backend_allocs = 0, backend_frees = 0;
    double backend_ms = 0;
    double pinned_h2d = 0, pinned_d2h = 0;
    onn::cuda::DuplexRate duplex;
    if (device.is_cuda()) {
      const onn::AllocatorStats st = onn::cuda_caching_allocator(device.index).stats();
      reserved_peak = st.peak_reserved;
      budget = st.budget;
      backend_allocs = st.backend_allocs;
      backend_frees = st.backend_frees;
      backend_ms = st.backend_ms;
      if (!transfer_ms.empty()) {  // the copy rates this machine's pinned memory reaches, for comparison
        pinned_h2d = onn::cuda::measure_copy_gbs(device.index, onn::cuda::CopyKind::host_to_device, true,
                                                 size_t{256} << 20, 5);
        pinned_d2h = onn::cuda::measure_copy_gbs(device.index, onn::cuda::CopyKind::device_to_host, true,
                                                 size_t{256} << 20, 5);
        duplex = onn::cuda::measure_duplex_gbs(device.index, size_t{256} << 20, 5);
      }
    }
    if (!trace_path.empty()) {
      if (traces.empty())
        throw onn::InvalidArgument("--trace: the run was not streamed (it was planned resident), so there is no "
                                   "timeline to write; add --stream on or a smaller --vram-budget");
      write_chrome_trace(trace_path, traces);
    }
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    const double tps = median(tok_s);
    const double flops = onn::training_flops_per_token(mc, (static_cast<double>(c.seq_len) + 1) / 2, c.full);
    double nominal = 0, measured = 0;
    std::string device_name = "cpu";
    if (device.is_cuda()) {
      device_name = onn::cuda::properties(device.index).name;
      nominal = nominal_bf16_tflops(device_name);
      measured = onn::cuda::measure_bf16_gemm_tflops(device.index, 8192, 10);
    } else {
      measured = measured_cpu_tflops();
    }
    const auto mfu = [&](double peak_tflops) {
      return peak_tflops > 0 ? nlohmann::ordered_json(tps * flops / (peak_tflops * 1e12)) : nlohmann::ordered_json(nullptr);
    };
    nlohmann::ordered_json r = {
        {"bench", "train"},
        {"model", label},
        {"architecture", mc.architecture},
        {"mode", c.full ? "full" : "lora"},
        {"lora_rank", c.full ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(c.lora.rank)},
        {"device", device_name},
        {"parameters_total", params_total},
        {"parameters_trained", params_trained},
        {"seq_len", c.seq_len},
        {"micro_batch", c.micro_batch},
        {"grad_accum", c.grad_accum},
        {"recompute", c.recompute},
        {"steps_timed", ms.size()},
        {"ms_per_step", median(ms)},
        {"tokens_per_step", median(tokens_per_step)},
        {"tokens_per_s", tps},
        {"model_flops_per_token", flops},
        {"peak_device_bytes", device.is_cuda() ? nlohmann::ordered_json(peak) : nlohmann::ordered_json(nullptr)},
        {"peak_rss_bytes", static_cast<int64_t>(ru.ru_maxrss) * 1024},
        {"nominal_peak_tflops", nominal > 0 ? nlohmann::ordered_json(nominal) : nlohmann::ordered_json(nullptr)},
        {"measured_gemm_tflops", measured},
        {"mfu", mfu(nominal)},
        {"mfu_vs_measured_gemm", mfu(measured)},
        {"j_per_token", joules_per_token.empty() ? nlohmann::ordered_json(nullptr)
                                                  : nlohmann::ordered_json(median(joules_per_token))},
        {"ms_per_sample", median(ms) / static_cast<double>(c.micro_batch * c.grad_accum)},
        {"budget_bytes", device.is_cuda() ? nlohmann::ordered_json(budget) : nlohmann::ordered_json(nullptr)},
        {"peak_reserved_bytes", device.is_cuda() ? nlohmann::ordered_json(reserved_peak) : nlohmann::ordered_json(nullptr)},
        {"allocator_backend_allocs", backend_allocs},
        {"allocator_backend_frees", backend_frees},
        {"allocator_backend_allocs_timed", backend_allocs - timed_from.backend_allocs},
        {"allocator_backend_frees_timed", backend_frees - timed_from.backend_frees},
        {"allocator_backend_ms_timed", backend_ms - timed_from.backend_ms},
        {"plan", plan}};
    if (!transfer_ms.empty()) {
      const double t = median(transfer_ms), k = median(compute_ms);
      r["stream"] = {{"transfer_ms_per_step", t},
                     {"compute_ms_per_step", k},
                     {"bytes_per_step", median(stream_bytes)},
                     {"pcie_gbs", median(pcie_gbs)},
                     {"pinned_h2d_gbs_measured", pinned_h2d > 0 ? nlohmann::ordered_json(pinned_h2d) : nlohmann::ordered_json(nullptr)},
                     {"pcie_fraction_of_pinned", pinned_h2d > 0 ? nlohmann::ordered_json(median(pcie_gbs) / pinned_h2d)
                                                                : nlohmann::ordered_json(nullptr)},
                     {"pinned_d2h_gbs_measured", pinned_d2h > 0 ? nlohmann::ordered_json(pinned_d2h) : nlohmann::ordered_json(nullptr)},
                     {"duplex_h2d_gbs_measured", duplex.h2d_gbs > 0 ? nlohmann::ordered_json(duplex.h2d_gbs) : nlohmann::ordered_json(nullptr)},
                     {"duplex_d2h_gbs_measured", duplex.d2h_gbs > 0 ? nlohmann::ordered_json(duplex.d2h_gbs) : nlohmann::ordered_json(nullptr)},
                     {"step_over_max_compute_transfer", median(ms) / std::max(t, k)}};
      if (!trace_summaries.empty()) {  // the timed step with the median span, whole (its fields add up)
        std::vector<size_t> order(trace_summaries.size());
        std::iota(order.begin(), order.end(), size_t{0});
        std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
          return trace_summaries[a]["span_ms"].get<double>() < trace_summaries[b]["span_ms"].get<double>();
        });
        const size_t mid = order[order.size() / 2];
        r["stream"]["trace"] = trace_summaries[mid];
        r["stream"]["trace"]["step"] = mid;
      }
    }
    if (json) {
      std::cout << r.dump() << "\n";
      return 0;
    }
    std::cout << "onn-bench train: " << r["model"].get<std::string>() << " (" << mc.architecture << "), "
              << r["mode"].get<std::string>() << " on " << device_name << ", " << c.micro_batch << " x " << c.seq_len
              << " tokens x " << c.grad_accum << " per step\n"
              << "  " << median(ms) << " ms/step, " << tps << " tokens/s (median of " << ms.size() << " steps)\n"
              << "  peak memory: " << (device.is_cuda() ? std::to_string(peak >> 20) + " MiB device, " : "")
              << (ru.ru_maxrss >> 10) << " MiB host RSS\n"
              << "  MFU " << (r["mfu"].is_null() ? "n/a (no datasheet peak for this device)" : r["mfu"].dump())
              << ", " << r["mfu_vs_measured_gemm"].dump() << " of the measured GEMM rate (" << measured
              << " TFLOP/s)\n";
    if (!r["j_per_token"].is_null()) std::cout << "  energy " << r["j_per_token"].dump() << " J/token\n";
    if (r.contains("stream")) {
      const auto& st = r["stream"];
      if (st.contains("trace")) {
        const auto& tr = st["trace"];
        std::cout << "  timeline (" << trace_path << "): compute windows " << tr["compute_ms"].get<double>()
                  << " ms of " << tr["span_ms"].get<double>() << "; idle " << tr["idle_ms"].get<double>()
                  << " ms: waiting for the host " << tr["idle_host_ms"].get<double>() << ", for a copy "
                  << tr["idle_copy_ms"].get<double>() << ", other " << tr["idle_other_ms"].get<double>()
                  << "; weight copies started late by the host " << tr["copy_host_late_ms"].get<double>()
                  << " ms, queued " << tr["copy_queued_ms"].get<double>() << " ms\n";
        if (!tr["idle_host_calls_ms"].empty()) {  // what the host was held up in while the device waited
          std::cout << "  waiting for the host, the host was in:";
          for (const auto& [call, ms] : tr["idle_host_calls_ms"].items())
            std::cout << " " << call << " " << ms.get<double>() << " ms (" << tr["host_calls"][call].get<int64_t>()
                      << " calls in the step)";
          std::cout << "\n";
        }
      }
      std::cout << "  streamed: " << plan["layers_per_chunk"].get<int64_t>() << " layer(s) per chunk, "
                << plan["micro_batches_per_load"].get<int64_t>() << " micro-batch(es) per weight load, "
                << st["bytes_per_step"].get<double>() / 1e9 << " GB per step at " << st["pcie_gbs"].get<double>()
                << " GB/s; transfer " << st["transfer_ms_per_step"].get<double>() << " ms, compute "
                << st["compute_ms_per_step"].get<double>() << " ms; step / max(compute, transfer) = "
                << st["step_over_max_compute_transfer"].get<double>() << "\n";
    }
    if (device.is_cuda())
      std::cout << "  allocator: peak reserved " << (reserved_peak >> 20) << " MiB of a " << (budget >> 20)
                << " MiB budget\n";
    return 0;
  });
}
