// Shared command-line plumbing of the ONN binaries.
#include "tools/cli.h"

#include <fstream>
#include <iostream>

#include "runtime/build_config.h"
#include "runtime/comm.h"
#include "runtime/cuda_backend.h"
#include "runtime/error.h"
#include "runtime/json.h"

namespace onn::tools {

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

onn::Device device_from_flag(const std::string& flag) {
  if (flag.empty()) return default_device();
  const Device d = Device::parse(flag);
  if (d.is_cuda() && d.index >= cuda_device_count())
    throw InvalidArgument("--device " + flag + ": no such CUDA device (" + std::to_string(cuda_device_count()) +
                          " present)");
  return d;
}

std::vector<std::string> read_jsonl_texts(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw IoError(path + ": cannot open");
  std::vector<std::string> texts;
  std::string line;
  for (int64_t n = 1; std::getline(f, line); ++n) {
    if (line.empty() || line == "\r") continue;
    const std::string where = path + ":" + std::to_string(n);
    const nlohmann::json j = parse_json_strict(line, where);
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
      throw FormatError(where + ": field \"text\" missing or not a string");
    texts.push_back(j["text"].get<std::string>());
  }
  return texts;
}

namespace {
int cli_rank = 0;

void print_error(const std::string& name, const std::exception& e) {
  if (cli_rank > 0 && dynamic_cast<const onn::RanksDisagree*>(&e) != nullptr) return;
  std::cerr << name << ": " << (cli_rank > 0 ? "rank " + std::to_string(cli_rank) + ": " : std::string()) << "error: "
            << one_line(e.what()) << "\n";
}
}  // namespace

void set_cli_rank(int rank) { cli_rank = rank; }

int run_cli(CLI::App& app, const std::string& name, int argc, char** argv, const std::function<int()>& body) {
  app.set_version_flag("--version", name + " " + ONN_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::cerr << name << ": error: " << one_line(e.what()) << " (see " << name << " --help)\n";
    return 2;
  }
  try {
    return body();
  } catch (const onn::Error& e) {
    print_error(name, e);
    return e.is_user_error() ? 2 : 1;
  } catch (const std::exception& e) {
    print_error(name, e);
    return 1;
  }
}

}  // namespace onn::tools
