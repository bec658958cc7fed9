// What every ONN binary shares: --version, parse errors as one line and exit 2, and the
// mapping of exceptions to exit codes (2: bad usage or input; 1: runtime failure).
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

#include "runtime/device.h"

namespace onn::tools {

// --device: "cpu", "cuda" or "cuda:N"; empty means cuda when a device exists, else cpu.
onn::Device device_from_flag(const std::string& flag);

// The "text" field of each non-empty line of a JSONL file; errors name "file:line".
std::vector<std::string> read_jsonl_texts(const std::string& path);

// Newlines flattened, so an error is one line on stderr.
std::string one_line(std::string s);

// This process's rank in a distributed run (0 otherwise). Rank r > 0 prefixes its error lines
// with "rank r: " and prints nothing for onn::RanksDisagree, which rank 0 prints for all.
void set_cli_rank(int rank);

// Adds --version to `app`, parses argv and runs `body`, returning its exit code. Errors print
// "NAME: error: ..." on one line.
int run_cli(CLI::App& app, const std::string& name, int argc, char** argv, const std::function<int()>& body);

}  // namespace onn::tools
