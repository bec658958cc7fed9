// A run's checkpoints: RUN_DIR/checkpoints/step-N/ holds the trained weights (adapter/ or the
// model's files), optimizer.safetensors (AdamW's moments) and trainer_state.json (the run
// state). Each is written under a temporary name and renamed, then `latest` names it (a
// checkpoint counts once complete), and only the last keep_last stay.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "runtime/context.h"
#include "runtime/json.h"
#include "runtime/tensor.h"

namespace onn {

// A trained tensor with its gradient, AdamW moments and compute copy.
struct Param {
  std::string name;  // its key in the weights file and (with .exp_avg / .exp_avg_sq) the optimizer's
  Tensor value;      // F32 master (the model weight itself on the CPU)
  Tensor copy;       // the compute-dtype weight refreshed by AdamW, or undefined
  Tensor grad;
  Tensor m, v;
  bool decay = true;
};

// Where a run stands (trainer_state.json): with the seed, all a resumed run needs to continue
// the same run, since every random choice is a counter-based function of the seed.
struct RunState {
  int64_t step = 0, optimizer_steps = 0, epoch = 0, data_position = 0, skipped_steps = 0, bad_steps_in_row = 0;
  double last_loss = 0, val_loss = -1;
};

// RUN_DIR/checkpoints/step-00000042
std::filesystem::path checkpoint_dir(const std::filesystem::path& run_dir, int64_t step);
// The checkpoint `latest` names; empty when the run has none yet.
std::filesystem::path latest_checkpoint(const std::filesystem::path& run_dir);
// Removes what a kill left of a checkpoint being written.
void remove_interrupted_checkpoints(const std::filesystem::path& run_dir);

struct CheckpointWrite {
  RunState state;
  const std::vector<Param>* params = nullptr;
  nlohmann::ordered_json extra;  // more fields of trainer_state.json (the schedule, the config)
  // Writes the trained weights into the checkpoint's folder.
  std::function<void(const std::filesystem::path& dir)> write_weights;
  int64_t keep_last = 2;
};
// Writes checkpoint `state.step` of the run in run_dir and returns its folder.
std::filesystem::path save_checkpoint(const std::filesystem::path& run_dir, const CheckpointWrite& w);

// The run state and AdamW's moments (into params' m and v, on ctx's device) from a checkpoint
// folder; FormatError naming the file when either does not match the run.
RunState load_checkpoint(Context& ctx, const std::filesystem::path& dir, std::vector<Param>& params);

}  // namespace onn
