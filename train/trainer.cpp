// The training loop, its checkpoints and exact resume.
#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>

#include "kernels/adamw.h"
#include "kernels/counter_rng.h"
#include "kernels/cross_entropy.h"
#include "kernels/elementwise.h"
#include "model/init.h"
#include "model/llama.h"
#include "model/streaming.h"
#include "model/tokenizer.h"
#include "model/training.h"
#include "runtime/error.h"
#include "runtime/allocator.h"
#include "runtime/cuda_backend.h"
#include "runtime/hardware.h"
#include "runtime/energy.h"
#include "runtime/file_util.h"
#include "runtime/safetensors.h"
#include "train/data.h"
#include "train/dataset.h"
#include "train/planner.h"
#include "train/tensorboard.h"

namespace onn {

namespace fs = std::filesystem;

namespace {

// A trained tensor with its gradient, AdamW moments and compute copy.
struct Param {
  std::string name;
  Tensor value;  // F32 master (the model weight itself on the CPU)
  Tensor copy;   // the compute-dtype weight refreshed by AdamW, or undefined
  Tensor grad;
  Tensor m, v;
  bool decay = true;
};

std::string step_name(int64_t step) {
  char b[32];
  std::snprintf(b, sizeof b, "step-%08lld", static_cast<long long>(step));
  return b;
}

void write_text(const fs::path& path, const std::string& text) {
  AtomicFile f(path.string());
  f.write(text.data(), text.size());
  f.commit();
}

void copy_model_files(const std::string& from, const fs::path& to) {
  fs::copy_file(fs::path(from) / "config.json", to / "config.json", fs::copy_options::overwrite_existing);
  copy_model_side_files(from, to.string());
}

class Trainer {
 public:
  Trainer(const TrainConfig& cfg, bool resume, const EventSink& events)
      : cfg_(cfg), resume_(resume), events_(events), ctx_(device_from(cfg.device)) {
    auto* caching = dynamic_cast<CachingAllocator*>(&ctx_.allocator());
    if (cfg.vram_budget > 0) {
      if (!caching) throw InvalidArgument("--vram-budget applies to a CUDA device; this run is on " + ctx_.device().str());
      caching->set_budget(cfg.vram_budget);
    } else if (caching && ctx_.device().is_cuda() && caching->budget() == 0) {
      // No flag: the device's free memory less a margin (other processes, the CUDA context).
      size_t free_bytes = 0, total = 0;
      cuda::mem_info(ctx_.device().index, &free_bytes, &total);
      const size_t margin = size_t{256} << 20;
      caching->set_budget(caching->stats().reserved + (free_bytes > margin ? free_bytes - margin : 0));
    }
    ONN_CHECK_ARG(cfg.stream == "auto" || cfg.stream == "on" || cfg.stream == "off",
                  "--stream must be auto, on or off, got \"", cfg.stream, "\"");
    ONN_CHECK_ARG(cfg.layers_per_chunk >= 0, "--layers-per-chunk must not be negative");
  }

  TrainResult run();

 private:
  static Device device_from(const std::string& flag) {
    if (flag.empty()) return default_device();
    return Device::parse(flag);
  }
  void setup();
  void load_checkpoint(const fs::path& dir);
  void save_checkpoint();
  void save_weights(const fs::path& dir);
  double evaluate();
  // Peak bytes of the device allocator (a caching allocator reports it; the CPU's does not).
  size_t device_peak_bytes() const {
    const auto* c = dynamic_cast<const CachingAllocator*>(&ctx_.allocator());
    return c ? c->stats().peak_in_use : 0;
  }
  std::vector<int64_t> next_micro_batch();
  // What runs: resident or streamed, chunking, the batch; the planner's prediction with it.
  nlohmann::ordered_json run_plan_json() const {
    nlohmann::ordered_json j = {{"resident", !stream_.has_value()}, {"micro_batch", cfg_.micro_batch},
                                {"grad_accum", cfg_.grad_accum}, {"seq_len", cfg_.seq_len},
                                {"recompute", cfg_.recompute || stream_.has_value()}};
    if (stream_) {
      j["layers_per_chunk"] = stream_->layers_per_chunk();
      j["chunks"] = stream_->layer_chunks();
      j["head_slices"] = stream_->head_slices();
      j["chunk_buffer_bytes"] = stream_->buffer_bytes();
      j["activations"] = stream_->offload_activations() ? "host" : "device";
      j["activation_layers_on_device"] = stream_->activation_layers_on_device();
      j["micro_batches_per_load"] = per_load_;
    }
    const auto* caching = dynamic_cast<const CachingAllocator*>(&ctx_.allocator());
    j["budget_bytes"] = caching ? caching->budget() : 0;
    if (plan_) j["planner"] = plan_->to_json();
    return j;
  }
  // This step's host-to-device streaming (null when resident).
  nlohmann::ordered_json stream_json() {
    if (!stream_) return nullptr;
    if (trace_) trace_->stop_host_spans();  // the step is over: the waits below are the trace's
    const StreamStats s = stream_->streamer().stats();
    nlohmann::ordered_json j = {{"bytes", s.bytes}, {"transfer_ms", s.copy_ms}, {"compute_ms", s.compute_ms},
                                {"pcie_gbs", s.copy_ms > 0 ? double(s.bytes) / (s.copy_ms * 1e6) : 0.0}};
    if (trace_) {
      const std::vector<TraceSpan> spans = trace_->take();
      j["trace_summary"] = trace_summary_json(summarize_trace(spans));
      j["trace"] = trace_json(spans);
    }
    return j;
  }

  TrainConfig cfg_;
  bool resume_;
  const EventSink& events_;
  Context ctx_;
  std::string model_dir_;
  std::optional<LlamaModel> model_;
  std::optional<Plan> plan_;                  // the planner's, when it was consulted
  int64_t per_load_ = 1;                      // streamed: micro-batches sharing each weight load
  std::optional<StreamedWeights> stream_;    // layer streaming
  std::optional<StreamTrace> trace_;         // its per-step timeline (TrainConfig::trace)
  static constexpr int64_t kHeadGranule = 8192;
  PassOptions pass_options() {
    PassOptions o;
    o.lora = cfg_.full ? nullptr : &adapter_;
    o.stream = stream_ ? &*stream_ : nullptr;
    o.head_granule = stream_ ? kHeadGranule : 0;
    return o;
  }
  std::optional<Tokenizer> tok_;
  Corpus train_, val_corpus_;
  std::vector<int64_t> train_docs_, val_docs_;
  LoraAdapter adapter_;
  std::optional<Gradients> grads_;
  std::vector<Param> params_;
  int64_t total_steps_ = 0;
  // Run state (trainer_state.json).
  int64_t step_ = 0, optimizer_steps_ = 0, epoch_ = 0, cursor_ = 0, skipped_ = 0, bad_in_row_ = 0;
  double last_loss_ = 0, val_loss_ = -1;
  // This process's measurements (not part of the run state).
  std::unique_ptr<TensorBoardWriter> tb_;
  std::optional<EnergyMeter> energy_;
  double energy_j_ = 0;
  int64_t energy_tokens_ = 0;
  std::vector<std::vector<int64_t>> epoch_plan_;
  int64_t planned_epoch_ = -1;
};

std::vector<int64_t> Trainer::next_micro_batch() {
  PackOptions po;
  po.seq_len = cfg_.seq_len;
  po.micro_batch = cfg_.micro_batch;
  po.packing = cfg_.packing;
  for (;;) {
    if (planned_epoch_ != epoch_) {
      epoch_plan_ = plan_epoch(train_, train_docs_, po, cfg_.seed, epoch_);
      planned_epoch_ = epoch_;
    }
    if (cursor_ < static_cast<int64_t>(epoch_plan_.size())) return epoch_plan_[static_cast<size_t>(cursor_++)];
    ++epoch_;
    cursor_ = 0;
  }
}

void Trainer::setup() {
  cfg_.check();
  const fs::path out(cfg_.out_dir);
  const fs::path ckpts = out / "checkpoints";
  std::error_code ec;
  // Killed before its first checkpoint: continuing the run is starting it again.
  if (resume_ && !fs::exists(ckpts / "latest", ec)) resume_ = false;
  else if (!resume_ && fs::exists(ckpts / "latest", ec))
    throw InvalidArgument(cfg_.out_dir + " already holds a run; continue it with --resume " + cfg_.out_dir +
                          " or choose another --out");
  // Everything that can be checked from config.json is, before any data is read or written.
  {
    const ModelConfig mc0 = cfg_.init_preset.empty() ? load_model_config(cfg_.model_dir) : find_preset(cfg_.init_preset).config;
    if (cfg_.seq_len == 0) cfg_.seq_len = std::min<int64_t>(512, mc0.max_position_embeddings);
    ONN_CHECK_ARG(cfg_.seq_len <= mc0.max_position_embeddings, "--seq-len ", cfg_.seq_len,
                  " is longer than the model's max_position_embeddings ", mc0.max_position_embeddings);
    if (!cfg_.full && cfg_.init_preset.empty()) check_lora_spec(mc0, cfg_.lora);
  }
  // A from-scratch model is written into the run folder first (from the training text).
  model_dir_ = cfg_.model_dir;
  if (!cfg_.init_preset.empty()) {
    (void)find_preset(cfg_.init_preset);  // an unknown preset before anything is written
    model_dir_ = (out / "init-model").string();
    if (!fs::exists(fs::path(model_dir_) / "config.json", ec)) {
      DataReport r;
      ReadOptions ro;
      ro.skip_bad_records = cfg_.skip_bad_records;
      std::string text;
      for (const Example& e : read_examples(cfg_.data, ro, r))
        text += e.kind == Example::Kind::text ? e.text : e.prompt + e.completion + "\n";
      InitOptions io;
      io.seed = cfg_.seed;
      io.dtype = DType::f32;
      io.tokenizer_text = text;
      io.tokenizer_vocab = cfg_.init_tokenizer_vocab;
      write_random_model(find_preset(cfg_.init_preset), model_dir_, io);
    }
  }
  tok_.emplace(Tokenizer::load(model_dir_));
  DataReport report;
  bool cached = false;
  CorpusSource src;
  src.data = cfg_.data;
  src.model_dir = model_dir_;
  src.cache = (out / "data" / "train-corpus").string();
  src.seq_len = cfg_.seq_len;
  src.train_on_inputs = cfg_.train_on_inputs;
  src.chat_format = cfg_.chat_format;
  src.skip_bad_records = cfg_.skip_bad_records;
  train_ = load_or_tokenize_corpus(src, *tok_, report, cached);
  if (!cfg_.val_data.empty()) {
    DataReport vr;
    bool vc = false;
    src.data = cfg_.val_data;
    src.cache = (out / "data" / "val-corpus").string();
    val_corpus_ = load_or_tokenize_corpus(src, *tok_, vr, vc);
    train_docs_.resize(static_cast<size_t>(train_.documents()));
    std::iota(train_docs_.begin(), train_docs_.end(), 0);
    val_docs_.resize(static_cast<size_t>(val_corpus_.documents()));
    std::iota(val_docs_.begin(), val_docs_.end(), 0);
  } else {
    split_documents(train_, cfg_.val_split, cfg_.seed, train_docs_, val_docs_);
    val_corpus_ = train_;
  }
  ONN_CHECK_ARG(!train_docs_.empty(), cfg_.data, ": no training documents left after the validation split");

  // The model and what is trained.
  const bool full = cfg_.full || !cfg_.init_preset.empty();
  cfg_.full = full;
  const fs::path latest_file = ckpts / "latest";
  fs::path ckpt;
  if (resume_) {
    std::string name = read_file(latest_file.string(), 256);
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    ckpt = ckpts / name;
  }
  // Resident or streamed: the planner decides on CUDA (or --stream says).
  bool streamed = cfg_.stream == "on";
  ONN_CHECK_ARG(!(full && streamed), "--stream on trains LoRA adapters only: full training keeps its weights, their "
                "gradients and optimizer state on the device");
  int64_t per_chunk = cfg_.layers_per_chunk;
  // With --batch-rows the planner also splits the batch into micro-batches (on any device).
  if (cfg_.batch_rows > 0 || (!full && cfg_.stream != "off" && ctx_.device().is_cuda())) {
    const auto* caching = dynamic_cast<const CachingAllocator*>(&ctx_.allocator());
    const PlanRequest req =
        plan_request(cfg_, load_model_config(model_dir_), ctx_.device(), caching ? caching->budget() : 0);
    plan_ = plan_training(req, plan_hardware_for(ctx_.device(), req.budget));
    if (cfg_.batch_rows > 0) {
      cfg_.micro_batch = plan_->micro_batch;
      cfg_.grad_accum = plan_->grad_accum;
    }
    if (cfg_.stream == "auto") streamed = plan_->streamed;
    if (per_chunk == 0 && plan_->streamed) per_chunk = plan_->layers_per_chunk;
  }
  // Micro-batches per weight load: --share-loads on (all of the step's), off (one), or the
  // planner's when the run streams with its split.
  if (streamed && cfg_.share_loads == "on")
    per_load_ = cfg_.grad_accum;
  else if (streamed && cfg_.share_loads == "auto" && plan_ && plan_->streamed &&
           plan_->micro_batch == cfg_.micro_batch && plan_->grad_accum == cfg_.grad_accum)
    per_load_ = plan_->micro_batches_per_load;
  // Full training resumes from the checkpoint's weights; LoRA from the base model.
  if (streamed)
    model_.emplace(LlamaModel::load_to_host(ctx_, model_dir_));
  else
    model_.emplace(LlamaModel::load(ctx_, resume_ && full ? ckpt.string() : model_dir_));
  const ModelConfig& mc = model_->config();
  if (streamed) {
    StreamOptions so;
    so.layers_per_chunk = std::min<int64_t>(std::max<int64_t>(per_chunk, 1), mc.num_hidden_layers);
    so.head_granule = kHeadGranule;
    so.offload_activations = plan_ && plan_->streamed && plan_->activations_on_host;
    so.activation_layers_on_device = so.offload_activations ? plan_->activation_layers_on_device : 0;
    stream_.emplace(ctx_, *model_, so);
    if (cfg_.trace) {
      trace_.emplace(ctx_.device());
      stream_->streamer().set_trace(&*trace_);
    }
  }
  ONN_CHECK_ARG(cfg_.seq_len <= mc.max_position_embeddings, "--seq-len ", cfg_.seq_len,
                " is longer than the model's max_position_embeddings ", mc.max_position_embeddings);
  if (full) {
    grads_.emplace(make_gradients(ctx_, *model_, nullptr));
    const auto weights = named_weights(mc, model_->weights());
    const auto grads = named_weights(mc, *grads_->full);
    const DType master = lora_master_dtype(model_->dtype());
    for (size_t i = 0; i < weights.size(); ++i) {
      Param p;
      p.name = weights[i].first;
      if (weights[i].second.dtype() == master) {
        p.value = weights[i].second;
      } else {
        p.value = Tensor::empty(weights[i].second.shape(), master, ctx_.allocator());
        cast(ctx_, weights[i].second, p.value);
        p.copy = weights[i].second;
      }
      p.grad = grads[i].second;
      p.decay = p.value.rank() >= 2;
      params_.push_back(std::move(p));
    }
  } else {
    adapter_ = resume_ ? load_peft_adapter(ctx_, *model_, (ckpt / "adapter").string())
                       : make_lora_adapter(ctx_, *model_, cfg_.lora, cfg_.seed);
    grads_.emplace(make_gradients(ctx_, *model_, &adapter_));
    for (size_t i = 0; i < adapter_.modules.size(); ++i) {
      LoraModule& m = adapter_.modules[i];
      const std::string key = "base_model.model.model.layers." + std::to_string(m.layer) + "." + m.name;
      for (int ab = 0; ab < 2; ++ab) {
        Param p;
        p.name = key + (ab == 0 ? ".lora_A.weight" : ".lora_B.weight");
        p.value = ab == 0 ? m.a : m.b;
        const Tensor& c = ab == 0 ? m.a_c : m.b_c;
        if (c.data() != p.value.data()) p.copy = c;
        p.grad = ab == 0 ? grads_->lora.modules[i].a : grads_->lora.modules[i].b;
        params_.push_back(std::move(p));
      }
    }
  }
  // AdamW's moments: LoRA's many small tensors packed into one allocation per moment (as the
  // adapter and its gradients are; the planner counts them so), full training's one each.
  std::vector<std::pair<Shape, DType>> specs;
  for (const Param& p : params_) specs.emplace_back(p.value.shape(), p.value.dtype());
  for (Tensor Param::*moment : {&Param::m, &Param::v}) {
    std::vector<Tensor> t;
    if (!full) t = Tensor::empty_packed(specs, ctx_.allocator());
    for (size_t i = 0; i < params_.size(); ++i) {
      Tensor& x = params_[i].*moment;
      x = full ? Tensor::empty(specs[i].first, specs[i].second, ctx_.allocator()) : t[i];
      x.fill_bytes(0, &ctx_.compute());
    }
  }

  // Length: --steps, or every micro-batch of --epochs epochs once.
  if (cfg_.steps > 0) {
    total_steps_ = cfg_.steps;
  } else {
    PackOptions po;
    po.seq_len = cfg_.seq_len;
    po.micro_batch = cfg_.micro_batch;
    po.packing = cfg_.packing;
    int64_t micro = 0;
    for (int64_t e = 0; e < cfg_.epochs; ++e)
      micro += static_cast<int64_t>(plan_epoch(train_, train_docs_, po, cfg_.seed, e).size());
    total_steps_ = std::max<int64_t>(1, micro / cfg_.grad_accum);
  }
  if (resume_) load_checkpoint(ckpt);

  // The run's configuration, before any step: --resume reads it back.
  fs::create_directories(ckpts);
  for (const auto& e : fs::directory_iterator(ckpts))  // a checkpoint a kill interrupted
    if (e.path().filename().string().ends_with(".tmp")) fs::remove_all(e.path());
  if (!resume_) write_text(out / "run_config.json", cfg_.to_json().dump(2) + "\n");

  int64_t total_params = 0;
  for (const auto& [name, t] : named_weights(mc, model_->weights())) total_params += t.numel();
  int64_t trainable = 0;
  for (const Param& p : params_) trainable += p.value.numel();
  nlohmann::ordered_json skipped = report.skipped;
  events_({{"type", "init"},
           {"model", model_dir_},
           {"architecture", mc.architecture},
           {"device", ctx_.device().str()},
           {"dtype", std::string(dtype_name(model_->dtype()))},
           {"mode", full ? "full" : "lora"},
           {"parameters_total", total_params},
           {"parameters_trainable", trainable},
           {"steps", total_steps_},
           {"resumed_at", step_},
           {"data", {{"records", report.records}, {"skipped_records", skipped}, {"from_cache", cached},
                     {"train_documents", train_docs_.size()}, {"val_documents", val_docs_.size()},
                     {"target_tokens", train_.target_tokens()}, {"truncated", train_.truncated}}},
           {"plan", run_plan_json()},
           {"config", cfg_.to_json()}});
}

double Trainer::evaluate() {
  if (val_docs_.empty()) return -1;
  PackOptions po;
  po.seq_len = cfg_.seq_len;
  po.micro_batch = cfg_.micro_batch;
  po.packing = cfg_.packing;
  po.shuffle = false;
  const auto batches = plan_epoch(val_corpus_, val_docs_, po, 0, 0);
  int64_t total = 0;
  for (const auto& b : batches) total += batch_target_tokens(val_corpus_, b);
  if (total == 0) return -1;
  double loss = 0;
  PassOptions opt = pass_options();
  opt.loss_tokens = total;
  for (const auto& b : batches) loss += forward_loss(ctx_, *model_, make_batch(ctx_, val_corpus_, b), opt);
  return loss;
}

void Trainer::save_weights(const fs::path& dir) {
  if (cfg_.full) {
    std::vector<std::pair<std::string, Tensor>> t;
    for (const Param& p : params_) t.emplace_back(p.name, p.value);
    write_safetensors((dir / "model.safetensors").string(), t, {{"format", "pt"}, {"producer", "onn-train"}});
    copy_model_files(model_dir_, dir);
    // The weights are F32 masters.
    nlohmann::json c = read_json_file((dir / "config.json").string());
    c["torch_dtype"] = "float32";
    write_text(dir / "config.json", c.dump(2) + "\n");
  } else {
    save_peft_adapter(adapter_, model_->config(), dir.string(), fs::absolute(model_dir_).string());
  }
}

void Trainer::save_checkpoint() {
  const fs::path ckpts = fs::path(cfg_.out_dir) / "checkpoints";
  const std::string name = step_name(step_);
  const fs::path tmp = ckpts / (name + ".tmp"), final_dir = ckpts / name;
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  save_weights(cfg_.full ? tmp : tmp / "adapter");
  std::vector<std::pair<std::string, Tensor>> opt;
  for (const Param& p : params_) {
    opt.emplace_back(p.name + ".exp_avg", p.m);
    opt.emplace_back(p.name + ".exp_avg_sq", p.v);
  }
  write_safetensors((tmp / "optimizer.safetensors").string(), opt, {{"optimizer", "adamw"}});
  const nlohmann::ordered_json state = {
      {"step", step_},
      {"optimizer_steps", optimizer_steps_},
      {"epoch", epoch_},
      {"data_position", cursor_},
      {"skipped_steps", skipped_},
      {"bad_steps_in_row", bad_in_row_},
      {"last_loss", last_loss_},
      {"val_loss", val_loss_},
      {"total_steps", total_steps_},
      {"lr", learning_rate(cfg_, std::max<int64_t>(0, step_ - 1), total_steps_)},
      // Every random choice is a counter-based function of the seed: nothing else to restore.
      {"rng", {{"seed", cfg_.seed},
               {"data_order", "counter_hash(seed, epoch)"},
               {"lora_dropout", "counter_hash(counter_hash(seed, step * grad_accum + micro), layer * 8 + module)"},
               {"lora_init", "counter_hash(seed, module)"}}},
      {"config", cfg_.to_json()}};
  write_text(tmp / "trainer_state.json", state.dump(2) + "\n");
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  write_text(ckpts / "latest", name + "\n");  // last: a checkpoint counts once complete
  // Keep the last K.
  std::vector<fs::path> all;
  for (const auto& e : fs::directory_iterator(ckpts)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.starts_with("step-") && !n.ends_with(".tmp")) all.push_back(e.path());
  }
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i + static_cast<size_t>(cfg_.keep_last) < all.size(); ++i) fs::remove_all(all[i]);
  events_({{"type", "checkpoint"}, {"step", step_}, {"path", final_dir.string()}});
}

void Trainer::load_checkpoint(const fs::path& dir) {
  const nlohmann::json state = read_json_file((dir / "trainer_state.json").string());
  try {
    step_ = state.at("step");
    optimizer_steps_ = state.at("optimizer_steps");
    epoch_ = state.at("epoch");
    cursor_ = state.at("data_position");
    skipped_ = state.at("skipped_steps");
    bad_in_row_ = state.at("bad_steps_in_row");
    last_loss_ = state.at("last_loss");
    val_loss_ = state.at("val_loss");
  } catch (const nlohmann::json::exception& e) {
    throw FormatError((dir / "trainer_state.json").string() + ": " + e.what());
  }
  const std::string opt_path = (dir / "optimizer.safetensors").string();
  const SafetensorsFile opt = SafetensorsFile::open(opt_path);
  for (Param& p : params_) {
    for (auto [suffix, t] : {std::pair<const char*, Tensor*>{".exp_avg", &p.m}, {".exp_avg_sq", &p.v}}) {
      const Tensor h = opt.tensor(p.name + suffix);
      if (!(h.shape() == t->shape()) || h.dtype() != t->dtype())
        throw FormatError(opt_path + ": tensor \"" + p.name + suffix + "\" does not match the model");
      t->copy_from(h, &ctx_.compute());
      ctx_.compute().synchronize();
    }
  }
}

TrainResult Trainer::run() {
  setup();
  // Opened once the run is known to be valid, so a refused run writes nothing.
  tb_ = std::make_unique<TensorBoardWriter>((fs::path(cfg_.out_dir) / "tensorboard").string());
  energy_.emplace(ctx_.device());
  using clock = std::chrono::steady_clock;
  const int64_t save_every = cfg_.save_every, eval_every = cfg_.eval_every;
  while (step_ < total_steps_) {
    if (stream_) stream_->streamer().reset_stats();
    if (trace_) trace_->begin(ctx_.compute());  // the device is idle: the last step ended synchronised
    const auto t0 = clock::now();
    const double j0 = energy_->joules();
    std::vector<std::vector<int64_t>> micro;
    int64_t targets = 0, tokens = 0;
    for (int64_t i = 0; i < cfg_.grad_accum; ++i) {
      micro.push_back(next_micro_batch());
      targets += batch_target_tokens(train_, micro.back());
      for (int64_t d : micro.back()) tokens += train_.length(d);
    }
    zero_gradients(ctx_, *grads_);
    double loss = 0;
    Tensor losses;  // one per micro-batch, on the device until the step's one wait
    if (targets > 0) {
      // Batches first (their uploads wait for the device, idle now), then the passes back to
      // back: none waits for the device, so a streamed pass's copies overlap the one before.
      std::vector<TrainBatch> batches;
      for (const std::vector<int64_t>& docs : micro) batches.push_back(make_batch(ctx_, train_, docs));
      losses = Tensor::empty(Shape{static_cast<int64_t>(micro.size())}, loss_dtype(model_->dtype()), ctx_.allocator());
      std::vector<Tensor> outs(micro.size());
      std::vector<PassOptions> opts;
      for (size_t i = 0; i < micro.size(); ++i) {
        PassOptions opt = pass_options();
        opt.recompute = cfg_.recompute;
        opt.dropout_seed = counter_hash(cfg_.seed, static_cast<uint64_t>(step_ * cfg_.grad_accum) + i);
        opt.loss_tokens = targets;
        outs[i] = losses.slice(static_cast<int64_t>(i), static_cast<int64_t>(i) + 1);
        opt.loss_out = &outs[i];
        opts.push_back(opt);
      }
      // Streamed with micro-batches per load: each group of them shares every weight load.
      const size_t per_load = static_cast<size_t>(std::max<int64_t>(per_load_, 1));
      forward_backward_groups(ctx_, *model_, batches, *grads_, opts, per_load);
    }
    std::vector<const Tensor*> gp;
    for (const Param& p : params_) gp.push_back(&p.grad);
    const double norm = targets > 0 ? global_grad_norm(ctx_, gp) : 0.0;  // waits for the passes
    if (losses.defined()) {  // summed on the host in micro-batch order, as each pass returned it
      ctx_.synchronize();
      const Tensor host = losses.to(Device::cpu());
      for (int64_t i = 0; i < host.numel(); ++i) loss += load_as_double(host.data(), host.dtype(), static_cast<size_t>(i));
    }
    const double lr = learning_rate(cfg_, step_, total_steps_);
    const bool bad = !std::isfinite(loss) || !std::isfinite(norm);
    if (bad) {
      ++skipped_;
      ++bad_in_row_;
    } else if (targets > 0) {
      bad_in_row_ = 0;
      ++optimizer_steps_;
      AdamWConfig ac;
      ac.lr = lr;
      ac.beta1 = cfg_.beta1;
      ac.beta2 = cfg_.beta2;
      ac.eps = cfg_.eps;
      ac.step = optimizer_steps_;
      ac.grad_scale = clip_scale(norm, cfg_.max_grad_norm);
      for (Param& p : params_) {
        ac.weight_decay = p.decay ? cfg_.weight_decay : 0.0;
        adamw_step(ctx_, p.value, p.grad, p.m, p.v, ac, p.copy.defined() ? &p.copy : nullptr);
      }
      last_loss_ = loss;
    }
    ctx_.synchronize();
    ++step_;
    const double ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
    const double tokens_per_s = ms > 0 ? static_cast<double>(tokens) * 1000.0 / ms : 0.0;
    nlohmann::ordered_json joules = nullptr, j_per_token = nullptr;
    if (energy_->available()) {
      const double j = energy_->joules() - j0;
      energy_j_ += j;
      energy_tokens_ += tokens;
      joules = j;
      if (tokens > 0) j_per_token = j / static_cast<double>(tokens);
    }
    events_(nlohmann::ordered_json{{"type", "step"},
             {"step", step_},
             {"loss", bad ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(loss)},
             {"lr", lr},
             {"grad_norm", std::isfinite(norm) ? nlohmann::ordered_json(norm) : nlohmann::ordered_json(nullptr)},
             {"tokens", tokens},
             {"tokens_per_s", tokens_per_s},
             {"ms", ms},
             {"mem_bytes", device_peak_bytes()},
             {"stream", stream_json()},
             {"energy_j", joules},
             {"j_per_token", j_per_token},
             {"epoch", epoch_},
             {"skipped", bad}});
    if (!bad) {
      tb_->scalar("train/loss", step_, loss);
      tb_->scalar("train/grad_norm", step_, norm);
    }
    tb_->scalar("train/lr", step_, lr);
    tb_->scalar("train/tokens_per_s", step_, tokens_per_s);
    if (!joules.is_null()) tb_->scalar("train/energy_j", step_, joules.get<double>());
    if (bad && bad_in_row_ >= cfg_.max_bad_steps) {
      const fs::path latest = fs::path(cfg_.out_dir) / "checkpoints" / "latest";
      std::error_code ec;
      throw Error("training stopped: " + std::to_string(bad_in_row_) +
                  " steps in a row had a NaN or Inf loss or gradient" +
                  (fs::exists(latest, ec) ? "; the last good checkpoint is in " + latest.parent_path().string()
                                          : std::string("; no checkpoint was written yet")));
    }
    const bool last = step_ == total_steps_;
    if ((eval_every > 0 && step_ % eval_every == 0) || last) {
      val_loss_ = evaluate();
      if (val_loss_ >= 0) {
        events_({{"type", "val"}, {"step", step_}, {"loss", val_loss_}, {"perplexity", std::exp(val_loss_)}});
        tb_->scalar("val/loss", step_, val_loss_);
        tb_->scalar("val/perplexity", step_, std::exp(val_loss_));
      }
    }
    if (cfg_.write_outputs && !bad && ((save_every > 0 && step_ % save_every == 0) || last)) save_checkpoint();
  }
  TrainResult r;
  r.steps = step_;
  r.skipped_steps = skipped_;
  r.last_loss = last_loss_;
  r.val_loss = val_loss_;
  if (energy_->available()) {
    r.energy_j = energy_j_;
    r.energy_j_per_token = energy_tokens_ > 0 ? energy_j_ / static_cast<double>(energy_tokens_) : -1;
  }
  r.tensorboard = tb_->path();
  if (cfg_.write_outputs) {
    const fs::path out = fs::path(cfg_.out_dir) / (cfg_.full ? "model" : "adapter");
    fs::create_directories(out);
    save_weights(out);
    r.output = out.string();
  }
  return r;
}

}  // namespace

TrainResult train(const TrainConfig& cfg, bool resume, const EventSink& events) {
  Trainer t(cfg, resume, events);
  return t.run();
}

}  // namespace onn
