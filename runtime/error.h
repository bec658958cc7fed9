// The onn::Error hierarchy and the check macros every layer uses.
// Library code throws; only tools/ turn errors into messages and exit codes
// (2 for bad usage or input: InvalidArgument, FormatError, IoError; 1 for the rest).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace onn {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
  // True when the user can fix it by changing arguments or input files (exit code 2).
  virtual bool is_user_error() const { return false; }
};

// A bad argument to an API or tool: wrong shape, dtype, device, flag value.
class InvalidArgument : public Error {
 public:
  using Error::Error;
  bool is_user_error() const override { return true; }
};

// A file whose content is malformed: names the file and the reason.
class FormatError : public Error {
 public:
  using Error::Error;
  bool is_user_error() const override { return true; }
};

// A file that cannot be opened, read, written or renamed.
class IoError : public Error {
 public:
  using Error::Error;
  bool is_user_error() const override { return true; }
};

// A device allocation over the budget or over what the device has.
class OutOfMemory : public Error {
 public:
  using Error::Error;
};

class CudaError : public Error {
 public:
  using Error::Error;
};

class BlasError : public Error {
 public:
  using Error::Error;
};

// A broken internal invariant (ONN_ASSERT): a bug in ONN, not in the input.
class InternalError : public Error {
 public:
  using Error::Error;
};

namespace detail {

// "<stmt> failed at file:line (device D): detail". Device is the current CUDA device,
// or "cpu" where there is none.
std::string format_check_failure(const char* kind, const char* stmt, const char* file, int line,
                                 const std::string& detail);

template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace detail
}  // namespace onn

// A precondition only a bug in ONN can break.
#define ONN_ASSERT(cond, ...)                                                                  \
  do {                                                                                         \
    if (!(cond)) {                                                                             \
      throw ::onn::InternalError(::onn::detail::format_check_failure(                          \
          "assertion", #cond, __FILE__, __LINE__, ::onn::detail::concat("" __VA_OPT__(, ) __VA_ARGS__))); \
    }                                                                                          \
  } while (0)

// A precondition a caller can break (bad shape, dtype, device): throws InvalidArgument with
// the message alone, which is what a user reads.
#define ONN_CHECK_ARG(cond, ...)                                                      \
  do {                                                                                \
    if (!(cond)) throw ::onn::InvalidArgument(::onn::detail::concat(__VA_ARGS__));    \
  } while (0)
