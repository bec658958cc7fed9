// onn-info: what is in a safetensors file or model folder, what this machine can do
// (--hardware), and a short end-to-end self-check (--self-check).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <map>
#include <iostream>
#include <sstream>

#include "model/quantized.h"
#include "runtime/allocator.h"
#include "runtime/error.h"
#include "runtime/hardware.h"
#include "runtime/safetensors.h"
#include "tools/cli.h"
#include "tools/self_check.h"

namespace {

// Tensor names and metadata come from the file: keep terminal control bytes out of the
// human-readable listing (JSON output escapes them instead).
std::string printable(const std::string& s) {
  std::string out;
  for (char c : s) out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
  return out;
}

// Weights in bitsandbytes' 4-bit layout: what each entry is, and the totals.
struct Quantization {
  std::vector<onn::Nf4Weight> weights;
  std::map<std::string, std::string> of;  // entry -> "nf4 (out, in)" (a weight) or "nf4 part"
  int64_t parameters = 0;                 // the quantized weights' elements
  uint64_t bytes = 0;                     // all their entries
  explicit Quantization(const onn::SafetensorsModel& m) : weights(onn::bnb_nf4_weights(m)) {
    for (const onn::Nf4Weight& w : weights) {
      parameters += w.shape.numel();
      bytes += w.bytes;
      of[w.name] = "nf4 " + w.shape.str();
    }
    for (const auto& [name, e] : m.tensors())
      if (!of.count(name) && onn::is_bnb_nf4_part(m, name)) of[name] = "nf4 part";
  }
  std::string operator()(const std::string& name) const {
    const auto it = of.find(name);
    return it == of.end() ? std::string() : it->second;
  }
};

void print_model_json(const onn::SafetensorsModel& m, const Quantization& quant_of) {
  nlohmann::json j;
  j["source"] = m.source();
  j["files"] = nlohmann::json::array();
  for (const auto& f : m.files()) j["files"].push_back(f.path());
  j["tensors"] = nlohmann::json::array();
  for (const auto& [name, e] : m.tensors()) {
    j["tensors"].push_back({{"name", name},
                            {"dtype", onn::dtype_name(e.info->dtype)},
                            {"shape", e.info->shape},
                            {"bytes", e.info->nbytes()},
                            {"file", m.files()[e.file].path()}});
    if (!quant_of(name).empty()) j["tensors"].back()["quantization"] = quant_of(name);
  }
  if (!quant_of.weights.empty())
    j["quantization"] = {{"format", "nf4"}, {"layout", "bitsandbytes 4-bit"}, {"weights", quant_of.weights.size()},
                         {"weight_parameters", quant_of.parameters}, {"bytes", quant_of.bytes}};
  j["tensor_count"] = m.tensors().size();
  j["parameters"] = m.parameter_count();
  j["tensor_bytes"] = m.tensor_bytes();
  j["metadata"] = m.metadata();
  // Names and metadata may hold any UTF-8; replace nothing, but never throw on output.
  std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

void print_model(const onn::SafetensorsModel& m, bool json) {
  const Quantization quant_of(m);
  if (json) {
    print_model_json(m, quant_of);
    return;
  }
  const std::vector<onn::Nf4Weight>& nf4 = quant_of.weights;
  const int64_t logical = quant_of.parameters;
  const uint64_t nf4_bytes = quant_of.bytes;
  size_t wname = 4, wshape = 5;
  std::vector<std::string> shapes, names;
  for (const auto& [name, e] : m.tensors()) {
    names.push_back(printable(name));
    std::string s = "(";
    for (size_t i = 0; i < e.info->shape.size(); ++i) s += (i ? ", " : "") + std::to_string(e.info->shape[i]);
    shapes.push_back(s + ")");
    wname = std::max(wname, names.back().size());
    wshape = std::max(wshape, shapes.back().size());
  }
  std::printf("%s: %zu tensor(s) in %zu file(s), %lld parameters, %s of tensor data\n", printable(m.source()).c_str(),
              m.tensors().size(), m.files().size(), static_cast<long long>(m.parameter_count()),
              onn::format_bytes(m.tensor_bytes()).c_str());
  if (!nf4.empty())
    std::printf("quantization: %zu weight(s) in nf4 (bitsandbytes 4-bit), %lld parameters in %s\n", nf4.size(),
                static_cast<long long>(logical), onn::format_bytes(nf4_bytes).c_str());
  if (!m.metadata().empty()) {
    std::printf("metadata:\n");
    for (const auto& [k, v] : m.metadata()) std::printf("  %s: %s\n", printable(k).c_str(), printable(v).c_str());
  }
  // A quantization column only for a folder that has quantized weights.
  std::printf("%-*s  %-5s  %-*s  %s%s\n", static_cast<int>(wname), "name", "dtype", static_cast<int>(wshape), "shape",
              nf4.empty() ? "bytes" : "bytes         ", nf4.empty() ? "" : "quantization");
  size_t i = 0;
  for (const auto& [name, e] : m.tensors()) {
    const std::string bytes = std::to_string(e.info->nbytes());
    std::printf("%-*s  %-5s  %-*s  %s%s\n", static_cast<int>(wname), names[i].c_str(),
                std::string(onn::dtype_name(e.info->dtype)).c_str(), static_cast<int>(wshape), shapes[i].c_str(),
                nf4.empty() ? bytes.c_str() : (bytes + std::string(14 - std::min<size_t>(bytes.size(), 13), ' ')).c_str(),
                quant_of(name).c_str());
    ++i;
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"onn-info: list the tensors of a .safetensors file or Hugging Face model folder, print the "
               "hardware profile, or run a self-check"};
  std::string path;
  bool json = false, hardware = false, no_measure = false, self_check = false;
  app.add_option("path,--model", path, "a .safetensors file, or a folder with model.safetensors or "
                               "model.safetensors.index.json");
  app.add_flag("--json", json, "machine-readable JSON output");
  app.add_flag("--hardware", hardware, "print the hardware profile (CPU, RAM, CUDA devices with measured "
                                       "copy bandwidths and bf16 GEMM rate)");
  app.add_flag("--no-measure", no_measure, "with --hardware: static facts only, skip the measurements");
  app.add_flag("--self-check", self_check, "run a short check of safetensors I/O, GEMM and (with a GPU) "
                                           "CPU-vs-CUDA parity");
  return onn::tools::run_cli(app, "onn-info", argc, argv, [&] {
    const int modes = (path.empty() ? 0 : 1) + (hardware ? 1 : 0) + (self_check ? 1 : 0);
    if (modes != 1) throw onn::InvalidArgument("give exactly one of PATH, --hardware or --self-check (see onn-info --help)");
    if (hardware) {
      onn::ProfileOptions opts;
      opts.measure = !no_measure;
      const auto profile = onn::profile_hardware(opts);
      if (json) {
        std::cout << onn::to_json(profile).dump(2) << "\n";
      } else {
        std::cout << onn::to_text(profile);
      }
      return 0;
    }
    if (self_check) return onn::tools::run_self_check(std::cout) ? 0 : 1;
    const auto model = onn::SafetensorsModel::open(path);
    print_model(model, json);
    return 0;
  });
}
