#!/usr/bin/env python3
"""Reads a run folder's TensorBoard event files with TensorBoard's own EventAccumulator and checks
they hold metrics.jsonl's values (train/loss, train/learning_rate, train/grad_norm, eval/loss at the
same steps, float32-rounded) and the hyperparameters text. Usage:
  tools/check_tensorboard.py RUN_DIR        (after `sftctl finetune ... --logging jsonl,tensorboard`)
Exit 0 when everything matches; prints what it compared."""
import json, math, struct, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator, TENSORS

run = sys.argv[1]
acc = EventAccumulator(f"{run}/tensorboard", size_guidance={TENSORS: 0})
acc.Reload()
tags = acc.Tags()
f32 = lambda x: struct.unpack("f", struct.pack("f", x))[0]
metrics = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
bad, compared = [], 0
for key, tag in [("loss", "train/loss"), ("lr", "train/learning_rate"), ("grad_norm", "train/grad_norm"),
                 ("eval_loss", "eval/loss"), ("trained_token_share", "train/trained_token_share")]:
    want = {m["step"]: m[key] for m in metrics if m.get(key) is not None}
    if not want:
        continue
    got = {e.step: e.value for e in acc.Scalars(tag)} if tag in tags["scalars"] else {}
    for step, v in want.items():
        compared += 1
        if step not in got or not math.isclose(got[step], f32(v), rel_tol=0, abs_tol=0):
            bad.append((tag, step, v, got.get(step)))
text = [t for t in tags["tensors"] if t.startswith("hyperparameters")]
print(f"{run}: {compared} scalars compared, tags {sorted(tags['scalars'])}, text {text}")
if not text:
    bad.append(("hyperparameters", "missing"))
for b in bad:
    print("MISMATCH", b)
sys.exit(1 if bad else 0)
