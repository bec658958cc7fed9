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
#include "runtime/hardware.h"
#include "plan/flops.h"
#include "tools/bench_allreduce.h"
#include "tools/cli.h"
#include "tools/placement_flags.h"
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
  onn::write_file_atomic(path, text);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// What `onn-bench train` was asked.
struct BenchArgs {
  std::string preset = "tiny", model_dir, device_flag, targets = "all-linear", train_layers, trace_path;
  onn::TrainConfig c;
  int64_t steps = 10, warmup = 3;
  bool json = false;
};

void add_train_flags(CLI::App* train, BenchArgs& a) {
  onn::TrainConfig& c = a.c;
  c.seq_len = 512;
  c.micro_batch = 4;
  c.lora.rank = 16;
  c.lora.alpha = 32;
  auto* p = train->add_option("--preset", a.preset, "an onn-init preset, random weights (default tiny)");
  train->add_option("--model", a.model_dir, "a model folder instead of a preset")->excludes(p);
  train->add_option("--seq-len", c.seq_len, "tokens per row (default 512)")->check(CLI::Range(2, 1 << 20));
  auto* mb = train->add_option("--micro-batch", c.micro_batch, "rows per micro-batch (default 4)")->check(CLI::Range(1, 1 << 16));
  auto* ga = train->add_option("--grad-accum", c.grad_accum, "micro-batches per step (default 1)")->check(CLI::Range(1, 1 << 16));
  train->add_option("--batch-rows", c.batch_rows, "rows per step, split into micro-batches by the planner (instead of "
                                                  "--micro-batch and --grad-accum)")
      ->check(CLI::Range(1, 1 << 16))
      ->excludes(mb)
      ->excludes(ga);
  train->add_option("--steps", a.steps, "timed steps (default 10)")->check(CLI::Range(1, 1 << 20));
  train->add_option("--warmup", a.warmup, "untimed steps first (default 3)")->check(CLI::Range(0, 1 << 20));
  train->add_flag("--full", c.full, "full training instead of LoRA");
  train->add_option("--lora-rank", c.lora.rank, "LoRA rank (default 16)");
  train->add_option("--lora-targets", a.targets, "LoRA targets (default all-linear)");
  train->add_flag("--recompute", c.recompute, "recompute layer internals in the backward");
  train->add_option("--device", a.device_flag, "cpu or cuda[:N] (default: cuda when present)");
  train->add_flag("--json", a.json, "one JSON object instead of text");
  onn::tools::add_placement_flags(*train, c.placement, {"the run", true});
  train->add_option("--train-layers", a.train_layers, "LoRA on these layers only, e.g. 36-39 (default all)");
  train->add_option("--trace", a.trace_path, "streamed runs: write the timed steps' timeline (weight copies, compute "
                                             "windows, activation copies) to FILE as a Chrome trace (Perfetto, "
                                             "chrome://tracing), and add where each step's time went to the figures");
}

// Synthetic text: enough for every step (a window per row), at least one token per byte.
void write_synthetic_data(const fs::path& path, int64_t tokens, int64_t seq_len) {
  std::ofstream f(path);
  std::mt19937 rng(7);
  const char* words[] = {"the", "model", "learns", "from", "data", "tokens", "stream", "across", "layers", "fast"};
  for (int64_t written = 0; written < 4 * tokens;) {
    std::string text;
    while (static_cast<int64_t>(text.size()) < 8 * seq_len) text += std::string(words[rng() % 10]) + " ";
    written += static_cast<int64_t>(text.size());
    f << nlohmann::json{{"text", text}}.dump() << "\n";
  }
}

// The run's configuration: the model (a preset written to tmp, or --model), the data, the
// flags; returns the model's config.
onn::ModelConfig prepare_run(BenchArgs& a, const TempFolder& tmp, onn::Device device) {
  onn::TrainConfig& c = a.c;
  if (a.model_dir.empty()) {
    onn::InitOptions io;
    io.seed = 1;
    io.dtype = device.is_cuda() ? onn::DType::bf16 : onn::DType::f32;
    c.model_dir = (tmp.path / "model").string();
    onn::write_random_model(onn::find_preset(a.preset), c.model_dir, io);
  } else {
    c.model_dir = a.model_dir;
  }
  const onn::ModelConfig mc = onn::load_model_config(c.model_dir);
  c.seq_len = std::min<int64_t>(c.seq_len, mc.max_position_embeddings);
  const int64_t rows = c.batch_rows > 0 ? c.batch_rows : c.grad_accum * c.micro_batch;
  write_synthetic_data(tmp.path / "data.jsonl", (a.steps + a.warmup) * rows * c.seq_len, c.seq_len);
  c.data = (tmp.path / "data.jsonl").string();
  c.out_dir = (tmp.path / "run").string();
  c.device = device.str();
  c.steps = a.steps + a.warmup;
  c.lora.targets = onn::parse_lora_targets(a.targets);
  if (!a.train_layers.empty()) c.lora.layers = onn::parse_layer_ranges(a.train_layers, mc.num_hidden_layers);
  c.lr = 1e-5;
  c.write_outputs = false;
  c.trace = !a.trace_path.empty();
  return mc;
}

// What the timed steps' events reported, per step.
struct Timed {
  std::vector<double> ms, tok_s, tokens_per_step, joules_per_token, transfer_ms, compute_ms, pcie_gbs, stream_bytes;
  std::vector<nlohmann::ordered_json> traces, trace_summaries;
  size_t peak = 0;
  nlohmann::ordered_json plan;
  int64_t params_total = 0, params_trained = 0;
  onn::AllocatorStats timed_from;  // the device allocator when the timed steps began
  int64_t peak_rss_bytes = 0;      // the process's, when the run ended
};

// onn-train's own loop on the run, warm-up steps first.
Timed run_steps(BenchArgs& a, onn::Device device) {
  Timed t;
  onn::TrainConfig& c = a.c;
  onn::train(c, false, [&](const nlohmann::ordered_json& e) {
    if (e["type"] == "init") {
      t.params_total = e["parameters_total"];
      t.params_trained = e["parameters_trainable"];
      t.plan = e["plan"];
      c.micro_batch = t.plan["micro_batch"];  // the planner's split with --batch-rows
      c.grad_accum = t.plan["grad_accum"];
    }
    // The allocator's backend calls in the timed steps only (after setup and warm-up).
    if (device.is_cuda() && (e["type"] == "init" || (e["type"] == "step" && e["step"].get<int64_t>() == a.warmup)))
      t.timed_from = onn::cuda_caching_allocator(device.index).stats();
    if (e["type"] != "step" || e["step"].get<int64_t>() <= a.warmup) return;
    t.ms.push_back(e["ms"]);
    t.tok_s.push_back(e["tokens_per_s"]);
    t.tokens_per_step.push_back(e["tokens"].get<double>());
    t.peak = std::max(t.peak, e["mem_bytes"].get<size_t>());
    if (!e["j_per_token"].is_null()) t.joules_per_token.push_back(e["j_per_token"]);
    if (const auto& st = e["stream"]; !st.is_null()) {
      t.transfer_ms.push_back(st["transfer_ms"]);
      t.compute_ms.push_back(st["compute_ms"]);
      t.pcie_gbs.push_back(st["pcie_gbs"]);
      t.stream_bytes.push_back(st["bytes"].get<double>());
      if (st.contains("trace")) {
        t.traces.push_back(st["trace"]);
        t.trace_summaries.push_back(st["trace_summary"]);
      }
    }
  });
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  t.peak_rss_bytes = static_cast<int64_t>(ru.ru_maxrss) * 1024;
  return t;
}

// The device's own figures after the run: its allocator, and the copy rates this machine's
// pinned memory reaches (for a streamed run), for comparison.
struct DeviceFigures {
  onn::AllocatorStats alloc;
  double pinned_h2d = 0, pinned_d2h = 0;
  onn::cuda::DuplexRate duplex;
  std::string name = "cpu";
  double nominal_tflops = 0, measured_tflops = 0;
};

DeviceFigures device_figures(onn::Device device, bool streamed) {
  DeviceFigures d;
  if (!device.is_cuda()) {
    d.measured_tflops = measured_cpu_tflops();
    return d;
  }
  d.alloc = onn::cuda_caching_allocator(device.index).stats();
  const onn::ProfileOptions profile;  // the hardware profile's sizes, so the figures compare
  if (streamed) {
    const size_t bytes = profile.transfer_bytes;
    d.pinned_h2d = onn::cuda::measure_copy_gbs(device.index, onn::cuda::CopyKind::host_to_device, true, bytes, 5);
    d.pinned_d2h = onn::cuda::measure_copy_gbs(device.index, onn::cuda::CopyKind::device_to_host, true, bytes, 5);
    d.duplex = onn::cuda::measure_duplex_gbs(device.index, bytes, 5);
  }
  d.name = onn::cuda::properties(device.index).name;
  d.nominal_tflops = nominal_bf16_tflops(d.name);
  d.measured_tflops = onn::cuda::measure_bf16_gemm_tflops(device.index, profile.gemm_n, profile.reps);
  return d;
}

nlohmann::ordered_json or_null(bool present, const nlohmann::ordered_json& v) { return present ? v : nullptr; }

// The figures of a streamed run: PCIe against the pinned rates, transfer against compute, and
// the timed step with the median span's timeline summary, whole (its fields add up).
nlohmann::ordered_json stream_figures(const Timed& t, const DeviceFigures& d) {
  const double tr = median(t.transfer_ms), k = median(t.compute_ms), pcie = median(t.pcie_gbs);
  nlohmann::ordered_json s = {{"transfer_ms_per_step", tr},
                              {"compute_ms_per_step", k},
                              {"bytes_per_step", median(t.stream_bytes)},
                              {"pcie_gbs", pcie},
                              {"pinned_h2d_gbs_measured", or_null(d.pinned_h2d > 0, d.pinned_h2d)},
                              {"pcie_fraction_of_pinned", or_null(d.pinned_h2d > 0, pcie / d.pinned_h2d)},
                              {"pinned_d2h_gbs_measured", or_null(d.pinned_d2h > 0, d.pinned_d2h)},
                              {"duplex_h2d_gbs_measured", or_null(d.duplex.h2d_gbs > 0, d.duplex.h2d_gbs)},
                              {"duplex_d2h_gbs_measured", or_null(d.duplex.d2h_gbs > 0, d.duplex.d2h_gbs)},
                              {"step_over_max_compute_transfer", median(t.ms) / std::max(tr, k)}};
  if (!t.trace_summaries.empty()) {
    std::vector<size_t> order(t.trace_summaries.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return t.trace_summaries[a]["span_ms"].get<double>() < t.trace_summaries[b]["span_ms"].get<double>();
    });
    const size_t mid = order[order.size() / 2];
    s["trace"] = t.trace_summaries[mid];
    s["trace"]["step"] = mid;
  }
  return s;
}

nlohmann::ordered_json figures(const BenchArgs& a, const onn::ModelConfig& mc, onn::Device device, const Timed& t,
                               const DeviceFigures& d) {
  const onn::TrainConfig& c = a.c;
  const double tps = median(t.tok_s);
  const double flops = onn::training_flops_per_token(mc, (static_cast<double>(c.seq_len) + 1) / 2, c.full);
  const auto mfu = [&](double peak_tflops) { return or_null(peak_tflops > 0, tps * flops / (peak_tflops * 1e12)); };
  const bool cuda = device.is_cuda();
  nlohmann::ordered_json r = {
      {"bench", "train"},
      {"model", a.model_dir.empty() ? a.preset : a.model_dir},
      {"architecture", mc.architecture},
      {"mode", c.full ? "full" : "lora"},
      {"lora_rank", or_null(!c.full, c.lora.rank)},
      {"device", d.name},
      {"parameters_total", t.params_total},
      {"parameters_trained", t.params_trained},
      {"seq_len", c.seq_len},
      {"micro_batch", c.micro_batch},
      {"grad_accum", c.grad_accum},
      {"recompute", c.recompute},
      {"steps_timed", t.ms.size()},
      {"ms_per_step", median(t.ms)},
      {"tokens_per_step", median(t.tokens_per_step)},
      {"tokens_per_s", tps},
      {"model_flops_per_token", flops},
      {"peak_device_bytes", or_null(cuda, t.peak)},
      {"peak_rss_bytes", t.peak_rss_bytes},
      {"nominal_peak_tflops", or_null(d.nominal_tflops > 0, d.nominal_tflops)},
      {"measured_gemm_tflops", d.measured_tflops},
      {"mfu", mfu(d.nominal_tflops)},
      {"mfu_vs_measured_gemm", mfu(d.measured_tflops)},
      {"j_per_token", or_null(!t.joules_per_token.empty(), median(t.joules_per_token))},
      {"ms_per_sample", median(t.ms) / static_cast<double>(c.micro_batch * c.grad_accum)},
      {"budget_bytes", or_null(cuda, d.alloc.budget)},
      {"peak_reserved_bytes", or_null(cuda, d.alloc.peak_reserved)},
      {"allocator_backend_allocs", d.alloc.backend_allocs},
      {"allocator_backend_frees", d.alloc.backend_frees},
      {"allocator_backend_allocs_timed", d.alloc.backend_allocs - t.timed_from.backend_allocs},
      {"allocator_backend_frees_timed", d.alloc.backend_frees - t.timed_from.backend_frees},
      {"allocator_backend_ms_timed", d.alloc.backend_ms - t.timed_from.backend_ms},
      {"plan", t.plan}};
  if (!t.transfer_ms.empty()) r["stream"] = stream_figures(t, d);
  return r;
}

void print_text(const nlohmann::ordered_json& r, const BenchArgs& a, const Timed& t, onn::Device device) {
  const onn::TrainConfig& c = a.c;
  std::cout << "onn-bench train: " << r["model"].get<std::string>() << " (" << r["architecture"].get<std::string>()
            << "), " << r["mode"].get<std::string>() << " on " << r["device"].get<std::string>() << ", " << c.micro_batch
            << " x " << c.seq_len << " tokens x " << c.grad_accum << " per step\n"
            << "  " << r["ms_per_step"].get<double>() << " ms/step, " << r["tokens_per_s"].get<double>()
            << " tokens/s (median of " << t.ms.size() << " steps)\n"
            << "  peak memory: " << (device.is_cuda() ? std::to_string(t.peak >> 20) + " MiB device, " : "")
            << (r["peak_rss_bytes"].get<int64_t>() >> 20) << " MiB host RSS\n"
            << "  MFU " << (r["mfu"].is_null() ? "n/a (no datasheet peak for this device)" : r["mfu"].dump())
            << ", " << r["mfu_vs_measured_gemm"].dump() << " of the measured GEMM rate ("
            << r["measured_gemm_tflops"].get<double>() << " TFLOP/s)\n";
  if (!r["j_per_token"].is_null()) std::cout << "  energy " << r["j_per_token"].dump() << " J/token\n";
  if (r.contains("stream")) {
    const auto& st = r["stream"];
    if (st.contains("trace")) {
      const auto& tr = st["trace"];
      std::cout << "  timeline (" << a.trace_path << "): compute windows " << tr["compute_ms"].get<double>()
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
    std::cout << "  streamed: " << t.plan["layers_per_chunk"].get<int64_t>() << " layer(s) per chunk, "
              << t.plan["micro_batches_per_load"].get<int64_t>() << " micro-batch(es) per weight load, "
              << st["bytes_per_step"].get<double>() / 1e9 << " GB per step at " << st["pcie_gbs"].get<double>()
              << " GB/s; transfer " << st["transfer_ms_per_step"].get<double>() << " ms, compute "
              << st["compute_ms_per_step"].get<double>() << " ms; step / max(compute, transfer) = "
              << st["step_over_max_compute_transfer"].get<double>() << "\n";
  }
  if (device.is_cuda())
    std::cout << "  allocator: peak reserved " << (r["peak_reserved_bytes"].get<size_t>() >> 20) << " MiB of a "
              << (r["budget_bytes"].get<size_t>() >> 20) << " MiB budget\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"onn-bench: end-to-end figures of ONN's training loop"};
  app.require_subcommand(1);
  CLI::App* train = app.add_subcommand("train", "time training steps of a model shape: ms/step, tokens/s, peak "
                                                "memory, MFU (and energy on CUDA)");
  BenchArgs a;
  add_train_flags(train, a);
  CLI::App* allreduce = app.add_subcommand(
      "allreduce", "time the gradient all-reduce on the ranks a launcher started (mpirun -np N onn-bench allreduce): "
                   "ms, algorithm and bus bandwidth");
  onn::tools::AllreduceArgs ar;
  onn::tools::add_allreduce_flags(allreduce, ar);
  return onn::tools::run_cli(app, "onn-bench", argc, argv, [&] {
    if (allreduce->parsed()) return onn::tools::run_allreduce_bench(ar);
    const onn::Device device = onn::tools::device_from_flag(a.device_flag);
    if (!a.trace_path.empty() && a.c.placement.stream == onn::Placement::resident)
      throw onn::InvalidArgument("--trace needs a streamed run; --stream off has no timeline to write");
    TempFolder tmp;
    const onn::ModelConfig mc = prepare_run(a, tmp, device);
    const Timed t = run_steps(a, device);
    const DeviceFigures d = device_figures(device, !t.transfer_ms.empty());
    if (!a.trace_path.empty()) {
      if (t.traces.empty())
        throw onn::InvalidArgument("--trace: the run was not streamed (it was planned resident), so there is no "
                                   "timeline to write; add --stream on or a smaller --vram-budget");
      write_chrome_trace(a.trace_path, t.traces);
    }
    const nlohmann::ordered_json r = figures(a, mc, device, t, d);
    if (a.json)
      std::cout << r.dump() << "\n";
    else
      print_text(r, a, t, device);
    return 0;
  });
}
