// OpCheck: the shared argument validation behind every op's front.
#include "kernels/op_check.h"

#include "kernels/matmul.h"

namespace onn {

std::string describe(const Tensor& t) {
  if (!t.defined()) return "undefined";
  return std::string(dtype_name(t.dtype())) + t.shape().str() + "@" + t.device().str();
}

OpCheck::OpCheck(const char* op, const Context& ctx,
                 std::initializer_list<std::pair<const char*, const Tensor*>> args)
    : device_(ctx.device()), rehearsal_(ctx.rehearsal()) {
  where_ = std::string(op) + "(";
  bool first = true;
  for (const auto& [name, t] : args) {
    if (t == nullptr) continue;
    where_ += (first ? "" : ", ") + std::string(name) + "=" + describe(*t);
    first = false;
  }
  where_ += ")";
  for (const auto& [name, t] : args) {
    if (t == nullptr) continue;
    require(t->defined(), name, " is undefined");
    require(t->device() == device_, name, " is on ", t->device().str(), " but the context is on ", device_.str());
  }
}

void OpCheck::shape(const Tensor& t, const char* name, const Shape& want) const {
  require(t.shape() == want, name, " must be ", want.str(), ", got ", t.shape().str());
}

void OpCheck::dtype(const Tensor& t, const char* name, DType want) const {
  require(t.dtype() == want, name, " must be ", dtype_name(want), ", got ", dtype_name(t.dtype()));
}

void OpCheck::same_dtype(const Tensor& a, const char* an, const Tensor& b, const char* bn) const {
  require(a.dtype() == b.dtype(), an, " and ", bn, " must have one dtype, got ", dtype_name(a.dtype()), " and ",
          dtype_name(b.dtype()));
}

void OpCheck::weight_dtype(const Tensor& x, const Tensor& w) const {
  if (!cpu_bf16_weights(x.device(), x.dtype(), w.dtype())) same_dtype(x, "x", w, "w");
}

void OpCheck::float_dtype(const Tensor& t, const char* name) const {
  if (cpu()) {  // a rehearsal takes CUDA's
    require(t.dtype() == DType::f32 || t.dtype() == DType::f64, name, " must be F32 or F64 on the CPU, got ",
            dtype_name(t.dtype()));
  } else {
    require(t.dtype() == DType::f32 || t.dtype() == DType::bf16, name, " must be F32 or BF16 on CUDA, got ",
            dtype_name(t.dtype()));
  }
}

void throw_no_cuda_backend(const std::string& where) {
  throw InvalidArgument(where + ": this build has no CUDA backend");
}

}  // namespace onn
