#!/usr/bin/env python3
"""llama.cpp (via llama-cpp-python) batch-1 greedy decode speed on the same GGUF sft uses:
prompt, then up to N new tokens (create_completion, C-side sampling; the short prompt's prefill
is included); median tokens/s of RUNS runs. One JSON line.
Usage: python3 tools/bench_llamacpp.py [--tokens 64] [--runs 3] [--threads 2]"""
import argparse, json, os, time
ap = argparse.ArgumentParser()
ap.add_argument("--model", default=os.path.join(os.path.dirname(__file__), "..", ".assets", "SmolLM2-135M-Instruct.Q4_1.gguf"))
ap.add_argument("--tokens", type=int, default=64)
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
import llama_cpp
llm = llama_cpp.Llama(model_path=a.model, n_threads=a.threads, n_ctx=512, verbose=False)
prompt = "The history of the Roman Empire begins"
speeds = []
for _ in range(a.runs):
    llm.reset()
    t0 = time.perf_counter()
    out = llm.create_completion(prompt, max_tokens=a.tokens, temperature=0.0, top_k=1)
    n = out["usage"]["completion_tokens"]
    speeds.append(n / (time.perf_counter() - t0))
speeds.sort()
print(json.dumps({"peer": "llama.cpp", "version": llama_cpp.__version__, "decode_tokens_per_second": speeds[len(speeds) // 2],
                  "tokens": a.tokens, "threads": a.threads}))
