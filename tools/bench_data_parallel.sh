#!/usr/bin/env bash
# 2-rank data parallelism against one process with the same global batch, on the CPU:
# LoRA (r 16, 256-token rows, 4 micro-batches per step) and full finetuning (128-token rows,
# 2 micro-batches per step; zero_stage 0 and 1), SmolLM2-135M from .assets. Prints each run's
# seconds per step, loss curve, peak tensor memory (rank 0) and every rank's max RSS.
# Usage: tools/bench_data_parallel.sh [WORKDIR]   (after swift build -c release)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work" && cd "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
sft=$root/.build/release/sftctl
model=$root/.assets/SmolLM2-135M-Instruct.Q4_1.gguf
python3 - <<'PY'
import json, random
random.seed(1)
words = ("the a model learns to answer short questions about cats rivers mountains history science "
         "music cooking travel code data training language people city water light energy").split()
with open("data.jsonl", "w") as f:
    for i in range(64):
        out = " ".join(random.choice(words) for _ in range(150 + random.randint(0, 100)))
        f.write(json.dumps({"instruction": f"Write about topic {i}", "output": out}) + "\n")
PY
lora="--model $model --data data.jsonl --format alpaca --max_seq_length 256 --lora_r 16 --max_steps 5 --learning_rate 1e-4"
full="--model $model --data data.jsonl --format alpaca --max_seq_length 128 --method full --max_steps 4 --learning_rate 1e-5"
rss="/usr/bin/time -f maxrss_kb=%M"
rm -rf run-*
$rss "$sft" finetune $lora --threads 2 --gradient_accumulation_steps 4 --output_dir run-lora-1 > run-lora-1.log 2>&1
mpirun --oversubscribe -np 2 $rss "$sft" finetune $lora --threads 1 --gradient_accumulation_steps 2 --output_dir run-lora-2 > run-lora-2.log 2>&1
$rss "$sft" finetune $full --threads 2 --gradient_accumulation_steps 2 --output_dir run-full-1 > run-full-1.log 2>&1
mpirun --oversubscribe -np 2 $rss "$sft" finetune $full --threads 1 --gradient_accumulation_steps 1 --output_dir run-full-2 > run-full-2.log 2>&1
mpirun --oversubscribe -np 2 $rss "$sft" finetune $full --threads 1 --gradient_accumulation_steps 1 --zero_stage 1 --output_dir run-full-2-zero1 > run-full-2-zero1.log 2>&1
for r in run-lora-1 run-lora-2 run-full-1 run-full-2 run-full-2-zero1; do
  python3 - "$r" <<'PY'
import json, re, sys
r = sys.argv[1]
m = [json.loads(l) for l in open(f"{r}/metrics.jsonl")]
e = [x["elapsed_seconds"] for x in m]
steps = [e[0]] + [b - a for a, b in zip(e, e[1:])]
rss = [int(k) >> 10 for k in re.findall(r"maxrss_kb=(\d+)", open(f"{r}.log").read())]
print(f"{r}: s/step {[round(s, 1) for s in steps]}, loss {[round(x['loss'], 4) for x in m]}, "
      f"peak tensor MiB {m[-1]['peak_memory_bytes'] >> 20}, max RSS MiB per process {rss}")
PY
done
