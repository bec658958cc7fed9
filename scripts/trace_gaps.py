"""The largest idle gaps of the compute stream in an `onn-bench train --trace FILE` timeline
(Chrome trace JSON), each with what the other lanes were doing across it: the weight copy
of the chunk the next window needed, activation copies, when the host enqueued the window,
and the host calls that held the host up meanwhile (allocator backend, waits). A companion to the summary in onn-bench's JSON (stream.trace), which says how much
idle time there was; this says where.

  python3 scripts/trace_gaps.py trace.json [--step 0] [--top 15]
"""
import argparse
import json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--step", type=int, default=0, help="which timed step (default the first)")
    ap.add_argument("--top", type=int, default=15)
    a = ap.parse_args()
    with open(a.trace) as f:
        events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X" and e["args"]["step"] == a.step]
    if not events:
        raise SystemExit(f"{a.trace}: no spans for step {a.step}")
    spans = []
    for e in events:  # times on the step's own axis (ms from its origin), as the trainer took them
        args = e["args"]
        start = args["start_ms"]
        spans.append({"lane": args["lane"], "index": int(args["index"]), "start": start,
                      "end": start + e["dur"] / 1000.0, "issued": args["issued_ms"],
                      "call": args.get("call"), "bytes": args.get("bytes", 0)})
    windows = sorted((s for s in spans if s["lane"] == "compute"), key=lambda s: s["start"])
    totals, calls = {}, {}
    for s in spans:
        totals[s["lane"]] = totals.get(s["lane"], 0.0) + s["end"] - s["start"]
        if s["lane"] == "host":
            n, ms = calls.get(s["call"], (0, 0.0))
            calls[s["call"]] = (n + 1, ms + s["end"] - s["start"])
    span = max(s["end"] for s in spans if s["lane"] != "host")
    print(f"step {a.step}: {span:.1f} ms; busy per lane (sum of spans): "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in sorted(totals.items())))
    if calls:
        print("host calls: " + ", ".join(f"{c} x{n} {ms:.1f} ms" for c, (n, ms) in sorted(calls.items())))
    gaps, prev = [], None
    for w in windows:
        if prev is not None and w["start"] > prev["end"]:
            gaps.append((w["start"] - prev["end"], prev, w))
        prev = w
    gaps.sort(key=lambda g: -g[0])
    print(f"{len(gaps)} gaps between compute windows, {sum(g[0] for g in gaps):.1f} ms in all; the largest:")
    for length, before, after in gaps[: a.top]:
        lo, hi = before["end"], after["start"]
        copy = [s for s in spans if s["lane"] == "copy" and s["index"] == after["index"] and s["end"] <= hi + 1e-3]
        copy = max(copy, key=lambda s: s["end"]) if copy else None
        acts = [s for s in spans if s["lane"].startswith("act") and s["end"] > lo and s["start"] < hi]
        what = f"chunk {before['index']} -> {after['index']}: {length:.2f} ms idle at {lo:.1f} ms"
        what += f"; the window was enqueued at {after['issued']:.1f}"
        if copy:
            what += f"; its copy ran {copy['start']:.1f}-{copy['end']:.1f} (enqueued {copy['issued']:.1f})"
        if acts:
            what += "; activation copies across it: " + ", ".join(
                f"{s['lane']} {s['index']} {s['start']:.1f}-{s['end']:.1f}" for s in acts[:4])
        late = max(lo, min(hi, after["issued"]))  # the host's part of the gap: [lo, late]
        held = [s for s in spans if s["lane"] == "host" and s["end"] > lo and s["start"] < late]
        if held:
            what += "; the host meanwhile in: " + ", ".join(
                f"{s['call']} {s['start']:.1f}-{s['end']:.1f}" + (f" ({s['bytes'] / 2**20:.0f} MiB)" if s["bytes"] else "")
                for s in held[:6])
        print("  " + what)


if __name__ == "__main__":
    main()
