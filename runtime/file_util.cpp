// POSIX implementations of MappedFile, read_file and AtomicFile.
#include "runtime/file_util.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "runtime/error.h"

namespace onn {

namespace {
std::string errno_text() { return std::strerror(errno); }

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};
}  // namespace

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw IoError(path + ": cannot open: " + errno_text());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw IoError(path + ": cannot stat: " + errno_text());
  if (!S_ISREG(st.st_mode)) throw IoError(path + ": not a regular file");
  std::shared_ptr<MappedFile> m(new MappedFile());
  m->path_ = path;
  m->size_ = static_cast<size_t>(st.st_size);
  if (m->size_ > 0) {
    void* p = ::mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, fd.get(), 0);
    if (p == MAP_FAILED) throw IoError(path + ": cannot map: " + errno_text());
    m->data_ = static_cast<const uint8_t*>(p);
  }
  return m;
}

void MappedFile::release(size_t begin, size_t end) const {
  const auto page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  end = std::min(end, size_);
  begin = (begin + page - 1) / page * page;
  end = end / page * page;
  if (data_ == nullptr || begin >= end) return;
  ::madvise(const_cast<uint8_t*>(data_) + begin, end - begin, MADV_DONTNEED);  // advice: failure is harmless
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

std::string read_file(const std::string& path, size_t max_bytes) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw IoError(path + ": cannot open: " + errno_text());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw IoError(path + ": cannot stat: " + errno_text());
  if (!S_ISREG(st.st_mode)) throw IoError(path + ": not a regular file");
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    throw FormatError(path + ": file is " + std::to_string(st.st_size) + " bytes, over the " +
                      std::to_string(max_bytes) + "-byte limit");
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t r = ::read(fd.get(), out.data() + got, out.size() - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw IoError(path + ": read failed: " + errno_text());
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  out.resize(got);
  return out;
}

AtomicFile::AtomicFile(std::string target_path) : target_(std::move(target_path)) {
  const std::filesystem::path t(target_);
  const std::filesystem::path dir = t.has_parent_path() ? t.parent_path() : std::filesystem::path(".");
  std::string tmpl = (dir / ("." + t.filename().string() + ".tmp.XXXXXX")).string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  fd_ = ::mkstemp(buf.data());
  if (fd_ < 0) throw IoError(target_ + ": cannot create a temporary file in " + dir.string() + ": " + errno_text());
  temp_path_ = buf.data();
  // mkstemp creates 0600; a written model or checkpoint is an ordinary file (0644).
  if (::fchmod(fd_, 0644) != 0) throw IoError(target_ + ": cannot set permissions: " + errno_text());
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_path_.c_str());
}

void AtomicFile::write(std::span<const uint8_t> bytes) {
  ONN_ASSERT(fd_ >= 0 && !committed_, "write after commit");
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd_, bytes.data() + done, bytes.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw IoError(target_ + ": write failed: " + errno_text());
    }
    done += static_cast<size_t>(w);
  }
}

void write_file_atomic(const std::string& path, std::string_view text) {
  AtomicFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

void write_folder_atomic(const std::string& out_dir, const std::vector<std::string>& inputs, const std::string& tag,
                         const std::function<void(const std::string& tmp_dir)>& fill) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path out = fs::absolute(out_dir).lexically_normal();
  for (const std::string& in : inputs)
    ONN_CHECK_ARG(!fs::equivalent(out, in, ec), "--out ", out_dir, " is the input folder ", in,
                  "; write to a new folder");
  ONN_CHECK_ARG(!fs::exists(out, ec) || (fs::is_directory(out, ec) && fs::is_empty(out, ec)), out_dir,
                " already exists and is not empty; give a new folder");
  const fs::path tmp = out.parent_path() / (out.filename().string() + "." + tag + ".tmp");
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  try {
    fill(tmp.string());
    if (fs::exists(out, ec)) fs::remove(out);  // the empty folder
    fs::rename(tmp, out);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

void AtomicFile::commit() {
  ONN_ASSERT(fd_ >= 0 && !committed_, "double commit");
  if (::fsync(fd_) != 0) throw IoError(target_ + ": fsync failed: " + errno_text());
  if (::close(fd_) != 0) {
    fd_ = -1;
    throw IoError(target_ + ": close failed: " + errno_text());
  }
  fd_ = -1;
  if (::rename(temp_path_.c_str(), target_.c_str()) != 0) {
    throw IoError(target_ + ": rename from " + temp_path_ + " failed: " + errno_text());
  }
  committed_ = true;
  const std::filesystem::path t(target_);
  const std::string dir = t.has_parent_path() ? t.parent_path().string() : ".";
  Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() < 0 || ::fsync(dfd.get()) != 0) {
    throw IoError(dir + ": fsync of the folder failed: " + errno_text());
  }
}

}  // namespace onn
