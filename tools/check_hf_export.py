#!/usr/bin/env python3
"""Checks that an HF folder written by sft (HFExport.saveModel) loads in transformers and gives
sft's logits.

The Swift test HFExportTests.testSmolLM2ExportedFromGGUFReloadsWithIdenticalLogits, run with
$SFT_EXPORT_DIR set, exports SmolLM2-135M-Instruct (from the GGUF in .assets, dequantized to f32)
to DIR/hf_smollm2 and a bf16 copy to DIR/hf_smollm2_bf16, and dumps sft's logits (all positions,
whole vocabulary) of one ChatML text to DIR/sft_logits_smollm2[_bf16].safetensors. This script
  - loads DIR/hf_smollm2 with AutoModelForCausalLM (float32) and compares its logits with sft's;
  - loads DIR/hf_smollm2_bf16 upcast to float32 and compares with sft's logits of the bf16 weights
    (and loads it once more in bfloat16, as a user would, reporting the argmax agreement);
  - tokenizes the text with AutoTokenizer on the folder and compares the ids;
  - loads the original GGUF in transformers (its own dequantization and q/k un-permutation) and
    compares with the exported folder's logits: same weights, so the difference must be ~0.
The summary goes to Tests/SFTCoreTests/Fixtures/export/results/hf_export.json.

Usage: python3 tools/check_hf_export.py [--dir DIR] [--no-swift] [--gguf PATH]
Needs: pip install torch transformers safetensors gguf
"""
import os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_check import arguments, swift_test, record

TOL = 1e-4


def main():
    a = arguments().parse_args()
    swift_test(a, "HFExportTests.testSmolLM2ExportedFromGGUFReloadsWithIdenticalLogits")

    import torch, transformers, safetensors
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(2)

    def sft_dump(name):
        with safe_open(os.path.join(a.dir, name), "pt") as f:
            return f.get_tensor("ids").long(), f.get_tensor("logits"), f.metadata()["text"]

    def logits(model, ids):
        with torch.no_grad():
            return model(ids[None]).logits[0].float()

    def compare(x, y):
        d = (x - y).abs()
        return {"max_abs_diff": d.max().item(), "mean_abs_diff": d.mean().item(),
                "argmax_agreement": (x.argmax(-1) == y.argmax(-1)).float().mean().item()}

    report = {"script": "tools/check_hf_export.py", "tolerance": TOL,
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                           "safetensors": safetensors.__version__}}
    ids, ref, text = sft_dump("sft_logits_smollm2.safetensors")
    folder = os.path.join(a.dir, "hf_smollm2")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    exported = logits(model, ids)
    tok = AutoTokenizer.from_pretrained(folder)
    hf_ids = tok(text)["input_ids"]
    report["f32"] = dict(compare(exported, ref), tokens=len(ids), ids_equal=hf_ids == ids.tolist(),
                         model_class=type(model).__name__, tokenizer_class=type(tok).__name__)
    print("f32 folder vs sft:", report["f32"])

    ids16, ref16, _ = sft_dump("sft_logits_smollm2_bf16.safetensors")
    folder16 = os.path.join(a.dir, "hf_smollm2_bf16")
    up = AutoModelForCausalLM.from_pretrained(folder16, dtype=torch.float32).eval()
    report["bf16_upcast"] = compare(logits(up, ids16), ref16)
    del up
    native = AutoModelForCausalLM.from_pretrained(folder16).eval()
    report["bf16_native"] = dict(compare(logits(native, ids16), ref16), dtype=str(next(native.parameters()).dtype))
    del native
    print("bf16 folder (upcast) vs sft:", report["bf16_upcast"], "native bf16:", report["bf16_native"])

    if os.path.exists(a.gguf):
        g = AutoModelForCausalLM.from_pretrained(os.path.dirname(a.gguf), gguf_file=os.path.basename(a.gguf),
                                                 dtype=torch.float32).eval()
        report["transformers_gguf_vs_exported_folder"] = compare(logits(g, ids), exported)
        report["transformers_gguf_vs_sft"] = compare(logits(g, ids), ref)
        print("transformers(GGUF) vs transformers(folder):", report["transformers_gguf_vs_exported_folder"])

    ok = (report["f32"]["max_abs_diff"] <= TOL and report["f32"]["ids_equal"]
          and report["bf16_upcast"]["max_abs_diff"] <= TOL)
    record(report, ok, "hf_export")


if __name__ == "__main__":
    main()
