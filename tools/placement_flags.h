// The placement flags, defined once for every binary that runs a model: --vram-budget,
// --stream, --layers-per-chunk, (training) --share-loads, and --plan with --host-ram. They fill
// plan/placement.h's PlacementFlags, enums and all.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "plan/placement.h"

namespace onn::tools {

// What the flags' help says the budget applies to ("generation", "the run", ...) and whether
// the training-only --share-loads is offered.
struct PlacementFlagUse {
  std::string what;
  bool training = false;
};
void add_placement_flags(CLI::App& app, PlacementFlags& f, const PlacementFlagUse& use);

// --plan (with `plan_help`) and --host-ram, which only --plan takes (check_host_ram refuses it
// otherwise).
void add_plan_flags(CLI::App& app, bool& plan, PlacementFlags& f, const std::string& plan_help);
void check_host_ram(const PlacementFlags& f, bool plan);

}  // namespace onn::tools
