// The trainer: LoRA or full training of a Hugging Face model folder (or one initialised from
// an onn-init preset) on a dataset, with AdamW, a warmup + decay schedule, gradient
// accumulation and clipping, evaluation, NaN/Inf step skipping, and checkpoints that resume
// the same run exactly (same batches, same dropout masks, bitwise on the CPU).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "model/chat.h"
#include "model/lora.h"
#include "runtime/comm.h"
#include "runtime/json.h"
#include "plan/placement.h"
#include "plan/planner.h"

namespace onn {

// The learning rate after warmup: cosine or linear decay to min_lr, or constant.
enum class Schedule { cosine, linear, constant };
// "cosine", "linear", "constant"; InvalidArgument naming --schedule otherwise.
Schedule parse_schedule(const std::string& name);
const char* schedule_name(Schedule s);

struct TrainConfig {
  // What and where.
  std::string model_dir;    // an HF folder; or empty with init_preset
  std::string init_preset;  // train from scratch: an onn-init preset (implies full)
  std::string init_tokenizer_text;  // with init_preset: text the tokenizer's merges are learned from
  int64_t init_tokenizer_vocab = 0;
  std::string data, val_data;       // files or folders
  std::string out_dir;
  std::string device;               // "cpu", "cuda[:N]", "" (cuda when present)
  // Model.
  bool full = false;
  LoraSpec lora;
  bool recompute = false;
  // Data.
  int64_t seq_len = 0;      // 0: min(512, the model's max_position_embeddings)
  int64_t micro_batch = 4;  // rows of seq_len per micro-batch
  int64_t grad_accum = 1;
  // Rows per optimizer step for the planner to split: it sets micro_batch (the divisor that
  // fits the budget fastest; among equally fast ones, the split that copies the weights least,
  // then keeps activations on the device, then the largest) and grad_accum. 0: micro_batch and
  // grad_accum as given. Not saved: the split is.
  int64_t batch_rows = 0;
  bool packing = true;
  bool train_on_inputs = false;
  bool skip_bad_records = false;
  std::string data_columns;  // "question=input,answer=output": other names for the record fields
  std::string chat_format;  // "" = the tokenizer's template
  double val_split = 0.0;
  // Length.
  int64_t steps = 0;   // 0: epochs over the data
  int64_t epochs = 1;
  // Optimizer and schedule.
  double lr = 2e-4, min_lr = 0.0, weight_decay = 0.0, max_grad_norm = 1.0;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  int64_t warmup_steps = 0;
  Schedule schedule = Schedule::cosine;
  // Bookkeeping.
  int64_t eval_every = 0;  // 0: at the end only (when there is validation data)
  int64_t save_every = 0;  // 0: at the end only
  int64_t keep_last = 2;
  int64_t max_bad_steps = 5;  // NaN/Inf steps in a row before stopping
  uint64_t seed = 0;
  // Not part of the saved configuration: false skips checkpoints and the final adapter/model
  // (onn-bench times the training loop without writing gigabytes).
  bool write_outputs = true;
  // Where the run is placed (plan/placement.h): --vram-budget (the allocator's budget; 0: the
  // free memory less the margin on CUDA, none on the CPU), --stream (auto: on CUDA the planner
  // decides from the budget, resident on the CPU), --layers-per-chunk (0: the planner's, or 1)
  // and --share-loads (streamed: the step's micro-batches take turns on every weight load, so
  // the weights cross PCIe once per step instead of once per micro-batch; auto: the planner's
  // groups, which may be smaller than the step where all do not fit). Not saved: a resumed run
  // may run under another budget.
  PlacementFlags placement;
  // Streamed runs: each step event's "stream" object also carries the step's timeline
  // ("trace": copies, compute windows, activation copies) and its summary. Not saved.
  bool trace = false;

  // Throws InvalidArgument naming the flag when a field is out of range or two exclude each
  // other.
  void check() const;
  // The whole configuration as JSON (trainer_state.json, the init event) and back.
  nlohmann::ordered_json to_json() const;
  static TrainConfig from_json(const nlohmann::json& j, const std::string& source);
};

// The learning rate of 0-based step `step` of `total`: linear warmup to lr over warmup_steps
// ((step + 1) / warmup_steps of it), then cosine or linear decay to min_lr, or constant.
double learning_rate(const TrainConfig& cfg, int64_t step, int64_t total);

// What the planner is asked for a run of `cfg` on `device` under `budget` (0: the free memory
// less the margin): the run's own split of the batch, or with batch_rows the planner's; the
// placement --stream forces (resident on the CPU unless on). seq_len 0 means the run's
// default, min(512, the model's context).
PlanRequest plan_request(const TrainConfig& cfg, const ModelConfig& model, Device device, uint64_t budget);

// The world a run's steps are split over: {size, backend, micro_batches_per_rank, rows_per_step}
// (the init event's plan and onn-train --plan).
nlohmann::ordered_json world_json(const Communicator& comm, int64_t micro_batch, int64_t grad_accum);

// Events as NDJSON objects: init, step, val, checkpoint, done (error is the caller's).
using EventSink = std::function<void(const nlohmann::ordered_json&)>;

struct TrainResult {
  int64_t steps = 0;          // optimizer steps done in total (this run and before a resume)
  int64_t skipped_steps = 0;  // NaN/Inf
  double last_loss = 0, val_loss = -1;
  std::string output;         // the adapter folder (LoRA) or model folder (full)
  // Device energy of this process's steps (NVML, CUDA only): joules and joules per trained
  // token; negative when the device does not report it.
  double energy_j = -1, energy_j_per_token = -1;
  std::string tensorboard;    // the event file this process wrote
};

// Runs (or, with resume, continues) the training described by cfg. Bad configuration or
// data: InvalidArgument before anything is written to out_dir's checkpoints.
//
// Data parallel with `comm` of N ranks (null: one rank): every rank runs this with the same
// configuration (checked at start: RanksDisagree on every rank otherwise). A step is
// N * grad_accum micro-batches in the seeded order, rank r taking the r-th run of grad_accum;
// the loss counts the whole step's tokens, the gradients are summed over the ranks before
// clipping and AdamW, so the run is the one-rank run with N times the accumulation. Rank 0
// alone writes the run folder (which must be shared by the ranks) and emits events;
// validation batches are shared out. TrainResult is the same on every rank.
TrainResult train(const TrainConfig& cfg, bool resume, const EventSink& events, Communicator* comm = nullptr);

// The configuration a run folder was started with (for --resume RUN_DIR).
TrainConfig load_run_config(const std::string& run_dir);

}  // namespace onn
