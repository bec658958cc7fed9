"""bitsandbytes' own pure-torch ("default") kernels registered for the CPU, in place of two of its
native CPU kernels (0.50) that depart from the format as its CUDA and default kernels define it:
- dequantize_4bit indexes absmax per row (row * cols / 64 + col / 64), wrong when a row is not a
  whole number of 64-blocks (a 96- or 160-wide weight; the format blocks the flattened tensor);
- quantize_blockwise (the double-quantized absmax) finds the code with an approximate search
  that can land on the second-nearest value (3 of 325 absmax in quant_reference's "many" case),
  where the CUDA kernel and the default kernel take the nearest.
Importing this module registers them (make_quant_reference.py, scripts/bnb_roundtrip.py).
"""
import torch
from bitsandbytes._ops import register_kernel

_DEFAULT = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)  # the "default" kernels


@register_kernel("bitsandbytes::dequantize_4bit", "cpu")
def _dequantize_4bit_default(A, absmax, blocksize, quant_type, shape, dtype):
    return torch.ops.bitsandbytes.dequantize_4bit.default.redispatch(_DEFAULT, A, absmax, blocksize, quant_type,
                                                                     shape, dtype)


@register_kernel("bitsandbytes::quantize_blockwise", "cpu")
def _quantize_blockwise_default(A, code, blocksize):
    return torch.ops.bitsandbytes.quantize_blockwise.default.redispatch(_DEFAULT, A, code, blocksize)
