#!/usr/bin/env python3
"""Fixtures for the LoRA variants (DoRA, rank/alpha patterns, PiSSA and OLoRA initialization), made by
Python PEFT on the tiny random Llama of tools/make_peft_fixtures.py (Fixtures/export/peft_tiny/base).

Writes Tests/SFTCoreTests/Fixtures/export/peft_variants/:
  adapter_dora/       use_dora, r=4, alpha=8, all-linear; lora_B random N(0, 0.2), magnitude × (1 ± 0.2)
  adapter_patterns/   r=4, alpha=8, q_proj/v_proj/down_proj, rank_pattern {"q_proj": 2,
                      "layers.1.mlp.down_proj": 6}, alpha_pattern {"v_proj": 3}; lora_B random
  reference.json      logits (all positions) of base + each adapter (PeftModel.from_pretrained on a
                      fresh base, the way users load it); and for init_lora_weights "pissa" and
                      "olora" (r=4, alpha=8, q_proj and down_proj) the initial s·B·A of each adapted
                      layer (sign-free, so comparable across QR/SVD conventions) and the logits of the
                      mutated model (which must equal the base's).
The Swift tests LoRAVariantsTests compare within 1e-4.

Usage: python3 tools/make_lora_variant_fixtures.py      Needs: torch transformers peft safetensors
"""
import json, os, shutil
import torch, transformers, peft
from transformers import LlamaForCausalLM
from peft import LoraConfig, PeftModel, get_peft_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "Tests", "SFTCoreTests", "Fixtures", "export", "peft_tiny", "base")
OUT = os.path.join(ROOT, "Tests", "SFTCoreTests", "Fixtures", "export", "peft_variants")
ids = torch.tensor([json.load(open(os.path.join(os.path.dirname(BASE), "reference.json")))["ids"]])


def fresh_base():
    return LlamaForCausalLM.from_pretrained(BASE, dtype=torch.float32).eval()


def logits(model):
    with torch.no_grad():
        return model(ids).logits[0].float()


def short(values):
    """float32 values in 7 significant digits (exact enough for 1e-4 comparisons, half the bytes)."""
    return [float(f"{v:.7g}") for v in values]


shutil.rmtree(OUT, ignore_errors=True)
os.makedirs(OUT)
ref = {"about": "tools/make_lora_variant_fixtures.py",
       "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
       "ids": ids[0].tolist(), "adapters": {}, "inits": {}}

adapters = {
    "adapter_dora": LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0, use_dora=True,
                               task_type="CAUSAL_LM"),
    "adapter_patterns": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0,
                                   rank_pattern={"q_proj": 2, "layers.1.mlp.down_proj": 6}, alpha_pattern={"v_proj": 3},
                                   task_type="CAUSAL_LM"),
}
for i, (name, lc) in enumerate(adapters.items()):
    torch.manual_seed(20 + i)
    model = get_peft_model(fresh_base(), lc)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.2 * torch.randn_like(p))
            elif "lora_magnitude_vector" in n:
                p.mul_(1 + 0.2 * (2 * torch.rand_like(p) - 1))
    model.save_pretrained(os.path.join(OUT, name), safe_serialization=True)
    os.remove(os.path.join(OUT, name, "README.md"))
    cfg_path = os.path.join(OUT, name, "adapter_config.json")
    cfg = json.load(open(cfg_path))
    cfg["base_model_name_or_path"] = "../../peft_tiny/base"
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    loaded = PeftModel.from_pretrained(fresh_base(), os.path.join(OUT, name)).eval()
    ref["adapters"][name] = short(logits(loaded).flatten().tolist())
    print(name, "adapter effect on logits:", round((logits(loaded) - logits(fresh_base())).abs().max().item(), 4))

for init in ["pissa", "olora"]:
    lc = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], lora_dropout=0.0, init_lora_weights=init,
                    task_type="CAUSAL_LM")
    model = get_peft_model(fresh_base(), lc).eval()
    deltas = {}
    for n, m in model.named_modules():
        if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {}):
            with torch.no_grad():
                d = m.scaling["default"] * m.lora_B["default"].weight @ m.lora_A["default"].weight
            deltas[n.removeprefix("base_model.model.")] = short(d.flatten().tolist())
    ref["inits"][init] = {"delta": deltas, "logits": short(logits(model).flatten().tolist())}
    print(init, len(deltas), "layers; logits vs base:", (logits(model) - logits(fresh_base())).abs().max().item())

with open(os.path.join(OUT, "reference.json"), "w") as f:
    json.dump(ref, f)
for dirpath, _, files in os.walk(OUT):
    for fn in files:
        print(os.path.relpath(os.path.join(dirpath, fn), OUT), os.path.getsize(os.path.join(dirpath, fn)))
