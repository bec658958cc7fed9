// Helpers shared by the doctest suites: temporary folders and running a binary with
// captured output. Random inputs, references and the error measure come from
// kernels/reference.h.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/reference.h"  // random_tensor, references, normalized_error
#include "runtime/tensor.h"

namespace onn::test {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};


struct ProcessResult {
  int exit_code = -1;  // -signal when killed by a signal
  std::string out;
  std::string err;
  int64_t max_rss_kb = 0;  // the process's peak resident memory (getrusage's ru_maxrss)
};
ProcessResult run_process(const std::vector<std::string>& argv);
// As run_process, but the process is killed with SIGKILL after `ms` milliseconds if it is
// still running (exit_code is then -9).
ProcessResult run_process_killed_after(const std::vector<std::string>& argv, int ms);
// As run_process_killed_after, but SIGKILL goes to the process and every descendant at once
// (a launcher such as mpirun and the ranks it started: the whole job).
ProcessResult run_job_killed_after(const std::vector<std::string>& argv, int ms);
// As run_job_killed_after, but SIGKILL goes to one process of the job only: the newest
// descendant of the one started (under mpirun, the last rank started).
ProcessResult run_job_member_killed_after(const std::vector<std::string>& argv, int ms);
// As run_process, but stdin is a pseudo-terminal (isatty is true) that receives `input`,
// followed by end-of-file (Ctrl-D). The terminal's echo of the input is discarded.
ProcessResult run_in_terminal(const std::vector<std::string>& argv, const std::string& input);

// A run into `out` killed with SIGKILL at random moments and resumed until it finishes: the
// first attempt runs start(out), later ones resume(out) once out/run_config.json exists (else
// start again). Attempts before kill_attempts, while fewer than max_kills landed, go through
// killed_after(argv, delay) with a delay drawn from [0, max_delay_ms]; a round in which no
// kill landed (a machine faster than the reference timing) starts again with halved delays.
// Every attempt that is not killed must exit 0 (a doctest CHECK, with stderr as the message;
// with clean_stderr also no "error" on stderr).
struct KilledRun {
  std::function<std::vector<std::string>(const std::string& out)> start, resume;
  std::function<ProcessResult(const std::vector<std::string>& argv, int ms)> killed_after;
  int attempts = 12, kill_attempts = 8, max_kills = 3;
  bool clean_stderr = false;
};
struct KilledRunResult {
  bool finished = false;
  int kills = 0;
};
KilledRunResult run_killed_and_resumed(const KilledRun& k, const std::string& out, int max_delay_ms,
                                       std::mt19937& rng);

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes);

}  // namespace onn::test
