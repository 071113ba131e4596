#!/usr/bin/env bash
# Side-by-side CPU benchmarks for BENCHMARKS.md: sft and its peers on the same model
# (SmolLM2-135M-Instruct), the same threads, in one run, alternating, R rounds each; prints
# one JSON line per measurement. Peers: PyTorch + PEFT (tools/bench_torch_train.py) and
# llama.cpp through llama-cpp-python (tools/bench_llamacpp.py), when installed.
# Usage: tools/bench_vs_peers.sh [ROUNDS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}; threads=${2:-2}
model=.assets/SmolLM2-135M-Instruct.Q4_1.gguf
sft=.build/release/sftctl
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
for r in $(seq "$rounds"); do
  $sft bench train --model $model --method lora --seq 512 --lora-r 16 --steps 3 --threads "$threads" --json | sed "s/^/{\"round\":$r,\"who\":\"sft\",\"b\":/; s/$/}/"
  python3 tools/bench_torch_train.py --method lora --seq 512 --steps 3 --threads "$threads" | sed "s/^/{\"round\":$r,\"who\":\"torch\",\"b\":/; s/$/}/"
  $sft bench train --model $model --method full --seq 512 --steps 2 --threads "$threads" --json | sed "s/^/{\"round\":$r,\"who\":\"sft\",\"b\":/; s/$/}/"
  python3 tools/bench_torch_train.py --method full --seq 512 --steps 2 --threads "$threads" | sed "s/^/{\"round\":$r,\"who\":\"torch\",\"b\":/; s/$/}/"
  $sft bench forward --model $model --seq 512 --runs 3 --threads "$threads" --json | sed "s/^/{\"round\":$r,\"who\":\"sft\",\"b\":/; s/$/}/"
  python3 tools/bench_torch_train.py --mode forward --seq 512 --steps 3 --threads "$threads" | sed "s/^/{\"round\":$r,\"who\":\"torch\",\"b\":/; s/$/}/"
  $sft bench decode --model $model --tokens 64 --runs 3 --threads "$threads" --json | sed "s/^/{\"round\":$r,\"who\":\"sft\",\"b\":/; s/$/}/"
  python3 tools/bench_torch_train.py --mode decode --tokens 64 --steps 3 --threads "$threads" | sed "s/^/{\"round\":$r,\"who\":\"torch\",\"b\":/; s/$/}/"
  if python3 -c "import llama_cpp" 2>/dev/null; then
    python3 tools/bench_llamacpp.py --tokens 64 --runs 3 --threads "$threads" | sed "s/^/{\"round\":$r,\"who\":\"llama.cpp\",\"b\":/; s/$/}/"
  fi
done
