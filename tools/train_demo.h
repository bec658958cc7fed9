// onn-train --demo: a small model trained from scratch on synthetic arithmetic (held-out
// exact-match accuracy, a few generations), then a LoRA fine-tune of it on a second task.
#pragma once

#include <string>

namespace onn::tools {

// Runs the demo into out_dir (default: a fresh ./onn-demo folder); returns the exit code.
int run_train_demo(const std::string& out_dir, const std::string& device, bool json);

}  // namespace onn::tools
