// matmul: argument checks shared by both backends, and dispatch by device.
#include "kernels/backends.h"
#include "kernels/matmul.h"

#include "runtime/build_config.h"
#include "runtime/error.h"

namespace onn {

namespace {
std::string desc(const Tensor& t) {
  return std::string(dtype_name(t.dtype())) + t.shape().str() + "@" + t.device().str();
}
}  // namespace

MatmulShape matmul_check(const Tensor& a, const Tensor& b, const Tensor& c, const MatmulOptions& opt) {
  const auto where = [&] {
    return "matmul(a=" + desc(a) + ", b=" + desc(b) + ", c=" + desc(c) + (opt.trans_a ? ", trans_a" : "") +
           (opt.trans_b ? ", trans_b" : "") + ")";
  };
  ONN_CHECK_ARG(a.defined() && b.defined() && c.defined(), "matmul: undefined tensor");
  ONN_CHECK_ARG(a.device() == b.device() && a.device() == c.device(), where(), ": tensors on different devices");
  ONN_CHECK_ARG((a.rank() == 2 || a.rank() == 3) && (b.rank() == 2 || b.rank() == 3) &&
                    (c.rank() == 2 || c.rank() == 3),
                where(), ": operands must be rank 2 or 3");
  const bool stored_bf16_b = cpu_bf16_weights(a.device(), a.dtype(), b.dtype()) && c.dtype() == DType::f32;
  ONN_CHECK_ARG(a.dtype() == b.dtype() || stored_bf16_b, where(), ": a and b have different dtypes");
  MatmulShape s;
  const int ra = a.rank(), rb = b.rank();
  const int64_t a_rows = a.dim(-2), a_cols = a.dim(-1);
  const int64_t b_rows = b.dim(-2), b_cols = b.dim(-1);
  s.m = opt.trans_a ? a_cols : a_rows;
  s.k = opt.trans_a ? a_rows : a_cols;
  const int64_t kb = opt.trans_b ? b_cols : b_rows;
  s.n = opt.trans_b ? b_rows : b_cols;
  ONN_CHECK_ARG(kb == s.k, where(), ": inner dimensions differ (", s.k, " vs ", kb, ")");
  const int64_t ba = ra == 3 ? a.dim(0) : 0, bb = rb == 3 ? b.dim(0) : 0;
  ONN_CHECK_ARG(!(ba && bb) || ba == bb, where(), ": batch sizes differ (", ba, " vs ", bb, ")");
  s.batch = ba ? ba : (bb ? bb : 1);
  const bool batched = ra == 3 || rb == 3;
  ONN_CHECK_ARG(c.rank() == (batched ? 3 : 2), where(), ": c must be rank ", batched ? 3 : 2);
  ONN_CHECK_ARG(c.dim(-2) == s.m && c.dim(-1) == s.n && (!batched || c.dim(0) == s.batch), where(),
                ": c must be (", batched ? std::to_string(s.batch) + ", " : std::string(), s.m, ", ", s.n, ")");
  ONN_CHECK_ARG(!c.overlaps(a) && !c.overlaps(b), where(), ": c aliases an input");
  s.stride_a = ra == 3 ? a_rows * a_cols : 0;
  s.stride_b = rb == 3 ? b_rows * b_cols : 0;
  s.stride_c = batched ? s.m * s.n : 0;
  if (opt.bias != nullptr) {
    const Tensor& bias = *opt.bias;
    ONN_CHECK_ARG(bias.defined() && bias.rank() == 1 && bias.dim(0) == s.n && bias.dtype() == c.dtype() &&
                      bias.device() == c.device(),
                  where(), ": bias must be (", s.n, ",) of c's dtype and device, got ",
                  bias.defined() ? desc(bias) : std::string("undefined"));
  }
  return s;
}

void matmul(Context& ctx, const Tensor& a, const Tensor& b, Tensor& c, const MatmulOptions& opt) {
  const MatmulShape s = matmul_check(a, b, c, opt);
  ONN_CHECK_ARG(ctx.device() == c.device(), "matmul: context is on ", ctx.device().str(), " but tensors on ",
                c.device().str());
  if (ctx.rehearsal()) return;  // checked, nothing computed
  if (c.device().is_cpu()) {
    matmul_cpu(s, a, b, c, opt);
    return;
  }
#if ONN_HAVE_CUDA
  matmul_cuda(ctx, s, a, b, c, opt);
#else
  throw InvalidArgument("matmul: this build has no CUDA backend");
#endif
}

Tensor matmul(Context& ctx, const Tensor& a, const Tensor& b, const MatmulOptions& opt, std::optional<DType> out) {
  ONN_CHECK_ARG(a.defined() && b.defined(), "matmul: undefined tensor");
  ONN_CHECK_ARG(a.rank() >= 2 && b.rank() >= 2, "matmul: operands must be rank 2 or 3, got a", a.shape().str(),
                " b", b.shape().str());
  const int64_t m = opt.trans_a ? a.dim(-1) : a.dim(-2);
  const int64_t n = opt.trans_b ? b.dim(-2) : b.dim(-1);
  Shape cs;
  if (a.rank() == 3 || b.rank() == 3) cs.push_back(a.rank() == 3 ? a.dim(0) : b.dim(0));
  cs.push_back(m);
  cs.push_back(n);
  Tensor c = Tensor::empty(cs, out.value_or(a.dtype()), ctx.allocator());
  MatmulOptions o = opt;
  o.beta = 0.0f;
  matmul(ctx, a, b, c, o);
  return c;
}

}  // namespace onn
