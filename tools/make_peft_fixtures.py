#!/usr/bin/env python3
"""Fixtures for "sft loads adapters made by Python PEFT": a tiny random Llama saved by transformers
as an HF folder, two LoRA adapters made and saved by PEFT on it, and the reference logits.

Writes Tests/SFTCoreTests/Fixtures/export/peft_tiny/:
  base/                 config.json + model.safetensors (LlamaForCausalLM: vocab 96, hidden 32,
                        2 layers, 4 heads, 2 kv heads, head dim 8; weights N(0, 0.2), norms 1 ± 0.1)
  adapter_all_linear/   r=4, alpha=8, target_modules="all-linear", lora_B random N(0, 0.2)
  adapter_rslora/       r=8, alpha=16, use_rslora, q_proj + v_proj, modules_to_save=["lm_head"]
                        (lm_head changed), lora_B random
  reference.json        token ids and float32 logits (all positions) of the base and of base + each
                        adapter (PeftModel.from_pretrained on a fresh base), with the versions used.
The Swift test PEFTRoundTripTests loads base + adapter and compares within 1e-4.

Usage: python3 tools/make_peft_fixtures.py
Needs: pip install torch transformers peft safetensors
"""
import json, os, shutil
import torch, transformers, peft
from transformers import LlamaConfig, LlamaForCausalLM
from peft import LoraConfig, PeftModel, get_peft_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "SFTCoreTests", "Fixtures", "export", "peft_tiny")

torch.manual_seed(0)
config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                     rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                     bos_token_id=1, eos_token_id=2)
base = LlamaForCausalLM(config).eval()
with torch.no_grad():
    for name, p in base.named_parameters():
        p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name else 0.2 * torch.randn_like(p))

shutil.rmtree(OUT, ignore_errors=True)
os.makedirs(OUT)
base.save_pretrained(os.path.join(OUT, "base"), safe_serialization=True)
ids = torch.randint(0, config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(1))


def logits(model):
    with torch.no_grad():
        return model(ids).logits[0].float()


def fresh_base():
    return LlamaForCausalLM.from_pretrained(os.path.join(OUT, "base"), dtype=torch.float32).eval()


ref = {"about": "tools/make_peft_fixtures.py",
       "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
       "ids": ids[0].tolist(), "vocab": config.vocab_size, "base": logits(fresh_base()).flatten().tolist(), "adapters": {}}

adapters = {
    "adapter_all_linear": LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM"),
    "adapter_rslora": LoraConfig(r=8, lora_alpha=16, use_rslora=True, target_modules=["q_proj", "v_proj"],
                                 modules_to_save=["lm_head"], lora_dropout=0.0, task_type="CAUSAL_LM"),
}
for i, (name, lc) in enumerate(adapters.items()):
    torch.manual_seed(10 + i)
    model = get_peft_model(fresh_base(), lc)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.2 * torch.randn_like(p))
            elif "modules_to_save" in n:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(os.path.join(OUT, name), safe_serialization=True)
    # Keep the committed files free of this machine's paths and of PEFT's model card.
    os.remove(os.path.join(OUT, name, "README.md"))
    cfg_path = os.path.join(OUT, name, "adapter_config.json")
    cfg = json.load(open(cfg_path))
    cfg["base_model_name_or_path"] = "../base"
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    # The reference comes from the saved folder, loaded the way users load it.
    loaded = PeftModel.from_pretrained(fresh_base(), os.path.join(OUT, name)).eval()
    ref["adapters"][name] = logits(loaded).flatten().tolist()
    from safetensors import safe_open
    with safe_open(os.path.join(OUT, name, "adapter_model.safetensors"), "pt") as f:
        print(name, sorted(f.keys())[:3], "...", len(list(f.keys())), "tensors")
    d = (logits(loaded) - logits(fresh_base())).abs().max().item()
    print(name, "adapter effect on logits:", round(d, 4))

with open(os.path.join(OUT, "reference.json"), "w") as f:
    json.dump(ref, f)
for dirpath, _, files in os.walk(OUT):
    for fn in files:
        print(os.path.relpath(os.path.join(dirpath, fn), OUT), os.path.getsize(os.path.join(dirpath, fn)))
