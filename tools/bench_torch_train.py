#!/usr/bin/env python3
"""The PyTorch + PEFT side of `sftctl bench train`: the same model (SmolLM2-135M-Instruct,
dequantized from the GGUF to float32 by transformers), the same LoRA (r=16, alpha=32, dropout 0,
all linear layers) or full finetuning, batch 1 x SEQ random tokens, AdamW, grad clipping 1.0.
Prints one JSON line: median step seconds over STEPS steps after a warm-up, tokens/s, peak RSS.

Usage: python3 tools/bench_torch_train.py [--method lora|full] [--seq 512] [--steps 3] [--threads 2]
"""
import argparse, json, os, resource, sys, time
ap = argparse.ArgumentParser()
ap.add_argument("--model", default=os.path.join(os.path.dirname(__file__), "..", ".assets", "SmolLM2-135M-Instruct.Q4_1.gguf"))
ap.add_argument("--method", default="lora")
ap.add_argument("--seq", type=int, default=512)
ap.add_argument("--steps", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--lora-r", type=int, default=16)
ap.add_argument("--checkpointing", action="store_true")
ap.add_argument("--mode", default="train", help="train | forward | decode")
ap.add_argument("--tokens", type=int, default=64)
a = ap.parse_args()

import torch
torch.set_num_threads(a.threads)
from transformers import AutoModelForCausalLM
path = os.path.abspath(a.model)
model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32)
g = torch.Generator().manual_seed(1)
ids = torch.randint(0, model.config.vocab_size, (1, a.seq), generator=g)

if a.mode == "forward":
    model.eval()
    times = []
    with torch.no_grad():
        for i in range(a.steps + 1):
            t0 = time.perf_counter(); model(ids); t = time.perf_counter() - t0
            if i: times.append(t)
    times.sort(); med = times[len(times) // 2]
    print(json.dumps({"peer": "pytorch", "mode": "forward", "seq": a.seq, "seconds": med, "tokens_per_second": a.seq / med,
                      "torch": torch.__version__}))
    sys.exit()
if a.mode == "decode":
    model.eval()
    prompt = ids[:, :8]
    speeds = []
    for i in range(a.steps):
        t0 = time.perf_counter()
        out = model.generate(prompt, max_new_tokens=a.tokens, min_new_tokens=a.tokens, do_sample=False)
        speeds.append(a.tokens / (time.perf_counter() - t0))
    speeds.sort()
    print(json.dumps({"peer": "transformers.generate", "mode": "decode", "tokens": a.tokens,
                      "decode_tokens_per_second": speeds[len(speeds) // 2], "torch": torch.__version__}))
    sys.exit()

if a.method == "lora":
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(model, LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r, lora_dropout=0.0,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
if a.checkpointing:
    model.gradient_checkpointing_enable()
    model.enable_input_require_grads()
model.train()
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-5)
times = []
for i in range(a.steps + 1):
    t0 = time.perf_counter()
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step(); opt.zero_grad(set_to_none=True)
    t = time.perf_counter() - t0
    if i: times.append(t)
times.sort(); med = times[len(times) // 2]
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"peer": "pytorch+peft" if a.method == "lora" else "pytorch", "method": a.method, "seq": a.seq,
                  "step_seconds": med, "tokens_per_second": a.seq / med, "peak_rss_bytes": rss,
                  "torch": torch.__version__, "threads": a.threads}))
