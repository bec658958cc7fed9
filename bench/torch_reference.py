"""PyTorch figures at the shapes onn_kernels_bench uses, for side-by-side ratios from one run on
the GPU machine: scaled_dot_product_attention (forward, forward + backward), eager RMSNorm
(as transformers' LlamaRMSNorm computes it), SwiGLU, and cross-entropy (forward + backward).
Timed with CUDA events, after warm-up, with L2 flushed between runs, like the C++ benchmarks.

  python3 bench/torch_reference.py [--json OUT.json] [--reps N]

Prints one line per case: name, median microseconds, and GB/s or TFLOP/s on the same counting
rules as onn_kernels_bench (bytes: each tensor read or written once; attention FLOPs: the causal
half, backward 2.5x forward).
"""
import argparse
import json
import statistics

import torch
import torch.nn.functional as F

LLAMA3_8B = dict(name="llama3_8b", c=4096, h=32, kvh=8, d=128, f=14336, v=128256)
TINYLLAMA = dict(name="tinyllama", c=2048, h=32, kvh=4, d=64, f=5632, v=32000)
TOKENS = 4096


def timed(fn, reps):
    flush = torch.empty(int(torch.cuda.get_device_properties(0).L2_cache_size) * 2, dtype=torch.uint8, device="cuda")
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        flush.zero_()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1e-3)
    return statistics.median(times)


def rmsnorm(x, w, eps=1e-5):
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    dt = torch.bfloat16
    rows = []

    def report(name, seconds, bytes_=0.0, flops=0.0):
        row = {"name": name, "us": seconds * 1e6}
        if bytes_:
            row["GB/s"] = bytes_ / seconds / 1e9
        if flops:
            row["TFLOP/s"] = flops / seconds / 1e12
        rows.append(row)
        extra = " ".join(f"{k}={v:.1f}" for k, v in row.items() if k not in ("name",))
        print(f"{name:60s} {extra}", flush=True)

    for m in (LLAMA3_8B, TINYLLAMA):
        n, c, f, v = TOKENS, m["c"], m["f"], m["v"]
        x = torch.randn(n, c, device="cuda", dtype=dt)
        w = torch.randn(c, device="cuda", dtype=dt)
        report(f"torch_rmsnorm_forward/cuda_bf16/{m['name']}_N4096", timed(lambda: rmsnorm(x, w), args.reps),
               bytes_=(2 * n * c + c) * 2 + 4 * n)
        g, u = torch.randn(n, f, device="cuda", dtype=dt), torch.randn(n, f, device="cuda", dtype=dt)
        report(f"torch_swiglu_forward/cuda_bf16/{m['name']}_N4096", timed(lambda: F.silu(g) * u, args.reps),
               bytes_=3 * n * f * 2)
        logits = torch.randn(2048, v, device="cuda", dtype=dt, requires_grad=True)
        labels = torch.randint(0, v, (2048,), device="cuda")

        def ce():
            loss = F.cross_entropy(logits.float(), labels)
            loss.backward()
        report(f"torch_cross_entropy/cuda_bf16/{m['name']}_N2048", timed(ce, args.reps), bytes_=2 * 2048 * v * 2)
        for t in (2048, 4096):
            b = TOKENS // t
            q = torch.randn(b, m["h"], t, m["d"], device="cuda", dtype=dt, requires_grad=True)
            k = torch.randn(b, m["kvh"], t, m["d"], device="cuda", dtype=dt, requires_grad=True)
            vv = torch.randn(b, m["kvh"], t, m["d"], device="cuda", dtype=dt, requires_grad=True)
            dout = torch.randn(b, m["h"], t, m["d"], device="cuda", dtype=dt)
            fwd_flops = 4.0 * b * m["h"] * t * t * m["d"] / 2
            shape = f"{m['name']}_B{b}_T{t}"

            def fwd():
                with torch.no_grad():
                    F.scaled_dot_product_attention(q, k, vv, is_causal=True, enable_gqa=True)

            def fwd_bwd():
                o = F.scaled_dot_product_attention(q, k, vv, is_causal=True, enable_gqa=True)
                o.backward(dout)
            report(f"torch_sdpa_forward/cuda_bf16/{shape}", timed(fwd, args.reps), flops=fwd_flops)
            report(f"torch_sdpa_forward_backward/cuda_bf16/{shape}", timed(fwd_bwd, args.reps), flops=3.5 * fwd_flops)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
