// SwiGLU: argument checks for both layouts and dispatch.
#include "kernels/backends.h"
#include "kernels/swiglu.h"

#include "kernels/op_check.h"

namespace onn {

namespace {
void run(Context& ctx, const OpCheck& chk, const SwigluArgs& a, bool backward) {
  ONN_DISPATCH(chk, swiglu_cpu(a, backward), swiglu_cuda(ctx, a, backward));
}
}  // namespace

void swiglu_forward(Context& ctx, const Tensor& gate, const Tensor& up, Tensor& out) {
  const OpCheck chk("swiglu_forward", ctx, {{"gate", &gate}, {"up", &up}, {"out", &out}});
  chk.require(gate.rank() == 2, "gate must be (N, F)");
  chk.float_dtype(gate, "gate");
  chk.shape(up, "up", gate.shape());
  chk.shape(out, "out", gate.shape());
  chk.same_dtype(gate, "gate", up, "up");
  chk.same_dtype(gate, "gate", out, "out");
  const int64_t f = gate.dim(1);
  run(ctx, chk, {gate.data(), up.data(), f, out.data(), nullptr, nullptr, nullptr, 0, gate.dim(0), f, gate.dtype()},
      false);
}

void swiglu_backward(Context& ctx, const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate,
                     Tensor& dup) {
  const OpCheck chk("swiglu_backward", ctx,
                    {{"gate", &gate}, {"up", &up}, {"dout", &dout}, {"dgate", &dgate}, {"dup", &dup}});
  chk.require(gate.rank() == 2, "gate must be (N, F)");
  chk.float_dtype(gate, "gate");
  for (const auto& [t, name] : {std::pair{&up, "up"}, {&dout, "dout"}, {&dgate, "dgate"}, {&dup, "dup"}}) {
    chk.shape(*t, name, gate.shape());
    chk.same_dtype(gate, "gate", *t, name);
  }
  const int64_t f = gate.dim(1);
  run(ctx, chk,
      {gate.data(), up.data(), f, nullptr, dout.data(), dgate.data(), dup.data(), f, gate.dim(0), f, gate.dtype()},
      true);
}

void swiglu_forward(Context& ctx, const Tensor& gate_up, Tensor& out) {
  const OpCheck chk("swiglu_forward", ctx, {{"gate_up", &gate_up}, {"out", &out}});
  chk.require(gate_up.rank() == 2 && gate_up.dim(1) % 2 == 0, "gate_up must be (N, 2F)");
  chk.float_dtype(gate_up, "gate_up");
  const int64_t n = gate_up.dim(0), f = gate_up.dim(1) / 2;
  chk.shape(out, "out", Shape{n, f});
  chk.same_dtype(gate_up, "gate_up", out, "out");
  const size_t half = static_cast<size_t>(f) * dtype_size(gate_up.dtype());
  run(ctx, chk,
      {gate_up.data(), static_cast<const char*>(gate_up.data()) + half, 2 * f, out.data(), nullptr, nullptr, nullptr,
       0, n, f, gate_up.dtype()},
      false);
}

void swiglu_backward(Context& ctx, const Tensor& gate_up, const Tensor& dout, Tensor& dgate_up) {
  const OpCheck chk("swiglu_backward", ctx, {{"gate_up", &gate_up}, {"dout", &dout}, {"dgate_up", &dgate_up}});
  chk.require(gate_up.rank() == 2 && gate_up.dim(1) % 2 == 0, "gate_up must be (N, 2F)");
  chk.float_dtype(gate_up, "gate_up");
  const int64_t n = gate_up.dim(0), f = gate_up.dim(1) / 2;
  chk.shape(dout, "dout", Shape{n, f});
  chk.shape(dgate_up, "dgate_up", gate_up.shape());
  chk.same_dtype(gate_up, "gate_up", dout, "dout");
  chk.same_dtype(gate_up, "gate_up", dgate_up, "dgate_up");
  const size_t half = static_cast<size_t>(f) * dtype_size(gate_up.dtype());
  run(ctx, chk,
      {gate_up.data(), static_cast<const char*>(gate_up.data()) + half, 2 * f, nullptr, dout.data(), dgate_up.data(),
       static_cast<char*>(dgate_up.data()) + half, 2 * f, n, f, gate_up.dtype()},
      true);
}

}  // namespace onn
