#!/usr/bin/env bash
# The bf16 quality check of issue #15: the demo LoRA finetune (Examples/configs/demo.json) for
# 100 steps in f32 and in bf16, then each run's per-step losses side by side and the final eval
# losses (bf16 should end within 2% of f32).
# Usage: tools/bench-bf16/loss-100.sh [STEPS=100] [THREADS=all]   (after swift build -c release)
# PARALLEL=1 runs the two at once (give each THREADS=1 on a 2-core machine). EVAL_STEPS=N also
# evaluates every N steps (default: at the end only).
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${1:-100}
THREADS=${2:-}
SFTCTL=${SFTCTL:-.build/release/sftctl}
run() {
  "$SFTCTL" finetune --config Examples/configs/demo.json --precision "$1" --max_steps "$STEPS" --eval_steps "${EVAL_STEPS:-$STEPS}" \
    --save_steps "$STEPS" --sample_prompts '[]' --output_dir "runs/bf16-loss-$1" --overwrite_output_dir true \
    ${THREADS:+--threads "$THREADS"} > /dev/null 2> "runs/bf16-loss-$1.log"
}
mkdir -p runs
if [ "${PARALLEL:-0}" = 1 ]; then
  run f32 & run bf16 & wait
else
  run f32; run bf16
fi
python3 - "$STEPS" <<'PY'
import json, sys
def read(p):
    rows = [json.loads(l) for l in open(f"runs/bf16-loss-{p}/metrics.jsonl")]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}, [r["eval_loss"] for r in rows if "eval_loss" in r]
(f, fe), (b, be) = read("f32"), read("bf16")
worst = max(abs(b[s] - f[s]) / abs(f[s]) for s in f if s in b)
print("step  f32 loss  bf16 loss  rel diff")
for s in sorted(f):
    if s in b and (s <= 5 or s % 10 == 0): print(f"{s:4d}  {f[s]:.4f}    {b[s]:.4f}     {(b[s] - f[s]) / f[s]:+.4f}")
print(f"largest per-step relative difference: {worst:.4f}")
for i, (x, y) in enumerate(zip(fe, be)):
    last = i == min(len(fe), len(be)) - 1
    print(f"{'final ' if last else ''}eval loss {i + 1}: f32 {x:.4f}, bf16 {y:.4f}, relative {(y - x) / x:+.4f}")
PY
