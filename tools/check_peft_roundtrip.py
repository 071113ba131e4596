#!/usr/bin/env python3
"""Checks that a LoRA adapter written by sft loads in Python PEFT and gives sft's logits, and that
`sftctl merge` / `sftctl export` outputs give the same logits in transformers.

The Swift test PEFTRoundTripTests.testAdapterWrittenBySftOnSmolLM2ReloadsExactly, run with
$SFT_EXPORT_DIR set, puts a rank-8 adapter on every linear layer of SmolLM2-135M-Instruct (random
nonzero B), saves it with PEFTAdapter.save to DIR/peft_smollm2/adapter, and dumps sft's logits
(base + adapter, all positions) of one ChatML text to DIR/peft_smollm2/sft_logits.safetensors.
This script
  - loads the base model in transformers from the GGUF (float32, transformers' own dequantization),
    attaches the adapter with PeftModel.from_pretrained, and compares the logits with sft's;
  - runs `sftctl merge --model GGUF --adapter DIR --output DIR/merged` and compares the merged
    folder's logits in transformers with PEFT's;
  - runs `sftctl export --model GGUF --adapter DIR --output DIR/merged.gguf` and compares that
    file's logits in transformers (its GGUF loader) with PEFT's.
(The other direction, adapters made by PEFT loading in sft, is tools/make_peft_fixtures.py plus
the Swift test testAdaptersMadeByPythonPEFTGivePEFTsLogits.)
The summary goes to Tests/SFTCoreTests/Fixtures/export/results/peft_roundtrip.json.

Usage: python3 tools/check_peft_roundtrip.py [--dir DIR] [--no-swift] [--gguf PATH] [--sftctl PATH]
Needs: pip install torch transformers peft safetensors gguf; swift build -c release (for sftctl)
"""
import json, os, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_check import ROOT, arguments, swift_test, record

TOL = 1e-4
# Merged weights round differently from W x + B A x in each of the 30 layers; PEFT's own
# merge_and_unload moves SmolLM2's logits by about 1e-4 too (recorded alongside).
MERGED_TOL = 2e-4


def main():
    ap = arguments()
    ap.add_argument("--sftctl", default=os.path.join(ROOT, ".build", "release", "sftctl"))
    a = ap.parse_args()
    env = swift_test(a, "PEFTRoundTripTests.testAdapterWrittenBySftOnSmolLM2ReloadsExactly")

    import torch, transformers, peft
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(2)
    folder = os.path.join(a.dir, "peft_smollm2")
    adapter = os.path.join(folder, "adapter")
    with safe_open(os.path.join(folder, "sft_logits.safetensors"), "pt") as f:
        ids, ref = f.get_tensor("ids").long(), f.get_tensor("logits")

    def run(model):
        with torch.no_grad():
            return model(ids[None]).logits[0].float()

    def compare(x, y):
        d = (x - y).abs()
        return {"max_abs_diff": d.max().item(), "mean_abs_diff": d.mean().item(),
                "argmax_agreement": (x.argmax(-1) == y.argmax(-1)).float().mean().item()}

    def from_gguf(path):
        return AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                    dtype=torch.float32).eval()

    report = {"script": "tools/check_peft_roundtrip.py", "tolerance": TOL, "merged_tolerance": MERGED_TOL,
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}}
    base = from_gguf(a.gguf)
    base_logits = run(base)
    model = PeftModel.from_pretrained(base, adapter).eval()
    lora_modules = sum(1 for n, _ in model.named_modules() if n.endswith(".lora_A"))
    peft_logits = run(model)
    report["peft_vs_sft"] = dict(compare(peft_logits, ref), tokens=len(ids), lora_modules=lora_modules,
                                 adapter_effect=(peft_logits - base_logits).abs().max().item())
    print("PEFT(sft adapter) vs sft:", report["peft_vs_sft"])
    # PEFT's own merge, for scale: folding B·A into W changes float rounding in every layer.
    report["peft_merge_and_unload_vs_peft"] = compare(run(model.merge_and_unload()), peft_logits)
    print("PEFT merge_and_unload vs PEFT:", report["peft_merge_and_unload_vs_peft"])
    del model, base

    merged = os.path.join(folder, "merged")
    out = subprocess.run([a.sftctl, "merge", "--model", a.gguf, "--adapter", adapter, "--output", merged, "--json"],
                         env=env, check=True, capture_output=True, text=True).stdout
    report["sftctl_merge_report"] = json.loads(out)
    m = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    report["merged_folder_vs_peft"] = compare(run(m), peft_logits)
    print("sftctl merge report:", report["sftctl_merge_report"])
    print("transformers(merged folder) vs PEFT:", report["merged_folder_vs_peft"])
    del m

    gguf_out = os.path.join(folder, "merged.gguf")
    out = subprocess.run([a.sftctl, "export", "--model", a.gguf, "--adapter", adapter, "--output", gguf_out, "--json"],
                         env=env, check=True, capture_output=True, text=True).stdout
    report["sftctl_export"] = json.loads(out)
    report["merged_gguf_vs_peft"] = compare(run(from_gguf(gguf_out)), peft_logits)
    print("transformers(merged GGUF) vs PEFT:", report["merged_gguf_vs_peft"])

    ok = (report["peft_vs_sft"]["max_abs_diff"] <= TOL and lora_modules == 210
          and report["peft_vs_sft"]["adapter_effect"] > 0.1
          and report["merged_folder_vs_peft"]["max_abs_diff"] <= MERGED_TOL
          and report["merged_gguf_vs_peft"]["max_abs_diff"] <= MERGED_TOL)
    record(report, ok, "peft_roundtrip")


if __name__ == "__main__":
    main()
