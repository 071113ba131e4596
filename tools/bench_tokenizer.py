#!/usr/bin/env python3
"""Tokenizer speed, sft vs HF tokenizers, on the same ShareGPT text in the same run.

Both encode the "value" strings at the start of the ShareGPT asset (same extraction: every
string after '"value": ' in file order until 2,000,000 UTF-8 bytes; strings with unpaired
surrogates skipped), one call per text, one thread (RAYON_NUM_THREADS=1), no special tokens;
HF also with encode_batch on its single thread. Each side makes `--runs` passes over the texts
with one tokenizer object (the first pass fills the word caches) and reports the median. The
ids' FNV-1a checksum must agree, so the speed is for identical output.

HF's tokenizer is SmolLM2's, rebuilt from the GGUF (tools/make_tokenizer_fixtures.py); sft
loads the same GGUF. Prints a markdown table for BENCHMARKS.md.

Usage: RAYON_NUM_THREADS=1 python3 tools/bench_tokenizer.py [--sftctl .build/release/sftctl]
Needs: pip install tokenizers gguf; a release build of sftctl.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"  # before tokenizers starts its thread pool
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tokenizer_fixtures as fx  # noqa: E402
import tokenizers  # noqa: E402

ROOT = fx.ROOT


def sharegpt_texts(path, min_bytes):
    with open(path, "rb") as f:
        raw = f.read(64 << 20)
    text = raw.decode("utf-8", errors="ignore")
    dec = json.JSONDecoder()
    marker = '"value": "'
    out, total, pos = [], 0, 0
    while total < min_bytes:
        pos = text.find(marker, pos)
        if pos < 0:
            break
        value, end = dec.raw_decode(text, pos + len(marker) - 1)
        pos = end
        try:
            n = len(value.encode("utf-8"))
        except UnicodeEncodeError:  # unpaired surrogate escape
            continue
        out.append(value)
        total += n
    return out, total


def checksum(all_ids):
    h = 0xcbf29ce484222325
    for ids in all_ids:
        for i in ids:
            h = ((h ^ i) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sftctl", default=os.path.join(ROOT, ".build", "release", "sftctl"))
    ap.add_argument("--model", default=os.path.join(fx.ASSETS, "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--bytes", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()

    data = os.path.join(fx.ASSETS, "ShareGPT_V3_unfiltered_cleaned_split.json")
    texts, nbytes = sharegpt_texts(data, a.bytes)
    t0 = time.perf_counter()
    tok = fx.smollm2_hf_tokenizer(a.model)
    hf_load = time.perf_counter() - t0

    loop_times, batch_times = [], []
    ids_first = None
    for r in range(a.runs):
        t0 = time.perf_counter()
        encs = [tok.encode(t, add_special_tokens=False) for t in texts]
        loop_times.append(time.perf_counter() - t0)
        if r == 0:
            ids_first = [e.ids for e in encs]
    for r in range(a.runs):
        t0 = time.perf_counter()
        tok.encode_batch(texts, add_special_tokens=False)
        batch_times.append(time.perf_counter() - t0)
    ntok = sum(len(x) for x in ids_first)
    hf_sum = checksum(ids_first)

    res = subprocess.run([a.sftctl, "tokenize", "--model", a.model, "--bench", "--data", data,
                          "--bytes", str(a.bytes), "--runs", str(a.runs), "--json"],
                         check=True, capture_output=True, text=True)
    sft = json.loads(res.stdout)
    same = int(sft["checksum"]) == hf_sum and sft["tokens"] == ntok and sft["bytes"] == nbytes

    med = statistics.median
    hf_loop, hf_batch, sft_med = med(loop_times), med(batch_times), sft["median_seconds"]
    print(f"texts {len(texts)}, bytes {nbytes}, tokens {ntok}; ids identical: {same}"
          f" (sft {sft['tokens']} tokens, checksum {'match' if same else 'MISMATCH'})")
    print(f"tokenizers {tokenizers.__version__}, python {platform.python_version()}, RAYON_NUM_THREADS=1")
    print()
    print("| tokenizer (1 thread) | median s | tokens/s | MB/s | vs HF encode loop | all runs (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, m, runs in (("HF tokenizers, encode() per text", hf_loop, loop_times),
                          ("HF tokenizers, encode_batch()", hf_batch, batch_times),
                          ("sft Tokenizer.encode per text", sft_med, sft["seconds"])):
        print(f"| {name} | {m:.3f} | {ntok / m:,.0f} | {nbytes / m / 1e6:.1f} | {hf_loop / m:.2f}x | "
              + " ".join(f"{x:.3f}" for x in runs) + " |")
    print()
    print(f"load: HF {hf_load:.2f} s (python GGUF read + build), sft {sft['load_seconds']:.2f} s")
    if not same:
        sys.exit("error: sft and HF ids differ on the benchmark text")


if __name__ == "__main__":
    main()
