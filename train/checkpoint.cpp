// Checkpoints of a training run (train/checkpoint.h).
#include "train/checkpoint.h"

#include <algorithm>
#include <cstdio>

#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/safetensors.h"

namespace onn {

namespace fs = std::filesystem;

namespace {

// Keeps the last `keep` complete checkpoints.
void prune(const fs::path& ckpts, int64_t keep) {
  std::vector<fs::path> all;
  for (const auto& e : fs::directory_iterator(ckpts)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.starts_with("step-") && !n.ends_with(".tmp")) all.push_back(e.path());
  }
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) fs::remove_all(all[i]);
}

}  // namespace

fs::path checkpoint_dir(const fs::path& run_dir, int64_t step) {
  char b[32];
  std::snprintf(b, sizeof b, "step-%08lld", static_cast<long long>(step));
  return run_dir / "checkpoints" / b;
}

fs::path latest_checkpoint(const fs::path& run_dir) {
  const fs::path ckpts = run_dir / "checkpoints", latest = ckpts / "latest";
  std::error_code ec;
  if (!fs::exists(latest, ec)) return {};
  std::string name = read_file(latest.string(), 256);
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  return ckpts / name;
}

void remove_interrupted_checkpoints(const fs::path& run_dir) {
  const fs::path ckpts = run_dir / "checkpoints";
  fs::create_directories(ckpts);
  for (const auto& e : fs::directory_iterator(ckpts))
    if (e.path().filename().string().ends_with(".tmp")) fs::remove_all(e.path());
}

fs::path save_checkpoint(const fs::path& run_dir, const CheckpointWrite& w) {
  const fs::path final_dir = checkpoint_dir(run_dir, w.state.step), ckpts = final_dir.parent_path();
  const fs::path tmp = ckpts / (final_dir.filename().string() + ".tmp");
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  w.write_weights(tmp);
  std::vector<std::pair<std::string, Tensor>> opt;
  for (const Param& p : *w.params) {
    opt.emplace_back(p.name + ".exp_avg", p.m);
    opt.emplace_back(p.name + ".exp_avg_sq", p.v);
  }
  write_safetensors((tmp / "optimizer.safetensors").string(), opt, {{"optimizer", "adamw"}});
  const RunState& s = w.state;
  nlohmann::ordered_json state = {{"step", s.step},
                                  {"optimizer_steps", s.optimizer_steps},
                                  {"epoch", s.epoch},
                                  {"data_position", s.data_position},
                                  {"skipped_steps", s.skipped_steps},
                                  {"bad_steps_in_row", s.bad_steps_in_row},
                                  {"last_loss", s.last_loss},
                                  {"val_loss", s.val_loss}};
  for (const auto& [key, value] : w.extra.items()) state[key] = value;
  write_file_atomic((tmp / "trainer_state.json").string(), state.dump(2) + "\n");
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  // Last: a checkpoint counts once complete.
  write_file_atomic((ckpts / "latest").string(), final_dir.filename().string() + "\n");
  prune(ckpts, w.keep_last);
  return final_dir;
}

RunState load_checkpoint(Context& ctx, const fs::path& dir, std::vector<Param>& params) {
  const nlohmann::json j = read_json_file((dir / "trainer_state.json").string());
  RunState s;
  try {
    s.step = j.at("step");
    s.optimizer_steps = j.at("optimizer_steps");
    s.epoch = j.at("epoch");
    s.data_position = j.at("data_position");
    s.skipped_steps = j.at("skipped_steps");
    s.bad_steps_in_row = j.at("bad_steps_in_row");
    s.last_loss = j.at("last_loss");
    s.val_loss = j.at("val_loss");
  } catch (const nlohmann::json::exception& e) {
    throw FormatError((dir / "trainer_state.json").string() + ": " + e.what());
  }
  const std::string opt_path = (dir / "optimizer.safetensors").string();
  const SafetensorsFile opt = SafetensorsFile::open(opt_path);
  for (Param& p : params) {
    for (auto [suffix, t] : {std::pair<const char*, Tensor*>{".exp_avg", &p.m}, {".exp_avg_sq", &p.v}}) {
      const Tensor h = opt.tensor(p.name + suffix);
      if (!(h.shape() == t->shape()) || h.dtype() != t->dtype())
        throw FormatError(opt_path + ": tensor \"" + p.name + suffix + "\" does not match the model");
      t->copy_from(h, &ctx.compute());
      ctx.compute().synchronize();
    }
  }
  return s;
}

}  // namespace onn
