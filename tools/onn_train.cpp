// onn-train: LoRA or full training of a Hugging Face model folder (or a model initialised
// from an onn-init preset), with a progress line on a terminal, NDJSON events (--json on
// stdout, --log-file), checkpoints and --resume; --demo runs the built-in demo.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>

#include "model/init.h"
#include "model/lora.h"
#include "runtime/dist/dist.h"
#include "runtime/error.h"
#include "runtime/parallel.h"
#include "plan/planner.h"
#include "tools/cli.h"
#include "tools/placement_flags.h"
#include "tools/train_demo.h"
#include "train/trainer.h"

namespace {

// Events to stdout (--json) and/or a log file, and a progress line on a terminal.
class Reporter {
 public:
  Reporter(bool json, const std::string& log_file, bool quiet) : json_(json), quiet_(quiet) {
    if (!log_file.empty()) {
      // A run killed in the middle of a line left it unfinished: start on a fresh line.
      bool partial = false;
      if (std::ifstream in{log_file, std::ios::binary | std::ios::ate}; in && in.tellg() > 0) {
        in.seekg(-1, std::ios::end);
        partial = in.get() != '\n';
      }
      log_.open(log_file, std::ios::app);
      if (!log_) throw onn::IoError(log_file + ": cannot open the log file");
      if (partial) log_ << "\n";
    }
    tty_ = ::isatty(STDERR_FILENO) != 0 && !json;
  }

  void operator()(const nlohmann::ordered_json& e) {
    const std::string line = e.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    if (json_) std::cout << line << "\n" << std::flush;
    if (log_.is_open()) log_ << line << "\n" << std::flush;
    if (quiet_ || json_) return;
    const std::string type = e["type"];
    if (type == "init") {
      total_ = e["steps"];
      std::cerr << "onn-train: " << e["architecture"].get<std::string>() << " on " << e["device"].get<std::string>()
                << ", " << e["mode"].get<std::string>() << ", " << e["parameters_trainable"].get<int64_t>() << " of "
                << e["parameters_total"].get<int64_t>() << " parameters trained, " << total_ << " steps"
                << (e["resumed_at"].get<int64_t>() > 0 ? ", resumed at step " + e["resumed_at"].dump() : "") << "\n";
      if (!e["data"]["skipped_records"].empty())
        std::cerr << "onn-train: skipped " << e["data"]["skipped_records"].size()
                  << " bad records, the first: " << e["data"]["skipped_records"][0].get<std::string>() << "\n";
      const auto& plan = e["plan"];
      if (!plan["resident"].get<bool>())
        std::cerr << "onn-train: weights streamed from host memory, " << plan["layers_per_chunk"].get<int64_t>()
                  << " layer(s) per chunk (" << plan["chunks"].get<int64_t>() << " chunks, LM head in "
                  << plan["head_slices"].get<int64_t>() << " slices"
                  << (plan.value("micro_batches_per_load", 1) > 1
                          ? ", " + std::to_string(plan["micro_batches_per_load"].get<int64_t>()) +
                                " micro-batches per weight load"
                          : std::string())
                  << "), device budget "
                  << onn::format_bytes(plan["budget_bytes"].get<size_t>()) << "\n";
      if (plan.contains("planner"))
        std::cerr << "onn-train: predicted peak " << onn::format_bytes(plan["planner"]["predicted_peak_bytes"].get<size_t>())
                  << ", " << static_cast<int64_t>(plan["planner"]["predicted_step_ms"].get<double>()) << " ms per step\n";
      start_ = std::chrono::steady_clock::now();
    } else if (type == "step") {
      const int64_t step = e["step"];
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      ++seen_;
      const double eta = seen_ > 0 ? elapsed / static_cast<double>(seen_) * static_cast<double>(total_ - step) : 0;
      char buf[256];
      std::snprintf(buf, sizeof buf, "step %lld/%lld  loss %s  lr %.2e  %.0f tok/s  ETA %d:%02d  mem %.1f MiB",
                    static_cast<long long>(step), static_cast<long long>(total_),
                    e["loss"].is_null() ? "skipped" : std::to_string(e["loss"].get<double>()).substr(0, 6).c_str(),
                    e["lr"].get<double>(), e["tokens_per_s"].get<double>(), static_cast<int>(eta) / 60,
                    static_cast<int>(eta) % 60, static_cast<double>(e["mem_bytes"].get<size_t>()) / (1 << 20));
      std::string line = buf;
      if (const auto& st = e["stream"]; !st.is_null()) {  // a streamed run: show the pipeline, never a silent hang
        std::snprintf(buf, sizeof buf, "  PCIe %.1f GB/s, transfer %.0f ms, compute %.0f ms",
                      st["pcie_gbs"].get<double>(), st["transfer_ms"].get<double>(), st["compute_ms"].get<double>());
        line += buf;
      }
      if (tty_) {
        std::cerr << "\r" << line << "\x1b[K" << std::flush;
      } else if (step == total_ || step % std::max<int64_t>(1, total_ / 10) == 0) {
        std::cerr << line << "\n";
      }
    } else if (type == "val") {
      if (tty_) std::cerr << "\n";
      std::cerr << "validation at step " << e["step"].get<int64_t>() << ": loss " << e["loss"].get<double>()
                << ", perplexity " << e["perplexity"].get<double>() << "\n";
    } else if (type == "checkpoint") {
      if (tty_) std::cerr << "\n";
      std::cerr << "checkpoint: " << e["path"].get<std::string>() << "\n";
    }
  }

 private:
  bool json_, quiet_, tty_ = false;
  std::ofstream log_;
  int64_t total_ = 0, seen_ = 0;
  std::chrono::steady_clock::time_point start_;
};

// --plan: the planner's decision for this configuration on this machine's device (or, with
// --device cuda where none is present, on assumed GPU figures and the given budget).
void print_plan(const onn::TrainConfig& c, const std::string& targets, const std::string& layers, bool json,
                const onn::Communicator& comm) {
  if (c.model_dir.empty() == c.init_preset.empty()) throw onn::InvalidArgument("--plan needs --model DIR or --init PRESET");
  const onn::ModelConfig model =
      c.model_dir.empty() ? onn::find_preset(c.init_preset).config : onn::load_model_config(c.model_dir);
  onn::TrainConfig run = c;
  run.lora.targets = onn::parse_lora_targets(targets);
  if (!layers.empty()) run.lora.layers = onn::parse_layer_ranges(layers, model.num_hidden_layers);
  const onn::Device device = c.device.empty() ? onn::default_device() : onn::Device::parse(c.device);
  const onn::PlanRequest req = onn::plan_request(run, model, device, c.placement.vram_budget);
  const onn::PlanHardware hw = onn::plan_hardware_for(device, c.placement.vram_budget, c.placement.host_ram);
  const onn::Plan p = onn::plan_training(req, hw);
  const nlohmann::ordered_json world = onn::world_json(comm, p.micro_batch, p.grad_accum);
  if (json) {
    nlohmann::ordered_json j = {{"type", "plan"}, {"device", hw.name}, {"measured", hw.measured}};
    j.update(p.to_json());
    j["world"] = world;
    std::cout << j.dump() << "\n";
  } else {
    std::cout << "onn-train --plan: " << req.model.architecture << ", " << req.model.num_hidden_layers << " layers, "
              << (req.full ? "full training" : "LoRA rank " + std::to_string(req.lora.rank)) << " on " << hw.name
              << "\n" << p.to_text();
    std::cout << "world: " << comm.size() << " rank" << (comm.size() > 1 ? "s" : "") << " ("
              << world["backend"].get<std::string>() << "), each " << p.grad_accum << " micro-batch"
              << (p.grad_accum > 1 ? "es" : "") << " of " << p.micro_batch << " rows per step: "
              << world["rows_per_step"].get<int64_t>() << " rows per optimizer step\n";
  }
}

// What onn-train was asked beside the run's configuration.
struct TrainArgs {
  onn::TrainConfig c;
  std::string targets = "all-linear", layers, resume, log_file, schedule = "cosine";
  bool json = false, demo = false, no_packing = false, plan = false;
  onn::dist::DistOptions dist;
};

// Data-parallel runs (mpirun -np N onn-train ...): their one flag.
void add_dist_flags(CLI::App& app, TrainArgs& a) {
  app.add_option("--comm-timeout", a.dist.timeout_s,
                 "distributed runs (mpirun -np N onn-train ..., or srun --mpi=pmix): seconds a collective may wait "
                 "for the other ranks before every rank is ended with one line (default 600)")
      ->check(CLI::PositiveNumber);
}

void add_flags(CLI::App& app, TrainArgs& a) {
  onn::TrainConfig& c = a.c;
  app.add_flag("--demo", a.demo, "train a small model from scratch on synthetic arithmetic, then LoRA-tune it on a "
                                 "second task (no downloads; a few minutes on a CPU)");
  app.add_option("--model", c.model_dir, "a Hugging Face model folder (config.json, safetensors, tokenizer.json)");
  app.add_option("--init", c.init_preset, "train from scratch: an onn-init preset (tiny, small, ...); implies --full");
  app.add_option("--init-tokenizer-vocab", c.init_tokenizer_vocab,
                 "with --init: the tokenizer's vocabulary, merges learned from the first 16 MiB of --data "
                 "(default: the preset's)");
  app.add_option("--data", c.data, ".jsonl, .json, .parquet, .csv/.tsv, .txt/.md file or a folder of them");
  app.add_option("--val-data", c.val_data, "validation data (instead of --val-split)");
  app.add_option("--val-split", c.val_split, "fraction of --data held out for validation (default 0)");
  app.add_option("--out", c.out_dir, "the run folder: checkpoints, adapter/ or model/, logs");
  app.add_option("--resume", a.resume, "continue the run in this folder from its last checkpoint");
  app.add_option("--device", c.device, "cpu or cuda[:N] (default: cuda when present)");
  app.add_flag("--full", c.full, "train every weight instead of a LoRA adapter");
  app.add_option("--lora-rank", c.lora.rank, "LoRA rank r (default 8)");
  app.add_option("--lora-alpha", c.lora.alpha, "LoRA alpha (default 16)");
  app.add_option("--lora-dropout", c.lora.dropout, "dropout on the LoRA input (default 0)");
  app.add_option("--lora-targets", a.targets, "q,k,v,o,gate,up,down or all-linear (default)");
  app.add_flag("--rslora", c.lora.rslora, "scale alpha/sqrt(r) instead of alpha/r");
  app.add_option("--train-layers", a.layers, "adapt only these layers, e.g. 0-3,36-39 (default: all)");
  app.add_option("--seq-len", c.seq_len, "tokens per row (default: 512, or the model's context when shorter)");
  auto* micro_opt = app.add_option("--micro-batch", c.micro_batch, "rows per forward/backward (default 4)");
  auto* accum_opt = app.add_option("--grad-accum", c.grad_accum, "micro-batches per optimizer step (per rank under mpirun; default 1)");
  app.add_option("--batch-rows", c.batch_rows,
                 "rows per optimizer step, split by the planner: it picks the micro-batch (the divisor that fits the "
                 "budget fastest; of equally fast ones, the one that copies the weights least, then keeps "
                 "activations on the device, then the largest) and the accumulation (instead of --micro-batch and "
                 "--grad-accum)")
      ->check(CLI::PositiveNumber)
      ->excludes(micro_opt)
      ->excludes(accum_opt);
  app.add_flag("--no-packing", a.no_packing, "one document per row instead of packing several");
  app.add_flag("--train-on-inputs", c.train_on_inputs, "loss on prompts and user turns too");
  app.add_flag("--skip-bad-records", c.skip_bad_records, "skip invalid records (reported) instead of stopping");
  app.add_option("--data-columns", c.data_columns, "other names for the record fields, COLUMN=FIELD,...: e.g. "
                                                  "question=input,answer=output (JSONL, JSON, Parquet and CSV alike)");
  app.add_option("--chat-format", c.chat_format, "chat template for messages data: llama3, chatml, qwen3, llama2, "
                                                 "phi3, phi4 (default: the tokenizer's)");
  auto* steps = app.add_option("--steps", c.steps, "optimizer steps (default: --epochs over the data)");
  app.add_option("--epochs", c.epochs, "passes over the data when --steps is not given (default 1)")->excludes(steps);
  app.add_option("--lr", c.lr, "peak learning rate (default 2e-4)");
  app.add_option("--min-lr", c.min_lr, "learning rate at the end of the decay (default 0)");
  app.add_option("--schedule", a.schedule, "cosine (default), linear or constant after warmup");
  app.add_option("--warmup-steps", c.warmup_steps, "linear warmup steps (default 0)");
  app.add_option("--weight-decay", c.weight_decay, "AdamW weight decay (default 0; norms and biases never)");
  app.add_option("--max-grad-norm", c.max_grad_norm, "clip the global gradient norm (default 1; 0: off)");
  app.add_flag("--recompute", c.recompute, "keep only layer inputs and recompute each layer in the backward");
  app.add_option("--eval-every", c.eval_every, "validation every N steps (default: at the end)");
  app.add_option("--save-every", c.save_every, "checkpoint every N steps (default: at the end)");
  app.add_option("--keep-last", c.keep_last, "checkpoints kept (default 2)");
  app.add_option("--max-bad-steps", c.max_bad_steps, "NaN/Inf steps in a row before stopping (default 5)");
  app.add_option("--seed", c.seed, "seed of data order, LoRA init and dropout (default 0)");
  onn::tools::add_plan_flags(app, a.plan, a.c.placement, "print how the run would fit the device (resident or "
                             "streamed, micro-batch, predicted peak memory and step time) from config.json alone, "
                             "and exit");
  onn::tools::add_placement_flags(app, c.placement, {"the run", true});
  app.add_flag("--json", a.json, "NDJSON events on stdout (init, step, val, checkpoint, done, error)");
  app.add_option("--log-file", a.log_file, "append the NDJSON events to this file");
  add_dist_flags(app, a);
}

// The run continues with the configuration it was started with (same batches, same schedule);
// only where it runs and how it reports may change.
void resume_config(const CLI::App& app, TrainArgs& a) {
  for (const CLI::Option* o : app.get_options()) {
    const std::string name = o->get_name();
    if (o->count() == 0 || name == "--resume" || name == "--device" || name == "--json" || name == "--log-file" ||
        name == "--vram-budget" || name == "--stream" || name == "--layers-per-chunk" || name == "--share-loads" ||
        name == "--threads" || name == "--comm-timeout")
      continue;
    throw onn::InvalidArgument("--resume continues the run with its own configuration (" + a.resume +
                               "/run_config.json); " + name +
                               " cannot be given with it (only --device, --vram-budget, --stream, "
                               "--layers-per-chunk, --share-loads, --threads, --comm-timeout, --json and "
                               "--log-file can)");
  }
  const std::string device = a.c.device;
  onn::PlacementFlags placement = a.c.placement;
  a.c = onn::load_run_config(a.resume);
  a.c.out_dir = a.resume;
  placement.quantize = a.c.placement.quantize;      // the run's base, not a placement choice
  placement.cpu_matmul = a.c.placement.cpu_matmul;  // the run's arithmetic
  a.c.placement = placement;
  if (!device.empty()) a.c.device = device;
}

// A new run's configuration from the flags that need parsing.
void new_config(TrainArgs& a) {
  onn::TrainConfig& c = a.c;
  if (c.data.empty()) throw onn::InvalidArgument("--data is required (or --demo, or --resume RUN_DIR)");
  if (c.model_dir.empty() == c.init_preset.empty()) throw onn::InvalidArgument("give --model DIR or --init PRESET");
  if (c.out_dir.empty()) throw onn::InvalidArgument("--out RUN_DIR is required");
  c.lora.targets = onn::parse_lora_targets(a.targets);
  c.packing = !a.no_packing;
  if (!a.layers.empty()) {
    if (c.model_dir.empty()) throw onn::InvalidArgument("--train-layers is for LoRA on an existing --model");
    c.lora.layers = onn::parse_layer_ranges(a.layers, onn::load_model_config(c.model_dir).num_hidden_layers);
  }
}

// The run, its events reported (by rank 0), and the done (or error) event.
int run_training(const TrainArgs& a, bool resuming, onn::Communicator& comm) {
  onn::TrainConfig c = a.c;
  if (!comm.lead()) {
    onn::train(c, resuming, [](const nlohmann::ordered_json&) {}, &comm);
    return 0;
  }
  Reporter reporter(a.json, a.log_file, false);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    if (!resuming) c.schedule = onn::parse_schedule(a.schedule);
    const onn::TrainResult r = onn::train(c, resuming, [&](const nlohmann::ordered_json& e) { reporter(e); }, &comm);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const auto or_null = [](double v) { return v >= 0 ? nlohmann::ordered_json(v) : nlohmann::ordered_json(nullptr); };
    reporter({{"type", "done"}, {"steps", r.steps}, {"skipped_steps", r.skipped_steps}, {"loss", r.last_loss},
              {"val_loss", or_null(r.val_loss)}, {"ms", ms}, {"energy_j", or_null(r.energy_j)},
              {"j_per_token", or_null(r.energy_j_per_token)}, {"output", r.output}, {"tensorboard", r.tensorboard}});
    if (!a.json) std::cout << "onn-train: done; " << (c.full ? "model" : "adapter") << " in " << r.output << "\n";
  } catch (const onn::Error& e) {
    reporter({{"type", "error"}, {"message", onn::tools::one_line(e.what())}});
    throw;
  }
  return 0;
}

// This process's rank: the launcher's MPI world (one rank without a launcher). Each rank takes
// its node's share of the cores and, on CUDA, the GPU of its local rank.
std::unique_ptr<onn::Communicator> open_ranks(const CLI::App& app, TrainArgs& a) {
  std::unique_ptr<onn::Communicator> comm = onn::dist::make_communicator(a.dist);
  onn::tools::set_cli_rank(comm->rank());
  if (comm->backend() == onn::CommBackend::local) return comm;
  if (a.demo) throw onn::InvalidArgument("--demo runs as one process, not under mpirun");
  if (app.count("--threads") == 0)
    onn::set_cpu_threads(std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / comm->local_size()));
  const onn::Device device = onn::dist::rank_device(*comm, onn::tools::device_from_flag(a.c.device),
                                                    a.c.device.find(':') != std::string::npos);
  if (device.is_cuda()) a.c.device = device.str();
  return onn::dist::with_nccl(std::move(comm), device, a.dist);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"onn-train: fine-tune a Hugging Face model folder with LoRA (default) or train it fully; "
               "--demo runs the built-in demo. Data parallel on several GPUs or nodes: mpirun -np N onn-train ..."};
  TrainArgs a;
  add_flags(app, a);
  std::unique_ptr<onn::Communicator> comm;
  bool ranks_disagree = false;
  const int code = onn::tools::run_cli(app, "onn-train", argc, argv, [&] {
    comm = open_ranks(app, a);
    if (a.demo) return onn::tools::run_train_demo(a.c.out_dir, a.c.device, a.json);
    onn::tools::check_host_ram(a.c.placement, a.plan);
    if (a.plan) {
      if (comm->lead()) print_plan(a.c, a.targets, a.layers, a.json, *comm);
      return 0;
    }
    const bool resuming = !a.resume.empty();
    if (resuming)
      resume_config(app, a);
    else
      new_config(a);
    onn::tools::device_from_flag(a.c.device);  // a clear error for a missing CUDA device
    try {
      return run_training(a, resuming, *comm);
    } catch (const onn::RanksDisagree&) {
      ranks_disagree = true;
      throw;
    }
  });
  // A rank that failed alone ends the others (they would wait for it); a refusal every rank
  // reached, or success, ends each rank normally.
  if (code != 0 && comm && comm->size() > 1 && !ranks_disagree) comm->abort(code);
  return code;
}
