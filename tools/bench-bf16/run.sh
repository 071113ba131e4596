#!/usr/bin/env bash
# bf16 mixed precision benchmark (issue #15): LoRA and full-finetuning steps at batch 1 x 512 on
# SmolLM2-135M-Instruct — sft f32, sft bf16 and PyTorch + PEFT under torch.autocast bf16 with
# bf16 base weights — in alternating rounds (one fresh process per measurement, so peak RSS is
# each one's own), then the medians and every round; first the bf16 GEMM micro-benchmark
# (`sftctl bench bf16`: GFLOP/s per micro-kernel and the vdpbf16ps peak).
# Run it on a quiet machine: every other process's load lands in the numbers.
#
# Prints the whole BENCHMARKS.md section (tools/bench-bf16/summarize.py); LOSS100=1 also runs
# the 100-step quality check (tools/bench-bf16/loss-100.sh, f32 and bf16 one after the other)
# and adds its output.
#
# Usage: tools/bench-bf16/run.sh [ROUNDS=5] [STEPS=3] [THREADS=2]   (after swift build -c release)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-5} STEPS=${2:-3} THREADS=${3:-2}
SFTCTL=${SFTCTL:-.build/release/sftctl}
MODEL=${MODEL:-.assets/SmolLM2-135M-Instruct.Q4_1.gguf}
OUT=${OUT:-$(mktemp -d)/bench-bf16.jsonl}
: > "$OUT"
echo "results: $OUT" >&2
CPU=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //' || echo unknown)
printf '{"kind": "meta", "args": "%s %s %s", "rounds": %s, "steps": %s, "threads": %s, "cpu": "%s", "date": "%s"}\n' \
  "$ROUNDS" "$STEPS" "$THREADS" "$ROUNDS" "$STEPS" "$THREADS" "$CPU" "$(date -u +%Y-%m-%d)" >> "$OUT"
"$SFTCTL" bench bf16 --threads "$THREADS" --runs 5 --json | sed 's/^/{"kind": "gemm", "row": /; s/$/}/' >> "$OUT"
for round in $(seq 1 "$ROUNDS"); do
  for method in lora full; do
    for who in sft-f32 sft-bf16 torch-bf16; do
      case $who in
        sft-f32)  line=$("$SFTCTL" bench train --model "$MODEL" --method $method --seq 512 --steps "$STEPS" --threads "$THREADS" --precision f32 --json) ;;
        sft-bf16) line=$("$SFTCTL" bench train --model "$MODEL" --method $method --seq 512 --steps "$STEPS" --threads "$THREADS" --precision bf16 --json) ;;
        torch-bf16) line=$(python3 tools/bench-bf16/torch_step.py --model "$MODEL" --method $method --seq 512 --steps "$STEPS" --threads "$THREADS") ;;
      esac
      echo "{\"kind\": \"step\", \"round\": $round, \"who\": \"$who\", \"method\": \"$method\", \"row\": $line}" >> "$OUT"
      echo "round $round $method $who done" >&2
    done
  done
done
LOSS=""
if [ "${LOSS100:-0}" = 1 ]; then
  LOSS="${OUT%.jsonl}-loss100.txt"
  tools/bench-bf16/loss-100.sh 100 "$THREADS" > "$LOSS"
fi
python3 tools/bench-bf16/summarize.py "$OUT" $LOSS
