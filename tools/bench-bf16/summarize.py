#!/usr/bin/env python3
"""Summarizes tools/bench-bf16/run.sh's JSON lines as the Markdown tables of BENCHMARKS.md."""
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
gemm = [r["row"] for r in rows if r["kind"] == "gemm"]
for g in gemm:
    if g.get("name") == "vdpbf16ps peak":
        print(f"vdpbf16ps peak: {g['gflops_1_thread']:.1f} GFLOP/s on 1 core, {g['gflops']:.1f} on {g['threads']} "
              f"(micro-kernel {g['variant']})\n")
print("| GEMM | shape | GFLOP/s (median) | vs sgemm | of vdpbf16ps peak |\n| --- | --- | --- | --- | --- |")
for g in gemm:
    if "gflops" in g and "shape" in g:
        print(f"| {g['name']} | {g['shape']} | {g['gflops']:.1f} | {g.get('vs_sgemm', 1):.2f}x | "
              + (f"{100 * g['of_peak']:.0f}%" if "of_peak" in g else "") + " |")
steps = [r for r in rows if r["kind"] == "step"]
print("\n| method | run | median step s | x sft f32 | x torch bf16 | peak RSS MiB | every round (s) |\n| --- | --- | --- | --- | --- | --- | --- |")
for method in ["lora", "full"]:
    med = {}
    for who in ["sft-f32", "sft-bf16", "torch-bf16"]:
        r = [s["row"] for s in steps if s["method"] == method and s["who"] == who]
        if r: med[who] = (statistics.median(x["step_seconds"] for x in r), statistics.median(x["peak_rss_bytes"] for x in r), r)
    for who, (t, rss, r) in med.items():
        vs32 = med["sft-f32"][0] / t if "sft-f32" in med else float("nan")
        vst = med["torch-bf16"][0] / t if "torch-bf16" in med else float("nan")
        print(f"| {method} | {who} | {t:.3f} | {vs32:.2f} | {vst:.2f} | {rss / 2**20:.0f} | "
              + " ".join(f"{x['step_seconds']:.3f}" for x in r) + " |")
