#!/usr/bin/env python3
"""Checks GGUF files written by sft (GGUFExport.save) with independent readers.

The Swift test GGUFExportTests.testSmolLM2ExportedAsGGUFReloadsWithIdenticalLogitsAndKeys, run
with $SFT_EXPORT_DIR set, exports SmolLM2-135M-Instruct (the GGUF in .assets, dequantized) to
DIR/gguf_smollm2/smollm2-f32.gguf and smollm2-q8_0.gguf, and dumps sft's logits of one ChatML
text to DIR/gguf_smollm2/sft_logits.safetensors. This script
  - reads both files with the `gguf` package (GGUFReader): every tokenizer.* and llama.* field
    must equal the original file's, and the tensor names and shapes must be the original's;
  - quantizes each tensor of the f32 export with gguf's own Q8_0 quantizer (gguf.quants) and
    compares the bytes with sft's Q8_0 export;
  - loads the f32 export in transformers (its GGUF loader un-permutes q/k itself) and compares
    its logits with sft's, and with transformers' logits on the original GGUF.
The summary goes to Tests/SFTCoreTests/Fixtures/export/results/gguf_export.json.

Usage: python3 tools/check_gguf_export.py [--dir DIR] [--no-swift] [--gguf PATH]
Needs: pip install gguf numpy torch transformers safetensors
"""
import os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_check import arguments, swift_test, record

TOL = 1e-4


def main():
    a = arguments().parse_args()
    swift_test(a, "GGUFExportTests.testSmolLM2ExportedAsGGUFReloadsWithIdenticalLogitsAndKeys")

    import numpy as np, gguf, torch, transformers
    from gguf import GGUFReader, GGMLQuantizationType
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(2)
    folder = os.path.join(a.dir, "gguf_smollm2")
    f32_path, q8_path = os.path.join(folder, "smollm2-f32.gguf"), os.path.join(folder, "smollm2-q8_0.gguf")
    import importlib.metadata as md
    report = {"script": "tools/check_gguf_export.py", "tolerance": TOL,
              "versions": {"gguf": md.version("gguf"), "numpy": np.__version__, "torch": torch.__version__,
                           "transformers": transformers.__version__}}

    orig, f32, q8 = GGUFReader(a.gguf), GGUFReader(f32_path), GGUFReader(q8_path)

    def value(r, k):
        return r.fields[k].contents()

    keys = [k for k in orig.fields if k.startswith("tokenizer.") or k.startswith("llama.")]
    differing = [k for k in keys if k not in f32.fields or value(f32, k) != value(orig, k)]
    shapes = {t.name: list(t.shape) for t in orig.tensors}
    report["metadata"] = {"keys_compared": len(keys), "differing": differing,
                          "architecture": value(f32, "general.architecture"), "file_type": value(f32, "general.file_type")}
    report["tensors"] = {"count": len(f32.tensors), "same_names_and_shapes": {t.name: list(t.shape) for t in f32.tensors} == shapes,
                         "types": sorted({t.tensor_type.name for t in f32.tensors})}
    print("metadata:", report["metadata"], "tensors:", report["tensors"])

    q8_tensors = {t.name: t for t in q8.tensors}
    same, quantized, worst = 0, 0, 0.0
    for t in f32.tensors:
        q = q8_tensors[t.name]
        if q.tensor_type != GGMLQuantizationType.Q8_0:
            continue
        quantized += 1
        values = np.asarray(t.data, dtype=np.float32).reshape(q.shape[::-1].tolist())
        ref = gguf.quants.quantize(values, GGMLQuantizationType.Q8_0)
        same += int(np.array_equal(np.asarray(ref).view(np.uint8).ravel(), np.asarray(q.data).view(np.uint8).ravel()))
        deq = gguf.quants.dequantize(np.asarray(q.data), GGMLQuantizationType.Q8_0)
        worst = max(worst, float(np.abs(deq.reshape(values.shape) - values).max()))
    report["q8_0"] = {"tensors": quantized, "bytes_equal_to_gguf_quantizer": same,
                      "max_abs_dequant_error": worst, "types": sorted({t.tensor_type.name for t in q8.tensors})}
    print("q8_0:", report["q8_0"])

    with safe_open(os.path.join(folder, "sft_logits.safetensors"), "pt") as f:
        ids, ref = f.get_tensor("ids").long(), f.get_tensor("logits")

    def logits(path):
        m = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                 dtype=torch.float32).eval()
        with torch.no_grad():
            return m(ids[None]).logits[0].float()

    def compare(x, y):
        d = (x - y).abs()
        return {"max_abs_diff": d.max().item(), "mean_abs_diff": d.mean().item(),
                "argmax_agreement": (x.argmax(-1) == y.argmax(-1)).float().mean().item()}

    exported = logits(f32_path)
    report["transformers_vs_sft"] = dict(compare(exported, ref), tokens=len(ids))
    report["transformers_export_vs_original_gguf"] = compare(exported, logits(a.gguf))
    print("transformers(export) vs sft:", report["transformers_vs_sft"])
    print("transformers(export) vs transformers(original):", report["transformers_export_vs_original_gguf"])

    ok = (not differing and report["tensors"]["same_names_and_shapes"] and quantized > 0
          and same == quantized and report["transformers_vs_sft"]["max_abs_diff"] <= TOL)
    record(report, ok, "gguf_export")


if __name__ == "__main__":
    main()
