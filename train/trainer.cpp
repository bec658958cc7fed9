// The training loop: setup as named steps (nothing is written before the run is known to be
// valid), then optimizer steps with evaluation and checkpoints (train/checkpoint.h).
#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <numeric>

#include "kernels/adamw.h"
#include "kernels/counter_rng.h"
#include "kernels/cross_entropy.h"
#include "kernels/elementwise.h"
#include "kernels/matmul.h"
#include "model/init.h"
#include "model/llama.h"
#include "model/streaming.h"
#include "model/tokenizer.h"
#include "model/training.h"
#include "runtime/allocator.h"
#include "runtime/energy.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/safetensors.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/dataset.h"
#include "train/tensorboard.h"

namespace onn {

namespace fs = std::filesystem;

namespace {

// --init learns its tokenizer's merges from the training text up to this size.
constexpr size_t kInitTokenizerTextBytes = size_t{16} << 20;

Device device_from(const std::string& flag) { return flag.empty() ? default_device() : Device::parse(flag); }

// What one optimizer step did.
struct StepResult {
  double loss = 0, norm = 0;
  int64_t targets = 0, tokens = 0;
  bool bad = false;
  // A run of several ranks: the layers whose gradient sum started in the backward, and the
  // host's wait for the sums once the passes were queued.
  int64_t sums_in_backward = 0;
  double comm_wait_ms = 0;
};

class Trainer {
 public:
  Trainer(const TrainConfig& cfg, bool resume, const EventSink& events, Communicator* comm)
      : cfg_(cfg), resume_(resume), events_(events), ctx_(device_from(cfg.device)),
        own_comm_(comm ? nullptr : local_communicator()), comm_(comm ? *comm : *own_comm_) {}

  TrainResult run();

 private:
  // Setup, in this order.
  void setup();
  void check_run_folder();
  void check_model_config();
  void check_ranks_config();
  void check_ranks_data();
  void write_init_model();
  void load_data(DataReport& report, bool& cached);
  void place();
  void make_full_params();
  void make_lora_params();
  void make_moments();
  void count_steps();
  void emit_init(const DataReport& report, bool cached);
  // A step.
  StepResult train_step();
  std::vector<PassOptions> pass_options(size_t micro_batches, int64_t first, int64_t targets,
                                        std::vector<Tensor>& loss_outs);
  void start_layer_sum(int64_t layer, StepResult& s);
  void sum_over_ranks(StepResult& s);
  void optimizer_step(const StepResult& s, double lr);
  void emit_step(const StepResult& s, double lr, double ms, double joules);
  void after_step(const StepResult& s);
  // Around the steps.
  PackOptions pack_options(bool shuffle) const;
  std::vector<int64_t> next_micro_batch();
  double evaluate();
  void save_weights(const fs::path& dir);
  void save();
  LlamaModel& model() { return *placed_.model; }
  // Rank 0 reports and writes the run folder.
  void emit(const nlohmann::ordered_json& e) {
    if (comm_.lead()) events_(e);
  }
  // Micro-batches per step over all ranks.
  int64_t step_micro_batches() const { return cfg_.grad_accum * comm_.size(); }
  nlohmann::ordered_json run_plan_json() const;
  nlohmann::ordered_json stream_json();
  nlohmann::ordered_json comm_json(const StepResult& s) const;

  TrainConfig cfg_;
  bool resume_;
  const EventSink& events_;
  Context ctx_;
  std::unique_ptr<Communicator> own_comm_;  // one rank, when train() was given none
  Communicator& comm_;
  fs::path out_, ckpt_;  // the run folder; the checkpoint a resumed run continues from
  std::string model_dir_;
  uint64_t budget_ = 0;       // the device allocator's (0: none)
  std::optional<Plan> plan_;  // the planner's, when it was consulted
  PlacementChoice placement_;
  PlacedModel placed_;
  std::optional<StreamTrace> trace_;  // the streamed step's timeline (TrainConfig::trace)
  std::optional<Tokenizer> tok_;
  Corpus train_, val_corpus_;
  std::vector<int64_t> train_docs_, val_docs_;
  LoraAdapter adapter_;
  std::optional<Gradients> grads_;
  std::vector<Param> params_;
  std::vector<bool> layer_summed_;  // this step: the layers whose gradient sum has started
  int64_t total_steps_ = 0;
  RunState st_;  // trainer_state.json
  // This process's measurements (not part of the run state).
  std::unique_ptr<TensorBoardWriter> tb_;
  std::optional<EnergyMeter> energy_;
  double energy_j_ = 0;
  int64_t energy_tokens_ = 0;
  EpochPlan epoch_plan_;
  int64_t planned_epoch_ = -1;
};

PackOptions Trainer::pack_options(bool shuffle) const {
  PackOptions po;
  po.seq_len = cfg_.seq_len;
  po.micro_batch = cfg_.micro_batch;
  po.packing = cfg_.packing;
  po.shuffle = shuffle;
  return po;
}

std::vector<int64_t> Trainer::next_micro_batch() {
  for (;;) {
    if (planned_epoch_ != st_.epoch) {
      epoch_plan_ = plan_epoch(train_, train_docs_, pack_options(true), cfg_.seed, st_.epoch);
      planned_epoch_ = st_.epoch;
    }
    if (st_.data_position < static_cast<int64_t>(epoch_plan_.size())) {
      const std::span<const int64_t> docs = epoch_plan_.batch(static_cast<size_t>(st_.data_position++));
      return {docs.begin(), docs.end()};
    }
    ++st_.epoch;
    st_.data_position = 0;
  }
}

void Trainer::setup() {
  budget_ = apply_budget(ctx_, cfg_.placement.vram_budget);  // a bad --vram-budget before anything else
  cfg_.check();
  out_ = cfg_.out_dir;
  cfg_.full = cfg_.full || !cfg_.init_preset.empty();
  check_run_folder();
  check_model_config();
  check_ranks_config();
  write_init_model();
  DataReport report;
  bool cached = false;
  load_data(report, cached);
  check_ranks_data();
  place();
  if (cfg_.full)
    make_full_params();
  else
    make_lora_params();
  make_moments();
  count_steps();
  if (resume_) st_ = load_checkpoint(ctx_, ckpt_, params_);
  // Every rank has read the checkpoint before rank 0 writes the next (and drops old ones).
  comm_.barrier();
  if (!comm_.lead()) return;
  // The run's configuration, before any step: --resume reads it back.
  remove_interrupted_checkpoints(out_);
  if (!resume_) write_file_atomic((out_ / "run_config.json").string(), cfg_.to_json().dump(2) + "\n");
  emit_init(report, cached);
}

// Every rank must run the same configuration from the same checkpoint; each may run on its
// own device under its own budget (not part of the configuration compared).
void Trainer::check_ranks_config() {
  std::vector<std::pair<std::string, std::string>> fields;
  const nlohmann::ordered_json config = cfg_.to_json();
  for (const auto& [key, value] : config.items())
    if (key != "device") fields.emplace_back(key, value.dump());
  fields.emplace_back("device type", ctx_.device().is_cuda() ? "cuda" : "cpu");
  fields.emplace_back("checkpoint resumed", ckpt_.empty() || !resume_ ? "none" : ckpt_.filename().string());
  check_same_on_all_ranks(comm_, fields, "configuration");
}

// ... and the same tokens: the model's config.json and tokenizer, and the corpus as tokenized.
void Trainer::check_ranks_data() {
  if (comm_.size() == 1) return;
  const fs::path dir(model_dir_);
  std::string model_files = read_file((dir / "config.json").string(), size_t{1} << 26);
  model_files += read_file((dir / "tokenizer.json").string(), size_t{1} << 30);
  check_same_on_all_ranks(comm_,
                          {{"model config.json and tokenizer.json (FNV-1a)", std::to_string(fnv1a(model_files))},
                           {"training tokens (FNV-1a)", std::to_string(train_.fnv1a)},
                           {"validation tokens (FNV-1a)", std::to_string(val_corpus_.fnv1a)},
                           {"training documents", std::to_string(train_docs_.size())},
                           {"validation documents", std::to_string(val_docs_.size())}},
                          "data");
}

// A run killed before its first checkpoint continues by starting again; a new run does not
// overwrite one.
void Trainer::check_run_folder() {
  ckpt_ = latest_checkpoint(out_);
  if (resume_ && ckpt_.empty()) resume_ = false;
  else if (!resume_ && !ckpt_.empty())
    throw InvalidArgument(cfg_.out_dir + " already holds a run; continue it with --resume " + cfg_.out_dir +
                          " or choose another --out");
}

// Everything that can be checked from config.json is, before any data is read or written.
void Trainer::check_model_config() {
  const ModelConfig mc = cfg_.init_preset.empty() ? load_model_config(cfg_.model_dir) : find_preset(cfg_.init_preset).config;
  if (cfg_.seq_len == 0) cfg_.seq_len = std::min<int64_t>(512, mc.max_position_embeddings);
  ONN_CHECK_ARG(cfg_.seq_len <= mc.max_position_embeddings, "--seq-len ", cfg_.seq_len,
                " is longer than the model's max_position_embeddings ", mc.max_position_embeddings);
  if (!cfg_.full) check_lora_spec(mc, cfg_.lora);
  ONN_CHECK_ARG(!cfg_.full || mc.stored_quant == QuantFormat::none, cfg_.model_dir, " is a ",
                quant_format_name(mc.stored_quant), " (bitsandbytes) folder: its frozen base trains LoRA adapters "
                "(QLoRA), not --full");
}

// A from-scratch model (--init) is written into the run folder first (by rank 0), its
// tokenizer learned from the training text.
void Trainer::write_init_model() {
  model_dir_ = cfg_.model_dir;
  if (cfg_.init_preset.empty()) return;
  model_dir_ = (out_ / "init-model").string();
  std::error_code ec;
  if (comm_.lead() && !fs::exists(fs::path(model_dir_) / "config.json", ec)) {
    DataReport r;
    ReadOptions ro;
    ro.skip_bad_records = cfg_.skip_bad_records;
    ro.columns = parse_column_map(cfg_.data_columns);
    std::string text;
    for_each_example(cfg_.data, ro, r, [&](Example& e) {
      text += e.kind == Example::Kind::text ? e.text : e.prompt + e.completion + "\n";
      return text.size() < kInitTokenizerTextBytes;
    });
    InitOptions io;
    io.seed = cfg_.seed;
    io.dtype = DType::f32;
    io.tokenizer_text = text;
    io.tokenizer_vocab = cfg_.init_tokenizer_vocab;
    write_random_model(find_preset(cfg_.init_preset), model_dir_, io);
  }
  comm_.barrier();
}

// The tokenizer, the training corpus (cached in the run folder) and the validation documents.
void Trainer::load_data(DataReport& report, bool& cached) {
  tok_.emplace(Tokenizer::load(model_dir_));
  // Rank 0 tokenizes and writes the cache; the others read it (or tokenize, writing nothing).
  if (!comm_.lead()) comm_.barrier();
  CorpusSource src;
  src.write_cache = comm_.lead();
  src.data = cfg_.data;
  src.model_dir = model_dir_;
  src.cache = (out_ / "data" / "train-corpus").string();
  src.seq_len = cfg_.seq_len;
  src.train_on_inputs = cfg_.train_on_inputs;
  src.chat_format = cfg_.chat_format;
  src.skip_bad_records = cfg_.skip_bad_records;
  src.data_columns = cfg_.data_columns;
  train_ = load_or_tokenize_corpus(src, *tok_, report, cached);
  if (!cfg_.val_data.empty()) {
    DataReport vr;
    bool vc = false;
    src.data = cfg_.val_data;
    src.cache = (out_ / "data" / "val-corpus").string();
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
  if (comm_.lead()) comm_.barrier();
}

// The budget, the plan (with --batch-rows it also splits the batch), resident or streamed, and
// the model loaded there: full training resumes from the checkpoint's weights, LoRA from the
// base model.
void Trainer::place() {
  apply_cpu_matmul(ctx_, cfg_.placement.cpu_matmul);
  const PlanRequest req = plan_request(cfg_, load_model_config(model_dir_), ctx_.device(), budget_);
  plan_ = training_plan(req, cfg_.placement, ctx_.device(), cfg_.batch_rows > 0);
  if (plan_ && cfg_.batch_rows > 0) {
    cfg_.micro_batch = plan_->micro_batch;
    cfg_.grad_accum = plan_->grad_accum;
  }
  placement_ = training_choice(req, cfg_.placement, plan_, cfg_.grad_accum);
  placed_ = load_placed(ctx_, resume_ && cfg_.full ? ckpt_.string() : model_dir_, placement_);
  if (placed_.stream && cfg_.trace) {
    trace_.emplace(ctx_.device());
    placed_.stream->streamer().set_trace(&*trace_);
  }
}

// Full training: every weight, an F32 master beside a lower-precision compute weight (a bf16
// model's; or, on the CPU with --cpu-matmul bf16, the bf16 copies of an F32 model's projections
// and head that its products read).
void Trainer::make_full_params() {
  grads_.emplace(make_gradients(ctx_, model(), nullptr));
  const auto weights = named_weights(model().config(), model().weights());
  const auto grads = named_weights(model().config(), *grads_->full);
  const DType master = lora_master_dtype(model().dtype());
  std::vector<std::pair<Tensor, Tensor>> copies;
  if (cpu_bf16_weights(ctx_.device(), model().dtype(), DType::bf16)) copies = use_bf16_compute_weights(ctx_, model());
  for (size_t i = 0; i < weights.size(); ++i) {
    Param p;
    p.name = weights[i].first;
    if (weights[i].second.dtype() == master) {
      p.value = weights[i].second;
      for (const auto& [f32, bf16] : copies)
        if (f32.data() == p.value.data()) p.copy = bf16;
    } else {
      p.value = Tensor::empty(weights[i].second.shape(), master, ctx_.allocator());
      cast(ctx_, weights[i].second, p.value);
      p.copy = weights[i].second;
    }
    p.grad = grads[i].second;
    p.decay = p.value.rank() >= 2;
    params_.push_back(std::move(p));
  }
}

// LoRA: a fresh adapter, or the checkpoint's; the parameters are its A and B.
void Trainer::make_lora_params() {
  adapter_ = resume_ ? load_peft_adapter(ctx_, model(), (ckpt_ / "adapter").string())
                     : make_lora_adapter(ctx_, model(), cfg_.lora, cfg_.seed);
  grads_.emplace(make_gradients(ctx_, model(), &adapter_));
  for (size_t i = 0; i < adapter_.modules.size(); ++i) {
    LoraModule& m = adapter_.modules[i];
    for (int ab = 0; ab < 2; ++ab) {
      Param p;
      p.name = peft_module_key(m) + (ab == 0 ? ".lora_A.weight" : ".lora_B.weight");
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
void Trainer::make_moments() {
  std::vector<std::pair<Shape, DType>> specs;
  for (const Param& p : params_) specs.emplace_back(p.value.shape(), p.value.dtype());
  for (Tensor Param::*moment : {&Param::m, &Param::v}) {
    std::vector<Tensor> t;
    if (!cfg_.full) t = Tensor::empty_packed(specs, ctx_.allocator());
    for (size_t i = 0; i < params_.size(); ++i) {
      Tensor& x = params_[i].*moment;
      x = cfg_.full ? Tensor::empty(specs[i].first, specs[i].second, ctx_.allocator()) : t[i];
      x.fill_bytes(0, &ctx_.compute());
    }
  }
}

// --steps, or every micro-batch of --epochs epochs once.
void Trainer::count_steps() {
  if (cfg_.steps > 0) {
    total_steps_ = cfg_.steps;
    return;
  }
  int64_t micro = 0;
  for (int64_t e = 0; e < cfg_.epochs; ++e)
    micro += static_cast<int64_t>(plan_epoch(train_, train_docs_, pack_options(true), cfg_.seed, e).size());
  total_steps_ = std::max<int64_t>(1, micro / step_micro_batches());
}

void Trainer::emit_init(const DataReport& report, bool cached) {
  const ModelConfig& mc = model().config();
  const int64_t total_params = parameter_count(mc);
  int64_t trainable = 0;
  for (const Param& p : params_) trainable += p.value.numel();
  nlohmann::ordered_json skipped = report.skipped;
  emit({{"type", "init"},
           {"model", model_dir_},
           {"architecture", mc.architecture},
           {"device", ctx_.device().str()},
           {"dtype", std::string(dtype_name(model().dtype()))},
           {"base", quant_format_name(model().quant_format())},
           {"mode", cfg_.full ? "full" : "lora"},
           {"parameters_total", total_params},
           {"parameters_trainable", trainable},
           {"steps", total_steps_},
           {"resumed_at", st_.step},
           {"data", {{"records", report.records}, {"skipped_records", skipped}, {"from_cache", cached},
                     {"train_documents", train_docs_.size()}, {"val_documents", val_docs_.size()},
                     {"target_tokens", train_.target_tokens()}, {"truncated", train_.truncated}}},
           {"plan", run_plan_json()},
           {"config", cfg_.to_json()}});
}

// What runs: resident or streamed, chunking, the batch; the planner's prediction with it.
nlohmann::ordered_json Trainer::run_plan_json() const {
  const StreamedWeights* s = placed_.stream.get();
  nlohmann::ordered_json j = {{"resident", s == nullptr}, {"micro_batch", cfg_.micro_batch},
                              {"grad_accum", cfg_.grad_accum}, {"seq_len", cfg_.seq_len},
                              {"recompute", cfg_.recompute || s != nullptr}};
  if (s) {
    j["layers_per_chunk"] = s->layers_per_chunk();
    j["chunks"] = s->layer_chunks();
    j["head_slices"] = s->head_slices();
    j["chunk_buffer_bytes"] = s->buffer_bytes();
    j["activations"] = s->offload_activations() ? "host" : "device";
    j["activation_layers_on_device"] = s->activation_layers_on_device();
    j["micro_batches_per_load"] = placement_.micro_batches_per_load;
  }
  const CachingAllocator* caching = ctx_.caching_allocator();
  j["budget_bytes"] = caching ? caching->budget() : 0;
  j["world"] = world_json(comm_, cfg_.micro_batch, cfg_.grad_accum);
  if (plan_) j["planner"] = plan_->to_json();
  return j;
}

// This step's host-to-device streaming (null when resident).
nlohmann::ordered_json Trainer::stream_json() {
  if (!placed_.stream) return nullptr;
  if (trace_) trace_->stop_host_spans();  // the step is over: the waits below are the trace's
  const StreamStats s = placed_.stream->streamer().stats();
  nlohmann::ordered_json j = {{"bytes", s.bytes}, {"transfer_ms", s.copy_ms}, {"compute_ms", s.compute_ms},
                              {"pcie_gbs", s.copy_ms > 0 ? double(s.bytes) / (s.copy_ms * 1e6) : 0.0}};
  if (trace_) {
    const std::vector<TraceSpan> spans = trace_->take();
    j["trace_summary"] = trace_summary_json(summarize_trace(spans));
    j["trace"] = trace_json(spans);
  }
  return j;
}

// This step's gradient sum over the ranks (null for one process).
nlohmann::ordered_json Trainer::comm_json(const StepResult& s) const {
  if (comm_.backend() == CommBackend::local) return nullptr;
  return {{"backend", comm_backend_name(comm_.backend())}, {"sums_in_backward", s.sums_in_backward},
          {"wait_ms", s.comm_wait_ms}};
}

double Trainer::evaluate() {
  if (val_docs_.empty()) return -1;
  const auto batches = plan_epoch(val_corpus_, val_docs_, pack_options(false), 0, 0);
  int64_t total = 0;
  for (size_t i = 0; i < batches.size(); ++i) total += batch_target_tokens(val_corpus_, batches.batch(i));
  if (total == 0) return -1;
  std::vector<Tensor> none;  // evaluation returns its losses
  const PassOptions opt = pass_options(1, 0, total, none)[0];
  // Rank r evaluates the r-th run of batches; the losses are summed in batch order.
  const size_t per_rank = (batches.size() + static_cast<size_t>(comm_.size()) - 1) / static_cast<size_t>(comm_.size());
  const size_t begin = std::min(batches.size(), per_rank * static_cast<size_t>(comm_.rank()));
  std::vector<double> losses;
  for (size_t i = begin; i < std::min(batches.size(), begin + per_rank); ++i)
    losses.push_back(forward_loss(ctx_, model(), make_batch(ctx_, val_corpus_, batches.batch(i)), opt));
  return sum_in_rank_order(comm_, losses);
}

// The step's gradients summed over the ranks (before the norm, clipping and AdamW), bucketed
// by layer: the last pass's backward starts each layer's sum as it leaves the layer
// (start_layer_sum), so the sums overlap the layers below; once the passes are queued, the
// layers not started yet and the rest (embedding, final norm, head) follow, then the wait.
void Trainer::start_layer_sum(int64_t layer, StepResult& s) {
  layer_summed_[static_cast<size_t>(layer)] = true;
  const std::vector<Tensor> grads = layer_gradients(*grads_, layer);
  if (grads.empty()) return;
  comm_.start_all_reduce_sum(ctx_, grads);
  ++s.sums_in_backward;
}

void Trainer::sum_over_ranks(StepResult& s) {
  if (comm_.backend() == CommBackend::local) return;  // a launched run of one rank sums too (mpirun -np 1)
  std::vector<const void*> started;
  for (size_t l = 0; l < layer_summed_.size(); ++l) {
    if (!layer_summed_[l]) comm_.start_all_reduce_sum(ctx_, layer_gradients(*grads_, static_cast<int64_t>(l)));
    for (const Tensor& t : layer_gradients(*grads_, static_cast<int64_t>(l))) started.push_back(t.data());
  }
  std::vector<Tensor> rest;
  for (const Param& p : params_)
    if (std::find(started.begin(), started.end(), p.grad.data()) == started.end()) rest.push_back(p.grad);
  comm_.start_all_reduce_sum(ctx_, rest);
  const auto t0 = std::chrono::steady_clock::now();
  comm_.finish_all_reduce(ctx_);
  s.comm_wait_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

void Trainer::save_weights(const fs::path& dir) {
  if (!cfg_.full) {
    save_peft_adapter(adapter_, model().config(), dir.string(), fs::absolute(model_dir_).string());
    return;
  }
  std::vector<std::pair<std::string, Tensor>> t;
  for (const Param& p : params_) t.emplace_back(p.name, p.value);
  write_safetensors((dir / "model.safetensors").string(), t, {{"format", "pt"}, {"producer", "onn-train"}});
  fs::copy_file(fs::path(model_dir_) / "config.json", dir / "config.json", fs::copy_options::overwrite_existing);
  copy_model_side_files(model_dir_, dir.string());
  // The weights are F32 masters.
  nlohmann::json c = read_json_file((dir / "config.json").string());
  c["torch_dtype"] = "float32";
  write_file_atomic((dir / "config.json").string(), c.dump(2) + "\n");
}

void Trainer::save() {
  CheckpointWrite w;
  w.state = st_;
  w.params = &params_;
  w.keep_last = cfg_.keep_last;
  w.write_weights = [&](const fs::path& dir) { save_weights(cfg_.full ? dir : dir / "adapter"); };
  // Every random choice is a counter-based function of the seed: nothing else to restore.
  w.extra = {{"total_steps", total_steps_},
             {"lr", learning_rate(cfg_, std::max<int64_t>(0, st_.step - 1), total_steps_)},
             {"rng", {{"seed", cfg_.seed},
                      {"data_order", "counter_hash(seed, epoch)"},
                      {"lora_dropout", "counter_hash(counter_hash(seed, step * grad_accum * world_size + micro), "
                                       "layer * 8 + module)"},
                      {"lora_init", "counter_hash(seed, module)"}}},
             {"config", cfg_.to_json()}};
  const fs::path dir = save_checkpoint(out_, w);
  emit({{"type", "checkpoint"}, {"step", st_.step}, {"path", dir.string()}});
}

// Each micro-batch's options: the adapter or full weights, the feed, its dropout seed (from its
// index in the step over all ranks, `first` + i), the step's token count, and where its loss is
// left (loss_outs[i], views of one device tensor).
std::vector<PassOptions> Trainer::pass_options(size_t micro_batches, int64_t first, int64_t targets,
                                               std::vector<Tensor>& loss_outs) {
  std::vector<PassOptions> opts(micro_batches);
  for (size_t i = 0; i < micro_batches; ++i) {
    PassOptions& o = opts[i];
    o.lora = cfg_.full ? nullptr : &adapter_;
    o.stream = placed_.stream.get();
    o.head_granule = placed_.stream ? kLmHeadGranule : 0;
    o.recompute = cfg_.recompute;
    o.dropout_seed = counter_hash(cfg_.seed, static_cast<uint64_t>(st_.step * step_micro_batches() + first) + i);
    o.loss_tokens = targets;
    if (i < loss_outs.size()) o.loss_out = &loss_outs[i];
  }
  return opts;
}

// This rank's micro-batches of the step through forward and backward, the gradients summed
// over the ranks, then the gradient norm; the losses are summed on the host in micro-batch
// order once the device is done. The token counts are the whole step's.
StepResult Trainer::train_step() {
  StepResult s;
  std::vector<std::vector<int64_t>> micro;
  const int64_t first = cfg_.grad_accum * comm_.rank();
  for (int64_t i = 0; i < step_micro_batches(); ++i) {
    std::vector<int64_t> docs = next_micro_batch();
    s.targets += batch_target_tokens(train_, docs);
    for (int64_t d : docs) s.tokens += train_.length(d);
    if (i >= first && i < first + cfg_.grad_accum) micro.push_back(std::move(docs));
  }
  zero_gradients(ctx_, *grads_);
  Tensor losses;  // one per micro-batch, on the device until the step's one wait
  if (s.targets > 0) {
    // Batches first (their uploads wait for the device, idle now), then the passes back to
    // back: none waits for the device, so a streamed pass's copies overlap the one before.
    std::vector<TrainBatch> batches;
    for (const std::vector<int64_t>& docs : micro) batches.push_back(make_batch(ctx_, train_, docs));
    losses = Tensor::empty(Shape{static_cast<int64_t>(micro.size())}, loss_dtype(model().dtype()), ctx_.allocator());
    std::vector<Tensor> outs(micro.size());
    for (size_t i = 0; i < micro.size(); ++i) outs[i] = losses.slice(static_cast<int64_t>(i), static_cast<int64_t>(i) + 1);
    std::vector<PassOptions> opts = pass_options(micro.size(), first, s.targets, outs);
    layer_summed_.assign(static_cast<size_t>(model().config().num_hidden_layers), false);
    if (comm_.backend() != CommBackend::local)
      opts.back().on_layer_gradients = [&](int64_t layer) { start_layer_sum(layer, s); };
    // Streamed with micro-batches per load: each group of them shares every weight load.
    const size_t per_load = static_cast<size_t>(std::max<int64_t>(placement_.micro_batches_per_load, 1));
    forward_backward_groups(ctx_, model(), batches, *grads_, opts, per_load);
    sum_over_ranks(s);
    std::vector<const Tensor*> gp;
    for (const Param& p : params_) gp.push_back(&p.grad);
    s.norm = global_grad_norm(ctx_, gp);  // waits for the passes
    ctx_.synchronize();
    const Tensor host = losses.to(Device::cpu());
    std::vector<double> mine;
    for (int64_t i = 0; i < host.numel(); ++i) mine.push_back(load_as_double(host.data(), host.dtype(), static_cast<size_t>(i)));
    s.loss = sum_in_rank_order(comm_, mine);
  }
  s.bad = !std::isfinite(s.loss) || !std::isfinite(s.norm);
  return s;
}

void Trainer::optimizer_step(const StepResult& s, double lr) {
  if (s.bad) {
    ++st_.skipped_steps;
    ++st_.bad_steps_in_row;
    return;
  }
  if (s.targets == 0) return;
  st_.bad_steps_in_row = 0;
  ++st_.optimizer_steps;
  AdamWConfig ac;
  ac.lr = lr;
  ac.beta1 = cfg_.beta1;
  ac.beta2 = cfg_.beta2;
  ac.eps = cfg_.eps;
  ac.step = st_.optimizer_steps;
  ac.grad_scale = clip_scale(s.norm, cfg_.max_grad_norm);
  for (Param& p : params_) {
    ac.weight_decay = p.decay ? cfg_.weight_decay : 0.0;
    adamw_step(ctx_, p.value, p.grad, p.m, p.v, ac, p.copy.defined() ? &p.copy : nullptr);
  }
  st_.last_loss = s.loss;
}

void Trainer::emit_step(const StepResult& s, double lr, double ms, double joules_step) {
  const double tokens_per_s = ms > 0 ? static_cast<double>(s.tokens) * 1000.0 / ms : 0.0;
  nlohmann::ordered_json joules = nullptr, j_per_token = nullptr;
  if (energy_->available()) {
    energy_j_ += joules_step;
    energy_tokens_ += s.tokens;
    joules = joules_step;
    if (s.tokens > 0) j_per_token = joules_step / static_cast<double>(s.tokens);
  }
  const CachingAllocator* caching = ctx_.caching_allocator();
  emit(nlohmann::ordered_json{{"type", "step"},
                                 {"step", st_.step},
                                 {"loss", s.bad ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(s.loss)},
                                 {"lr", lr},
                                 {"grad_norm", std::isfinite(s.norm) ? nlohmann::ordered_json(s.norm)
                                                                     : nlohmann::ordered_json(nullptr)},
                                 {"tokens", s.tokens},
                                 {"tokens_per_s", tokens_per_s},
                                 {"ms", ms},
                                 {"mem_bytes", caching ? caching->stats().peak_in_use : 0},
                                 {"stream", stream_json()},
                                 {"comm", comm_json(s)},
                                 {"energy_j", joules},
                                 {"j_per_token", j_per_token},
                                 {"epoch", st_.epoch},
                                 {"skipped", s.bad}});
  if (!tb_) return;  // not rank 0
  if (!s.bad) {
    tb_->scalar("train/loss", st_.step, s.loss);
    tb_->scalar("train/grad_norm", st_.step, s.norm);
  }
  tb_->scalar("train/lr", st_.step, lr);
  tb_->scalar("train/tokens_per_s", st_.step, tokens_per_s);
  if (!joules.is_null()) tb_->scalar("train/energy_j", st_.step, joules.get<double>());
}

// Too many bad steps in a row stop the run; then evaluation and a checkpoint when due.
void Trainer::after_step(const StepResult& s) {
  if (s.bad && st_.bad_steps_in_row >= cfg_.max_bad_steps) {
    const fs::path latest = out_ / "checkpoints" / "latest";
    std::error_code ec;
    throw Error("training stopped: " + std::to_string(st_.bad_steps_in_row) +
                " steps in a row had a NaN or Inf loss or gradient" +
                (fs::exists(latest, ec) ? "; the last good checkpoint is in " + latest.parent_path().string()
                                        : std::string("; no checkpoint was written yet")));
  }
  const bool last = st_.step == total_steps_;
  if ((cfg_.eval_every > 0 && st_.step % cfg_.eval_every == 0) || last) {
    st_.val_loss = evaluate();
    if (st_.val_loss >= 0 && tb_) {
      emit({{"type", "val"}, {"step", st_.step}, {"loss", st_.val_loss}, {"perplexity", std::exp(st_.val_loss)}});
      tb_->scalar("val/loss", st_.step, st_.val_loss);
      tb_->scalar("val/perplexity", st_.step, std::exp(st_.val_loss));
    }
  }
  if (comm_.lead() && cfg_.write_outputs && !s.bad && ((cfg_.save_every > 0 && st_.step % cfg_.save_every == 0) || last))
    save();
}

TrainResult Trainer::run() {
  setup();
  // Opened once the run is known to be valid, so a refused run writes nothing.
  if (comm_.lead()) tb_ = std::make_unique<TensorBoardWriter>((out_ / "tensorboard").string());
  energy_.emplace(ctx_.device());
  using clock = std::chrono::steady_clock;
  while (st_.step < total_steps_) {
    if (placed_.stream) placed_.stream->streamer().reset_stats();
    if (trace_) trace_->begin(ctx_.compute());  // the device is idle: the last step ended synchronised
    const auto t0 = clock::now();
    const double j0 = energy_->joules();
    const StepResult s = train_step();
    const double lr = learning_rate(cfg_, st_.step, total_steps_);
    optimizer_step(s, lr);
    ctx_.synchronize();
    ++st_.step;
    const double ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
    emit_step(s, lr, ms, energy_->available() ? energy_->joules() - j0 : 0.0);
    after_step(s);
  }
  TrainResult r;
  r.steps = st_.step;
  r.skipped_steps = st_.skipped_steps;
  r.last_loss = st_.last_loss;
  r.val_loss = st_.val_loss;
  if (energy_->available()) {
    r.energy_j = energy_j_;
    r.energy_j_per_token = energy_tokens_ > 0 ? energy_j_ / static_cast<double>(energy_tokens_) : -1;
  }
  if (tb_) r.tensorboard = tb_->path();
  if (cfg_.write_outputs) {
    const fs::path out = out_ / (cfg_.full ? "model" : "adapter");
    if (comm_.lead()) {
      fs::create_directories(out);
      save_weights(out);
    }
    r.output = out.string();
  }
  comm_.barrier();  // the outputs are written when any rank returns
  return r;
}

}  // namespace

TrainResult train(const TrainConfig& cfg, bool resume, const EventSink& events, Communicator* comm) {
  Trainer t(cfg, resume, events, comm);
  return t.run();
}

}  // namespace onn
