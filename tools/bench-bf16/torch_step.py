#!/usr/bin/env python3
"""The PyTorch + PEFT side of tools/bench-bf16: one training step of SmolLM2-135M-Instruct
(dequantized from the GGUF by transformers) at batch 1 x SEQ random tokens under
torch.autocast("cpu", dtype=torch.bfloat16), AdamW, gradient clipping 1.0.
  lora: base weights cast to bf16 (frozen), LoRA r=16 alpha=32 dropout 0 on all linear layers,
        adapters kept f32 by PEFT (autocast_adapter_dtype), f32 AdamW moments.
  full: f32 master weights and moments, matmuls in bf16 under autocast (standard CPU AMP).
Prints one JSON line: median step seconds over STEPS steps after a warm-up, every step, peak RSS.

Usage: python3 tools/bench-bf16/torch_step.py [--method lora|full] [--seq 512] [--steps 3] [--threads 2]
"""
import argparse, json, os, resource, time

ap = argparse.ArgumentParser()
ap.add_argument("--model", default=os.path.join(os.path.dirname(__file__), "..", "..", ".assets", "SmolLM2-135M-Instruct.Q4_1.gguf"))
ap.add_argument("--method", default="lora", choices=["lora", "full"])
ap.add_argument("--seq", type=int, default=512)
ap.add_argument("--steps", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()

import torch
torch.set_num_threads(a.threads)
from transformers import AutoModelForCausalLM
path = os.path.abspath(a.model)
model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32)
if a.method == "lora":
    from peft import LoraConfig, get_peft_model
    model = model.to(torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
g = torch.Generator().manual_seed(1)
ids = torch.randint(0, model.config.vocab_size, (1, a.seq), generator=g)
model.train()
params = [p for p in model.parameters() if p.requires_grad]
assert all(p.dtype == torch.float32 for p in params), "trained parameters must be f32 masters"
opt = torch.optim.AdamW(params, lr=1e-5)
times = []
for i in range(a.steps + 1):
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step(); opt.zero_grad(set_to_none=True)
    t = time.perf_counter() - t0
    if i: times.append(t)
med = sorted(times)[len(times) // 2]
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"who": "pytorch+peft bf16 autocast" if a.method == "lora" else "pytorch bf16 autocast",
                  "method": a.method, "seq": a.seq, "step_seconds": med, "steps": times, "peak_rss_bytes": rss,
                  "torch": torch.__version__, "threads": a.threads}))
