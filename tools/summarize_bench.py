#!/usr/bin/env python3
"""Summarizes tools/bench_vs_peers.sh output (JSON lines on stdin) as a Markdown table: per
measurement, sft's and the peer's number in each round, their ratio, and the median ratio over
rounds (rounds alternate sft and peer, so a busy moment on the shared machine hits one round,
not one side). Usage: tools/bench_vs_peers.sh 5 2 | tee run.jsonl | python3 tools/summarize_bench.py"""
import json, statistics, sys

rows = [json.loads(l) for l in sys.stdin if l.startswith("{")]

def key(r):
    b = r["b"]
    if "method" in b:
        return f"{b['method']} step tokens/s"
    if b.get("mode") == "forward":
        return "forward 512 tokens/s"
    return "decode tokens/s"

def value(b):
    return b.get("tokens_per_second", b.get("decode_tokens_per_second"))

table = {}  # measurement -> round -> {who: value}
for r in rows:
    who = r["who"] if r["who"] != "torch" else r["b"].get("peer", "torch")
    table.setdefault(key(r), {}).setdefault(r["round"], {})[who] = value(r["b"])
    if "peak_rss_bytes" in r["b"]:
        table.setdefault(key(r).replace("tokens/s", "peak RSS GB"), {}).setdefault(r["round"], {})[who] = r["b"]["peak_rss_bytes"] / 1e9

print("| measurement | peer | sft per round | peer per round | ratio per round | median ratio |")
print("| --- | --- | --- | --- | --- | --- |")
for m, rounds in table.items():
    peers = sorted({w for rd in rounds.values() for w in rd if w != "sft"})
    for p in peers:
        pairs = [(rd["sft"], rd[p]) for _, rd in sorted(rounds.items()) if "sft" in rd and p in rd]
        if not pairs:
            continue
        ratios = [s / q for s, q in pairs]
        fmt = lambda xs: ", ".join(f"{x:.1f}" if x >= 10 else f"{x:.2f}" for x in xs)
        print(f"| {m} | {p} | {fmt([s for s, _ in pairs])} | {fmt([q for _, q in pairs])} | "
              f"{', '.join(f'{x:.2f}' for x in ratios)} | {statistics.median(ratios):.2f}× |")
