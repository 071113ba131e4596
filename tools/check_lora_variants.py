#!/usr/bin/env python3
"""Checks that LoRA-variant adapters written by sft load in Python PEFT with sft's logits: a DoRA
adapter, a PiSSA adapter saved converted for the original base (rank 2r, PEFT's
path_initial_model_for_weight_conversion form) and an rsLoRA adapter with rank_pattern /
alpha_pattern. The Swift test LoRAVariantsTests.testVariantAdaptersWrittenBySftReloadExactly, run
with $SFT_EXPORT_DIR, writes them on the tiny Llama of Fixtures/export/peft_tiny/base with sft's
logits; this script loads each with PeftModel.from_pretrained on that base (transformers) and
compares. The summary goes to Tests/SFTCoreTests/Fixtures/export/results/lora_variants.json.

Usage: python3 tools/check_lora_variants.py [--dir DIR] [--no-swift]
Needs: pip install torch transformers peft safetensors
"""
import json, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_check import ROOT, FIX, arguments, swift_test, record
import torch, transformers, peft
from transformers import LlamaForCausalLM
from peft import PeftModel

a = arguments(gguf=False).parse_args()
swift_test(a, "LoRAVariantsTests.testVariantAdaptersWrittenBySftReloadExactly")
d = os.path.join(a.dir, "lora_variants")
sft = json.load(open(os.path.join(d, "sft_logits.json")))
ids = torch.tensor([sft["ids"]])
base = os.path.join(FIX, "export", "peft_tiny", "base")
diffs = {}
for name, want in sorted(sft["logits"].items()):
    model = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base, dtype=torch.float32), os.path.join(d, name)).eval()
    with torch.no_grad():
        got = model(ids).logits[0].flatten()
    diffs[name] = (got - torch.tensor(want)).abs().max().item()
    cfg = json.load(open(os.path.join(d, name, "adapter_config.json")))
    print(f"{name}: r={cfg['r']} alpha={cfg['lora_alpha']} use_dora={cfg['use_dora']} max |PEFT - sft| = {diffs[name]:.2e}")
report = {"about": "tools/check_lora_variants.py", "max_abs_diff": diffs, "tolerance": 1e-4,
          "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}}
record(report, all(v <= 1e-4 for v in diffs.values()), "lora_variants")
