// The short self-check behind `onn-info --self-check` (the README's first command).
#pragma once

#include <ostream>

namespace onn::tools {
// Prints one line per check and a closing "N passed, N failed" line; true when all pass.
bool run_self_check(std::ostream& out);
}  // namespace onn::tools
