"""Reads an onn-train run folder's TensorBoard files with TensorBoard's own loader
(EventAccumulator, as `tensorboard --logdir` does) and compares every scalar with the run's
NDJSON events (--log-file or --json output). Exits 1 on a mismatch.
  v/bin/pip install tensorboard && v/bin/python scripts/check_tensorboard.py RUN_DIR EVENTS.ndjson
"""
import json
import os
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

run, log = sys.argv[1], sys.argv[2]
acc = EventAccumulator(os.path.join(run, "tensorboard"))
acc.Reload()
got = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
want = {}
for line in open(log):
    e = json.loads(line)
    if e["type"] == "step" and e["loss"] is not None:
        for k in ("loss", "lr", "grad_norm", "tokens_per_s"):
            want.setdefault("train/" + k, {})[e["step"]] = e[k]
    elif e["type"] == "val":
        want.setdefault("val/loss", {})[e["step"]] = e["loss"]
bad = 0
for tag, series in want.items():
    for step, v in series.items():
        g = got.get(tag, {}).get(step)
        if g is None or abs(g - v) > 1e-6 * max(1.0, abs(v)):
            print(f"{tag} step {step}: tensorboard {g}, event {v}")
            bad += 1
print(f"tags {sorted(got)}; {sum(len(s) for s in want.values())} points compared, {bad} mismatched")
sys.exit(1 if bad else 0)
