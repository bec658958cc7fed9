// Test helpers.
#include "support/test_util.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
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

Tensor random_tensor(const Shape& shape, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  Tensor t = Tensor::empty(shape, DType::f32);
  float* p = t.numel() ? t.data_as<float>() : nullptr;
  for (int64_t i = 0; i < t.numel(); ++i) {
    float v = d(rng);
    if (std::fabs(v) < 1e-3f) v = v < 0 ? -0.5f : 0.5f;
    p[i] = v;
  }
  return t;
}

double normalized_error(const Tensor& out, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double o = load_as_double(out.data(), out.dtype(), i);
    if (std::isnan(o)) return INFINITY;
    num += (o - ref[i]) * (o - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1.0));
}

std::vector<double> reference_matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, float alpha,
                                     float beta, const Tensor* c_in, const Tensor* bias) {
  const bool batched = a.rank() == 3 || b.rank() == 3;
  const int64_t batch = a.rank() == 3 ? a.dim(0) : (b.rank() == 3 ? b.dim(0) : 1);
  const int64_t ar = a.dim(-2), ac = a.dim(-1), br = b.dim(-2), bc = b.dim(-1);
  const int64_t m = trans_a ? ac : ar, k = trans_a ? ar : ac, n = trans_b ? br : bc;
  std::vector<double> r(static_cast<size_t>(batch * m * n));
  for (int64_t z = 0; z < batch; ++z) {
    const size_t ao = a.rank() == 3 ? static_cast<size_t>(z * ar * ac) : 0;
    const size_t bo = b.rank() == 3 ? static_cast<size_t>(z * br * bc) : 0;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t p = 0; p < k; ++p) {
          const size_t ia = ao + static_cast<size_t>(trans_a ? p * ac + i : i * ac + p);
          const size_t ib = bo + static_cast<size_t>(trans_b ? j * bc + p : p * bc + j);
          s += load_as_double(a.data(), a.dtype(), ia) * load_as_double(b.data(), b.dtype(), ib);
        }
        const size_t ic = static_cast<size_t>((z * m + i) * n + j);
        double v = alpha * s;
        if (beta != 0.0f && c_in != nullptr) v += beta * load_as_double(c_in->data(), c_in->dtype(), ic);
        if (bias != nullptr) v += load_as_double(bias->data(), bias->dtype(), static_cast<size_t>(j));
        r[ic] = v;
      }
  }
  (void)batched;
  return r;
}

ProcessResult run_process(const std::vector<std::string>& argv) {
  TempDir dir;
  const std::string out_path = dir.file("stdout"), err_path = dir.file("stderr");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("posix_spawn " + argv[0] + ": " + std::strerror(rc));
  int status = 0;
  waitpid(pid, &status, 0);
  ProcessResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  auto slurp = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  r.out = slurp(out_path);
  r.err = slurp(err_path);
  return r;
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

}  // namespace onn::test
