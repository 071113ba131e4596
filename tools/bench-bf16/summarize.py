#!/usr/bin/env python3
"""Prints the "bf16 mixed precision" section of BENCHMARKS.md from tools/bench-bf16/run.sh's JSON
lines: the bf16 GEMM per micro-kernel next to sgemm and the vdpbf16ps peak, the training steps
(medians and every round, peak RSS), the goals of issue #15 against the numbers, and — when
given — the 100-step quality run's output (tools/bench-bf16/loss-100.sh).

Usage: summarize.py RESULTS.jsonl [LOSS100.txt]"""
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
meta = next((r for r in rows if r["kind"] == "meta"), {})
gemm = [r["row"] for r in rows if r["kind"] == "gemm"]
steps = [r for r in rows if r["kind"] == "step"]
rounds = max((s["round"] for s in steps), default=0)

print("## bf16 mixed precision (CPU, issue #15)\n")
print(f"`tools/bench-bf16/run.sh {meta.get('args', '')}`".rstrip() + f" on {meta.get('cpu', 'this CPU')}, "
      f"{meta.get('threads', '?')} threads, {meta.get('date', '')}: {rounds} alternating rounds of sft f32, sft bf16 and "
      "PyTorch + PEFT under `torch.autocast(\"cpu\", dtype=torch.bfloat16)` with bf16 base weights, LoRA and full "
      "finetuning, batch 1 × 512 on SmolLM2-135M-Instruct, one fresh process per measurement (its own peak RSS).\n")

peak = next((g for g in gemm if g.get("name") == "vdpbf16ps peak"), None)
print(f"### bf16 GEMM (`sftctl bench bf16 --runs 5`, median of 5)\n")
if peak:
    print(f"`vdpbf16ps` peak of the register-only loop: {peak['gflops_1_thread']:.1f} GFLOP/s on 1 core, "
          f"{peak['gflops']:.1f} on {peak['threads']} (micro-kernel in use: {peak['variant']}).\n")
by_shape = {}
for g in gemm:
    if "shape" not in g or "gflops" not in g: continue
    kind, _, rest = g["name"].partition(" ")
    if kind == "sgemm":
        by_shape.setdefault((rest, g["shape"]), {})["sgemm"] = g
    else:   # "bf16 <variant> <name>"
        variant, _, name = rest.partition(" ")
        by_shape.setdefault((name, g["shape"]), {})[variant] = g
variants = [v for v in ["avx512bf16", "avx512", "avx2", "generic"] if any(v in d for d in by_shape.values())]
head = ["GEMM", "M×K×N", "sgemm"] + [f"bf16 {v}" for v in variants] + ["× sgemm", "of vdpbf16ps peak"]
print("| " + " | ".join(head) + " |\n|" + " --- |" * len(head))
for (name, shape), d in by_shape.items():
    best = d.get("avx512bf16") or (d.get(variants[0]) if variants else None)
    cells = [name, shape, f"{d['sgemm']['gflops']:.1f}" if "sgemm" in d else ""]
    cells += [f"{d[v]['gflops']:.1f}" if v in d else "" for v in variants]
    cells += [f"{best['vs_sgemm']:.2f}×" if best else "", f"{100 * best['of_peak']:.0f}%" if best and "of_peak" in best else ""]
    print("| " + " | ".join(cells) + " |")

print(f"\n### Training step (batch 1 × 512, median step of {meta.get('steps', '?')} after a warm-up, per round)\n")
print("| method | run | median step s | × sft f32 | × torch bf16 | peak RSS MiB | every round (s) |\n| --- | --- | --- | --- | --- | --- | --- |")
med = {}
for method in ["lora", "full"]:
    for who in ["sft-f32", "sft-bf16", "torch-bf16"]:
        r = [s["row"] for s in steps if s["method"] == method and s["who"] == who]
        if r: med[method, who] = (statistics.median(x["step_seconds"] for x in r), statistics.median(x["peak_rss_bytes"] for x in r), r)
    for who in ["sft-f32", "sft-bf16", "torch-bf16"]:
        if (method, who) not in med: continue
        t, rss, r = med[method, who]
        vs32 = med[method, "sft-f32"][0] / t if (method, "sft-f32") in med else float("nan")
        vst = med[method, "torch-bf16"][0] / t if (method, "torch-bf16") in med else float("nan")
        print(f"| {method} | {who} | {t:.3f} | {vs32:.2f} | {vst:.2f} | {rss / 2**20:.0f} | "
              + " ".join(f"{x['step_seconds']:.3f}" for x in r) + " |")

print("\n### Against the goals of issue #15\n")
def goal(text, value, ok): print(f"- {text}: {value} — {'met' if ok else 'not met'}")
if ("lora", "sft-bf16") in med and ("lora", "sft-f32") in med:
    x = med["lora", "sft-f32"][0] / med["lora", "sft-bf16"][0]
    goal("LoRA step, sft bf16 vs sft f32 (≥ 1.6×)", f"{x:.2f}×", x >= 1.6)
if ("lora", "sft-bf16") in med and ("lora", "torch-bf16") in med:
    x = med["lora", "torch-bf16"][0] / med["lora", "sft-bf16"][0]
    goal("LoRA step, sft bf16 vs PyTorch + PEFT bf16 autocast (≥ 1.5×)", f"{x:.2f}×", x >= 1.5)
    r = med["lora", "sft-bf16"][1] / med["lora", "torch-bf16"][1]
    goal("peak RSS, sft bf16 vs PyTorch (≤ 0.5×)", f"{r:.2f}×", r <= 0.5)
fast = [d["avx512bf16"] for d in by_shape.values() if "avx512bf16" in d and "of_peak" in d["avx512bf16"]]
if fast:
    lo, hi = min(g["of_peak"] for g in fast), max(g["of_peak"] for g in fast)
    goal(f"bf16 GEMM of the vdpbf16ps peak (≥ 75%), peak {peak['gflops']:.1f} GFLOP/s" if peak else "bf16 GEMM of the vdpbf16ps peak (≥ 75%)",
         f"{100 * lo:.0f}–{100 * hi:.0f}% over the shapes above", lo >= 0.75)

if len(sys.argv) > 2:
    print("\n### Quality: 100-step LoRA finetune, f32 vs bf16 (`tools/bench-bf16/loss-100.sh`)\n\n```")
    print(open(sys.argv[2]).read().rstrip())
    print("```")
