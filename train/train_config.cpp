// The training run's configuration (train/trainer.h): its checks, its JSON form
// (run_config.json, the init event), the learning-rate schedule, what the planner is asked,
// and reading a run folder's configuration back.
#include <algorithm>
#include <cmath>
#include <filesystem>

#include "runtime/error.h"
#include "runtime/json.h"
#include "train/data.h"
#include "train/trainer.h"

namespace onn {

namespace fs = std::filesystem;

Schedule parse_schedule(const std::string& name) {
  for (Schedule s : {Schedule::cosine, Schedule::linear, Schedule::constant})
    if (name == schedule_name(s)) return s;
  throw InvalidArgument("--schedule must be cosine, linear or constant, not \"" + name + "\"");
}

const char* schedule_name(Schedule s) {
  switch (s) {
    case Schedule::linear: return "linear";
    case Schedule::constant: return "constant";
    case Schedule::cosine: break;
  }
  return "cosine";
}

nlohmann::ordered_json TrainConfig::to_json() const {
  nlohmann::ordered_json targets = nlohmann::ordered_json::array();
  const char* names[kLoraTargets] = {"q", "k", "v", "o", "gate", "up", "down"};
  for (int i = 0; i < kLoraTargets; ++i)
    if (lora.targets[static_cast<size_t>(i)]) targets.push_back(names[i]);
  return {{"model", model_dir}, {"init", init_preset}, {"init_tokenizer_vocab", init_tokenizer_vocab},
          {"data", data}, {"val_data", val_data}, {"out", out_dir}, {"device", device}, {"full", full},
          {"lora_rank", lora.rank}, {"lora_alpha", lora.alpha}, {"lora_dropout", lora.dropout},
          {"rslora", lora.rslora}, {"lora_targets", targets}, {"train_layers", lora.layers},
          {"recompute", recompute}, {"seq_len", seq_len}, {"micro_batch", micro_batch},
          {"grad_accum", grad_accum}, {"packing", packing}, {"train_on_inputs", train_on_inputs},
          {"skip_bad_records", skip_bad_records}, {"data_columns", data_columns}, {"chat_format", chat_format}, {"val_split", val_split},
          {"steps", steps}, {"epochs", epochs}, {"lr", lr}, {"min_lr", min_lr}, {"weight_decay", weight_decay},
          {"max_grad_norm", max_grad_norm}, {"beta1", beta1}, {"beta2", beta2}, {"eps", eps},
          {"warmup_steps", warmup_steps}, {"schedule", schedule_name(schedule)}, {"eval_every", eval_every},
          {"save_every", save_every}, {"keep_last", keep_last}, {"max_bad_steps", max_bad_steps}, {"seed", seed},
          {"quantize", quant_format_name(placement.quantize)}, {"cpu_matmul", cpu_matmul_name(placement.cpu_matmul)}};
}

TrainConfig TrainConfig::from_json(const nlohmann::json& j, const std::string& source) {
  TrainConfig c;
  try {
    c.model_dir = j.at("model");
    c.init_preset = j.at("init");
    c.init_tokenizer_vocab = j.at("init_tokenizer_vocab");
    c.data = j.at("data");
    c.val_data = j.at("val_data");
    c.out_dir = j.at("out");
    c.device = j.at("device");
    c.full = j.at("full");
    c.lora.rank = j.at("lora_rank");
    c.lora.alpha = j.at("lora_alpha");
    c.lora.dropout = j.at("lora_dropout");
    c.lora.rslora = j.at("rslora");
    std::string t;
    for (const auto& x : j.at("lora_targets")) t += (t.empty() ? "" : ",") + x.get<std::string>();
    c.lora.targets = parse_lora_targets(t);
    c.lora.layers = j.at("train_layers").get<std::vector<int64_t>>();
    c.recompute = j.at("recompute");
    c.seq_len = j.at("seq_len");
    c.micro_batch = j.at("micro_batch");
    c.grad_accum = j.at("grad_accum");
    c.packing = j.at("packing");
    c.train_on_inputs = j.at("train_on_inputs");
    c.skip_bad_records = j.at("skip_bad_records");
    c.data_columns = j.value("data_columns", "");  // absent in runs started before it existed
    c.chat_format = j.at("chat_format");
    c.val_split = j.at("val_split");
    c.steps = j.at("steps");
    c.epochs = j.at("epochs");
    c.lr = j.at("lr");
    c.min_lr = j.at("min_lr");
    c.weight_decay = j.at("weight_decay");
    c.max_grad_norm = j.at("max_grad_norm");
    c.beta1 = j.at("beta1");
    c.beta2 = j.at("beta2");
    c.eps = j.at("eps");
    c.warmup_steps = j.at("warmup_steps");
    c.schedule = parse_schedule(j.at("schedule").get<std::string>());
    c.eval_every = j.at("eval_every");
    c.save_every = j.at("save_every");
    c.keep_last = j.at("keep_last");
    c.max_bad_steps = j.at("max_bad_steps");
    c.seed = j.at("seed");
    if (j.contains("cpu_matmul")) {  // absent in runs from before the bf16 GEMM
      const std::string m = j.at("cpu_matmul");
      if (m != "f32" && m != "bf16") throw InvalidArgument("cpu_matmul \"" + m + "\" is not f32 or bf16");
      c.placement.cpu_matmul = m == "bf16" ? CpuMatmul::bf16 : CpuMatmul::f32;
    }
    if (j.contains("quantize")) {  // absent in runs from before quantized bases
      const std::optional<QuantFormat> q = parse_quant_format(j.at("quantize").get<std::string>());
      if (!q) throw InvalidArgument("quantize \"" + j.at("quantize").get<std::string>() + "\" is not a format");
      c.placement.quantize = *q;
    }
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(source + ": the run configuration is damaged (" + e.what() + ")");
  } catch (const InvalidArgument& e) {
    throw FormatError(source + ": the run configuration is damaged (" + e.what() + ")");
  }
  return c;
}

nlohmann::ordered_json world_json(const Communicator& comm, int64_t micro_batch, int64_t grad_accum) {
  return {{"size", comm.size()}, {"backend", comm_backend_name(comm.backend())},
          {"micro_batches_per_rank", grad_accum}, {"rows_per_step", micro_batch * grad_accum * comm.size()}};
}

void TrainConfig::check() const {
  const TrainConfig& c = *this;
  ONN_CHECK_ARG(!c.data.empty(), "--data is required");
  ONN_CHECK_ARG(!c.out_dir.empty(), "--out is required");
  ONN_CHECK_ARG(c.model_dir.empty() != c.init_preset.empty(), "give exactly one of --model and --init");
  ONN_CHECK_ARG(c.seq_len == 0 || c.seq_len >= 2, "--seq-len must be at least 2");
  ONN_CHECK_ARG(c.micro_batch >= 1 && c.grad_accum >= 1, "--micro-batch and --grad-accum must be at least 1");
  ONN_CHECK_ARG(c.batch_rows >= 0, "--batch-rows must be at least 1");
  ONN_CHECK_ARG(c.steps >= 0 && c.epochs >= 1, "--steps must be >= 0 and --epochs >= 1");
  ONN_CHECK_ARG(std::isfinite(c.lr) && c.lr > 0, "--lr must be positive");
  ONN_CHECK_ARG(c.min_lr >= 0 && c.min_lr <= c.lr, "--min-lr must be in [0, --lr]");
  ONN_CHECK_ARG(c.weight_decay >= 0, "--weight-decay must be >= 0");
  ONN_CHECK_ARG(c.warmup_steps >= 0, "--warmup-steps must be >= 0");
  ONN_CHECK_ARG(c.keep_last >= 1, "--keep-last must be at least 1");
  ONN_CHECK_ARG(c.max_bad_steps >= 1, "--max-bad-steps must be at least 1");
  ONN_CHECK_ARG(c.val_split >= 0 && c.val_split < 1, "--val-split must be in [0, 1)");
  ONN_CHECK_ARG(c.val_split == 0 || c.val_data.empty(), "--val-split and --val-data exclude each other");
  parse_column_map(c.data_columns);  // a bad --data-columns before anything is read
  ONN_CHECK_ARG(c.placement.layers_per_chunk >= 0, "--layers-per-chunk must not be negative");
  ONN_CHECK_ARG(c.placement.quantize == QuantFormat::none || (!c.full && c.init_preset.empty()),
                "--quantize freezes the base: it trains LoRA adapters (QLoRA), not --full or --init");
}

double learning_rate(const TrainConfig& cfg, int64_t step, int64_t total) {
  if (step < cfg.warmup_steps) return cfg.lr * static_cast<double>(step + 1) / static_cast<double>(cfg.warmup_steps);
  if (cfg.schedule == Schedule::constant) return cfg.lr;
  const int64_t span = std::max<int64_t>(1, total - cfg.warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - cfg.warmup_steps) / static_cast<double>(span));
  const double shape = cfg.schedule == Schedule::linear ? 1.0 - progress : 0.5 * (1.0 + std::cos(M_PI * progress));
  return cfg.min_lr + (cfg.lr - cfg.min_lr) * shape;
}

PlanRequest plan_request(const TrainConfig& c, const ModelConfig& model, Device device, uint64_t budget) {
  PlanRequest req;
  req.model = model;
  req.dtype = device.is_cuda() ? DType::bf16 : DType::f32;
  req.quant = base_format(model, c.placement);
  req.full = c.full || !c.init_preset.empty();
  req.lora = c.lora;
  req.seq_len = c.seq_len > 0 ? c.seq_len : std::min<int64_t>(512, model.max_position_embeddings);
  req.micro_batch = c.batch_rows > 0 ? 0 : c.micro_batch;
  req.batch_rows = c.batch_rows > 0 ? c.batch_rows : c.micro_batch * c.grad_accum;
  req.placement = c.placement.stream == Placement::auto_ && !device.is_cuda() ? Placement::resident : c.placement.stream;
  req.sharing = c.placement.share_loads;
  req.budget = budget;
  return req;
}

TrainConfig load_run_config(const std::string& run_dir) {
  const std::string path = (fs::path(run_dir) / "run_config.json").string();
  std::error_code ec;
  if (!fs::exists(path, ec)) throw InvalidArgument(run_dir + ": not a run folder (run_config.json is missing)");
  return TrainConfig::from_json(read_json_file(path), path);
}

}  // namespace onn
