"""Where a training step's GPU time goes, from an Nsight Systems trace exported to SQLite
(`nsys profile -t cuda -o P onn-bench train ... --warmup 1 --steps 1`, then
`nsys export --type sqlite -o P.sqlite P.nsys-rep`).

The timed step is the span between the last AdamW kernel of the warm-up step and the last
AdamW kernel of the timed step. In it: the time each stream is busy (kernels and copies), the
time no stream is busy (idle gaps), and for the idle gaps the CUDA runtime/driver calls the
host was inside meanwhile (what the device was waiting for), largest first.

  python3 scripts/nsys_gaps.py P.sqlite [--min-gap-ms 0.2]
"""
import argparse
import sqlite3
from collections import defaultdict


def union(intervals):
    out = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("--min-gap-ms", type=float, default=0.2)
    args = ap.parse_args()
    db = sqlite3.connect(args.db)
    names = dict(db.execute("SELECT id, value FROM StringIds"))
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    kernels = [(s, e, st, names.get(n, "?")) for s, e, st, n in
               db.execute("SELECT start, end, streamId, shortName FROM CUPTI_ACTIVITY_KIND_KERNEL")]
    copies = []
    if "CUPTI_ACTIVITY_KIND_MEMCPY" in tables:
        copies = [(s, e, st, f"memcpy kind {k} ({b >> 20} MiB)") for s, e, st, k, b in
                  db.execute("SELECT start, end, streamId, copyKind, bytes FROM CUPTI_ACTIVITY_KIND_MEMCPY")]
    if "CUPTI_ACTIVITY_KIND_MEMSET" in tables:
        copies += [(s, e, st, "memset") for s, e, st in
                   db.execute("SELECT start, end, streamId FROM CUPTI_ACTIVITY_KIND_MEMSET")]
    adam = sorted(e for s, e, st, n in kernels if "adamw" in n.lower())
    if len(adam) < 2:
        raise SystemExit("no AdamW kernels in the trace: was a step run?")
    # Two steps' AdamW kernels: split at the largest gap between consecutive ones.
    gaps = [(adam[i + 1] - adam[i], i) for i in range(len(adam) - 1)]
    _, i = max(gaps)
    t0, t1 = adam[i], adam[-1]
    print(f"timed step: {(t1 - t0) / 1e6:.1f} ms")
    acts = [(max(s, t0), min(e, t1), st, n) for s, e, st, n in kernels + copies if e > t0 and s < t1]
    busy_by_stream = defaultdict(float)
    for st in {a[2] for a in acts}:
        busy_by_stream[st] = sum(e - s for s, e in union([(s, e) for s, e, x, _ in acts if x == st])) / 1e6
    for st, ms in sorted(busy_by_stream.items(), key=lambda x: -x[1]):
        kinds = defaultdict(float)
        for s, e, x, n in acts:
            if x == st:
                kinds["copy" if n.startswith("memcpy") else "memset" if n == "memset" else "kernel"] += (e - s) / 1e6
        print(f"stream {st}: busy {ms:.1f} ms ({', '.join(f'{k} {v:.1f}' for k, v in kinds.items())})")
    busy = union([(s, e) for s, e, _, _ in acts])
    idle = []
    cur = t0
    for s, e in busy:
        if s - cur > args.min_gap_ms * 1e6:
            idle.append((cur, s))
        cur = max(cur, e)
    if t1 - cur > args.min_gap_ms * 1e6:
        idle.append((cur, t1))
    total_idle = sum(e - s for s, e in idle) / 1e6
    print(f"device busy {sum(e - s for s, e in busy) / 1e6:.1f} ms; idle {total_idle:.1f} ms in {len(idle)} gaps "
          f"over {args.min_gap_ms} ms")
    api = []
    for table in ("CUPTI_ACTIVITY_KIND_RUNTIME", "CUPTI_ACTIVITY_KIND_DRIVER"):
        if table in tables:
            api += [(s, e, names.get(n, "?")) for s, e, n in db.execute(f"SELECT start, end, nameId FROM {table}")
                    if e > t0 and s < t1]
    api.sort()
    by_call = defaultdict(float)
    for gs, ge in idle:
        for s, e, n in api:
            if s >= ge:
                break
            if e > gs:
                by_call[n] += (min(e, ge) - max(s, gs)) / 1e6
    print("host calls during the idle gaps (ms):")
    for n, ms in sorted(by_call.items(), key=lambda x: -x[1])[:15]:
        print(f"  {ms:9.1f}  {n}")
    print("largest gaps (ms, what preceded and followed on the device):")
    ends = sorted((e, n) for s, e, _, n in acts)
    starts = sorted((s, n) for s, e, _, n in acts)
    import bisect
    for gs, ge in sorted(idle, key=lambda g: g[0] - g[1])[:12]:
        i = bisect.bisect_right([e for e, _ in ends], gs) - 1
        j = bisect.bisect_left([s for s, _ in starts], ge)
        before = ends[i][1] if i >= 0 else "-"
        after = starts[j][1] if j < len(starts) else "-"
        calls = defaultdict(float)
        for s, e, n in api:
            if s >= ge:
                break
            if e > gs:
                calls[n] += (min(e, ge) - max(s, gs)) / 1e6
        top = ", ".join(f"{n} {ms:.1f}" for n, ms in sorted(calls.items(), key=lambda x: -x[1])[:3])
        print(f"  {(ge - gs) / 1e6:8.2f} at +{(gs - t0) / 1e6:8.1f}: after {before[:40]}, before {after[:40]}; host in: {top}")


if __name__ == "__main__":
    main()
