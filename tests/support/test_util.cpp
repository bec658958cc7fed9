// Test helpers.
#include "support/test_util.h"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <spawn.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <stdexcept>

extern char** environ;

namespace onn::test {

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "onn-test-XXXXXX").string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

namespace {

pid_t last_child = 0;  // the process spawn_and_wait is waiting for (a zombie until reaped)

// Spawns argv with stdin from `stdin_path`, stdout and stderr into files; `feed` runs while
// the child does.
ProcessResult spawn_and_wait(const std::vector<std::string>& argv, const char* stdin_path,
                             const std::function<void()>& feed) {
  TempDir dir;
  const std::string out_path = dir.file("stdout"), err_path = dir.file("stderr");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, stdin_path, O_RDWR | O_NOCTTY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("posix_spawn " + argv[0] + ": " + std::strerror(rc));
  last_child = pid;
  if (feed) feed();
  int status = 0;
  struct rusage usage {};
  ::wait4(pid, &status, 0, &usage);
  ProcessResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  r.max_rss_kb = usage.ru_maxrss;
  auto slurp = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  r.out = slurp(out_path);
  r.err = slurp(err_path);
  return r;
}

}  // namespace

ProcessResult run_process(const std::vector<std::string>& argv) { return spawn_and_wait(argv, "/dev/null", {}); }

ProcessResult run_process_killed_after(const std::vector<std::string>& argv, int ms) {
  // The feed runs while the child does: sleep, then SIGKILL the newest child if alive.
  return spawn_and_wait(argv, "/dev/null", [ms] {
    ::usleep(static_cast<useconds_t>(ms) * 1000);
    ::kill(last_child, SIGKILL);
  });
}

namespace {

// Every process whose parent chain reaches `root` (from /proc), root first.
std::vector<pid_t> process_tree(pid_t root) {
  std::vector<std::pair<pid_t, pid_t>> parent_of;  // (pid, ppid)
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    const size_t close = line.rfind(')');  // "pid (comm) state ppid ..."
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(line.c_str() + close + 1, " %c %d", &state, &ppid) == 2)
      parent_of.emplace_back(static_cast<pid_t>(std::stoi(name)), static_cast<pid_t>(ppid));
  }
  std::vector<pid_t> tree = {root};
  for (size_t i = 0; i < tree.size(); ++i)
    for (const auto& [pid, ppid] : parent_of)
      if (ppid == tree[i]) tree.push_back(pid);
  return tree;
}

}  // namespace

ProcessResult run_job_killed_after(const std::vector<std::string>& argv, int ms) {
  return spawn_and_wait(argv, "/dev/null", [ms] {
    ::usleep(static_cast<useconds_t>(ms) * 1000);
    for (pid_t p : process_tree(last_child)) ::kill(p, SIGKILL);
  });
}

ProcessResult run_job_member_killed_after(const std::vector<std::string>& argv, int ms) {
  return spawn_and_wait(argv, "/dev/null", [ms] {
    ::usleep(static_cast<useconds_t>(ms) * 1000);
    const std::vector<pid_t> tree = process_tree(last_child);
    if (tree.size() > 1) ::kill(tree.back(), SIGKILL);
  });
}

ProcessResult run_in_terminal(const std::vector<std::string>& argv, const std::string& input) {
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0)
    throw std::runtime_error(std::string("cannot open a pseudo-terminal: ") + std::strerror(errno));
  const std::string slave = ::ptsname(master);
  // Canonical mode: each line reaches the child when its newline is typed, and Ctrl-D at the
  // start of a line is end-of-file. The echo is turned off so the master needs no draining.
  termios tio{};
  const int s = ::open(slave.c_str(), O_RDWR | O_NOCTTY);
  if (s < 0 || ::tcgetattr(s, &tio) != 0) throw std::runtime_error("cannot configure " + slave);
  tio.c_lflag |= ICANON;
  tio.c_lflag &= ~static_cast<tcflag_t>(ECHO | ECHONL);
  ::tcsetattr(s, TCSANOW, &tio);
  const ProcessResult r = spawn_and_wait(argv, slave.c_str(), [&] {
    const std::string all = input + "\x04";
    for (size_t done = 0; done < all.size();) {
      const ssize_t n = ::write(master, all.data() + done, all.size() - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
  });
  ::close(s);
  ::close(master);
  return r;
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

KilledRunResult run_killed_and_resumed(const KilledRun& k, const std::string& out, int max_delay_ms,
                                       std::mt19937& rng) {
  KilledRunResult result;
  for (int round = 0; round < 8 && result.kills == 0; ++round, max_delay_ms = std::max(1, max_delay_ms / 2)) {
    std::filesystem::remove_all(out);
    std::filesystem::remove(out + ".log");
    result.finished = false;
    for (int attempt = 0; attempt < k.attempts && !result.finished; ++attempt) {
      const bool resume = attempt > 0 && std::filesystem::exists(out + "/run_config.json");
      const std::vector<std::string> argv = resume ? k.resume(out) : k.start(out);
      const int delay = std::uniform_int_distribution<int>(0, max_delay_ms)(rng);
      const ProcessResult r = result.kills < k.max_kills && attempt < k.kill_attempts ? k.killed_after(argv, delay)
                                                                                       : run_process(argv);
      if (r.exit_code == -9) {
        ++result.kills;
        continue;
      }
      CHECK_MESSAGE(r.exit_code == 0, r.err);
      if (k.clean_stderr) CHECK(r.err.find("error") == std::string::npos);
      result.finished = r.exit_code == 0;
    }
  }
  return result;
}

}  // namespace onn::test
