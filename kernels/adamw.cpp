// AdamW and the gradient norm: checks and dispatch.
#include "kernels/adamw.h"
#include "kernels/backends.h"

#include <cmath>

#include "kernels/op_check.h"

namespace onn {

void adamw_step(Context& ctx, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& cfg,
                Tensor* param_copy) {
  const OpCheck chk("adamw_step", ctx,
                    {{"param", &param}, {"grad", &grad}, {"m", &m}, {"v", &v}, {"param_copy", param_copy}});
  const DType pt = param.dtype();
  chk.require(pt == DType::f32 || (chk.cpu() && pt == DType::f64), "param must be F32",
              chk.cpu() ? " or F64" : "");
  chk.require(grad.numel() == param.numel() && m.numel() == param.numel() && v.numel() == param.numel(),
              "param, grad, m and v must have the same number of elements");
  chk.require(grad.dtype() == pt || (!chk.cpu() && grad.dtype() == DType::bf16), "grad must be ", dtype_name(pt),
              chk.cpu() ? "" : " or BF16");
  chk.same_dtype(param, "param", m, "m");
  chk.same_dtype(param, "param", v, "v");
  if (param_copy) {
    chk.require(param_copy->numel() == param.numel(), "param_copy must have param's number of elements");
    chk.require(param_copy->dtype() == DType::bf16 || param_copy->dtype() == DType::f32,
                "param_copy must be BF16 or F32");
  }
  chk.require(cfg.step >= 1, "step must be >= 1, got ", cfg.step);
  chk.require(cfg.beta1 >= 0 && cfg.beta1 < 1 && cfg.beta2 >= 0 && cfg.beta2 < 1, "betas must be in [0, 1)");
  chk.require(cfg.eps > 0 && cfg.lr >= 0 && cfg.weight_decay >= 0, "eps must be positive, lr and weight_decay >= 0");
  ONN_DISPATCH(chk, adamw_cpu(param, grad, m, v, cfg, param_copy), adamw_cuda(ctx, param, grad, m, v, cfg, param_copy));
}

double global_grad_norm(Context& ctx, const std::vector<const Tensor*>& grads) {
  for (const Tensor* g : grads) {
    const OpCheck chk("global_grad_norm", ctx, {{"grad", g}});
    chk.require(g->dtype() == DType::f32 || g->dtype() == DType::f64 || g->dtype() == DType::bf16,
                "gradients must be F32, F64 or BF16");
  }
  double s = 0;
  if (ctx.rehearsal()) return 0.0;  // checked, nothing computed
  if (ctx.device().is_cpu()) {
    for (const Tensor* g : grads) s += sum_squares_cpu(*g);
  } else {
#if ONN_HAVE_CUDA
    s = global_sum_squares_cuda(ctx, grads);
#else
    throw_no_cuda_backend("global_grad_norm");
#endif
  }
  return std::sqrt(s);
}

double clip_scale(double norm, double max_norm) {
  if (max_norm <= 0 || !(norm > max_norm)) return 1.0;  // also for a NaN norm: the step is skipped upstream
  return max_norm / (norm + 1e-6);
}

}  // namespace onn
