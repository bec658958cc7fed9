// Argument checks every op front shares: one description of the call ("rmsnorm_forward(x=
// F32(4, 8)@cpu, ...)") that each failed check names, and the device dispatch.
#pragma once

#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "runtime/build_config.h"
#include "runtime/context.h"
#include "runtime/error.h"
#include "runtime/tensor.h"

namespace onn {

// "F32(2, 3)@cpu"
std::string describe(const Tensor& t);

class OpCheck {
 public:
  // Every listed tensor that is non-null must be defined and on ctx's device.
  OpCheck(const char* op, const Context& ctx, std::initializer_list<std::pair<const char*, const Tensor*>> args);

  const std::string& where() const { return where_; }
  Device device() const { return device_; }
  // The CPU backend's rules and kernels apply (false in a rehearsal: CUDA's rules, no kernel).
  bool cpu() const { return device_.is_cpu() && !rehearsal_; }
  bool rehearsal() const { return rehearsal_; }  // Context::start_rehearsal

  template <typename... Args>
  void require(bool cond, const Args&... what) const {
    if (!cond) throw InvalidArgument(where_ + ": " + detail::concat(what...));
  }
  void shape(const Tensor& t, const char* name, const Shape& want) const;
  void dtype(const Tensor& t, const char* name, DType want) const;
  void same_dtype(const Tensor& a, const char* an, const Tensor& b, const char* bn) const;
  // A weight w of x's dtype, or a stored BF16 w that the CPU multiplies as it is
  // (cpu_bf16_weights).
  void weight_dtype(const Tensor& x, const Tensor& w) const;
  // A compute dtype of this backend: f32 or f64 on the CPU, f32 or bf16 on CUDA.
  void float_dtype(const Tensor& t, const char* name) const;

 private:
  std::string where_;
  Device device_;
  bool rehearsal_ = false;
};

[[noreturn]] void throw_no_cuda_backend(const std::string& where);

}  // namespace onn

// Runs cpu_call on the CPU, cuda_call on CUDA (a clear error in builds without CUDA), nothing
// in a rehearsal.
#if ONN_HAVE_CUDA
#define ONN_DISPATCH(check, cpu_call, cuda_call) \
  do {                                           \
    if ((check).rehearsal()) {                   \
    } else if ((check).cpu()) {                  \
      cpu_call;                                  \
    } else {                                     \
      cuda_call;                                 \
    }                                            \
  } while (0)
#else
#define ONN_DISPATCH(check, cpu_call, cuda_call)           \
  do {                                                     \
    if ((check).rehearsal()) {                             \
    } else if ((check).cpu()) {                            \
      cpu_call;                                            \
    } else {                                               \
      ::onn::throw_no_cuda_backend((check).where());       \
    }                                                      \
  } while (0)
#endif
