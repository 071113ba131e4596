#!/usr/bin/env python3
"""Checks the GGUF files sft writes for every family in the zoo with the Python `gguf` package
(llama.cpp's own gguf-py: its reader, its per-architecture tensor lists and its HF→GGUF name map).

The Swift test ZooExportTests.testEveryFamilyExportsAsGGUFAndReloadsWithTheSameLogits, run with
$SFT_EXPORT_DIR set, leaves DIR/zoo_gguf/<family>.gguf for each tiny HF fixture in
Tests/SFTCoreTests/Fixtures/model/zoo. For each file this script checks that
  - GGUFReader reads it, and general.architecture is the one llama.cpp uses for the family;
  - every tensor is one llama.cpp's architecture defines (gguf.MODEL_TENSORS), and is the
    GGUF name gguf-py's TensorNameMap gives the HF tensor it came from;
  - its values are the HF fixture's, as llama.cpp's converter stores them: q/k rows permuted for
    the "llama" architecture, Gemma's norms as 1 + w, fused tensors (phi3 qkv / gate_up, mpt
    Wqkv) unchanged;
  - the hyper-parameter keys llama.cpp needs are present and equal the HF config's.
The summary goes to Tests/SFTCoreTests/Fixtures/export/results/gguf_families.json.

Usage: python3 tools/check_gguf_families.py [--dir DIR] [--no-swift]
Needs: pip install gguf numpy safetensors
"""
import json, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_check import arguments, swift_test, record, FIX

ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "phi3": "phi3",
        "gemma2": "gemma2", "gemma3_text": "gemma3", "mpt": "mpt"}


def permute(w, heads):
    """llama.cpp's converter order of q/k rows for the llama architecture: per head, HF row
    s*D/2 + i goes to row 2i + s."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    a = arguments(gguf=False).parse_args()
    swift_test(a, "ZooExportTests.testEveryFamilyExportsAsGGUFAndReloadsWithTheSameLogits")
    import numpy as np, gguf
    from gguf import GGUFReader
    from safetensors.numpy import load_file
    import importlib.metadata as md
    report = {"script": "tools/check_gguf_families.py", "versions": {"gguf": md.version("gguf"), "numpy": np.__version__},
              "families": {}}
    ok = True
    zoo = os.path.join(FIX, "model", "zoo")
    for family in sorted(d for d in os.listdir(zoo) if os.path.isdir(os.path.join(zoo, d))):
        path = os.path.join(a.dir, "zoo_gguf", family + ".gguf")
        cfg = json.load(open(os.path.join(zoo, family, "config.json")))
        hf = load_file(os.path.join(zoo, family, "model.safetensors"))
        r = GGUFReader(path)
        arch = r.fields["general.architecture"].contents()
        problems = []
        if arch != ARCH[cfg["model_type"]]:
            problems.append(f"architecture {arch}, expected {ARCH[cfg['model_type']]}")
        march = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
        n_layers = cfg.get("num_hidden_layers", cfg.get("n_layers"))
        defined = {gguf.TENSOR_NAMES[t].format(bid=b) for t in gguf.MODEL_TENSORS[march] for b in range(n_layers)}
        names = gguf.get_tensor_name_map(march, n_layers)
        tensors = {t.name: t for t in r.tensors}
        for t in r.tensors:
            if t.name.rsplit(".", 1)[0] not in defined:
                problems.append(f"tensor {t.name} is not defined for {arch}")
        heads = cfg.get("num_attention_heads", cfg.get("n_heads"))
        kv_heads = cfg.get("num_key_value_heads", heads)
        compared = 0
        for hf_name, w in hf.items():
            if hf_name == "lm_head.weight" and cfg.get("tie_word_embeddings", False):
                continue
            g = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if g is None or g not in tensors:
                problems.append(f"{hf_name}: gguf-py maps it to {g}, not in the file")
                continue
            stored = np.asarray(tensors[g].data, dtype=np.float32).reshape(w.shape)
            expected = w.astype(np.float32)
            if arch == "llama" and (".attn_q." in g or ".attn_k." in g):
                expected = permute(expected, heads if ".attn_q." in g else kv_heads)
            if arch in ("gemma2", "gemma3") and g.endswith("norm.weight"):
                expected = expected + 1
            if not np.array_equal(stored, expected):
                problems.append(f"{g}: values differ from {hf_name} (max {np.abs(stored - expected).max()})")
            compared += 1
        # Hyper-parameters llama.cpp reads, against the HF config.
        def key(k):
            f = r.fields.get(f"{arch}.{k}")
            return None if f is None else f.contents()
        want = {"block_count": n_layers, "embedding_length": cfg.get("hidden_size", cfg.get("d_model")),
                "attention.head_count": heads}
        if arch == "mpt":
            want.update({"feed_forward_length": 4 * cfg["d_model"], "context_length": cfg["max_seq_len"],
                         "attention.max_alibi_bias": cfg["attn_config"].get("alibi_bias_max", 8)})
            if cfg["attn_config"].get("clip_qkv") is not None:
                want["attention.clamp_kqv"] = cfg["attn_config"]["clip_qkv"]
        else:
            want.update({"feed_forward_length": cfg["intermediate_size"], "context_length": cfg["max_position_embeddings"],
                         "attention.head_count_kv": kv_heads})
        if arch == "gemma3":
            want.update({"attention.sliding_window": cfg["sliding_window"], "attention.key_length": cfg["head_dim"],
                         "rope.freq_base": cfg["rope_parameters"]["full_attention"]["rope_theta"]})
        if arch == "gemma2":
            want.update({"attention.sliding_window": cfg["sliding_window"], "attention.key_length": cfg["head_dim"],
                         "attn_logit_softcapping": cfg["attn_logit_softcapping"],
                         "final_logit_softcapping": cfg["final_logit_softcapping"],
                         "rope.freq_base": cfg["rope_parameters"]["rope_theta"]})
        if arch == "phi3":
            want["attention.sliding_window"] = cfg.get("sliding_window") or 0
            rp = cfg.get("rope_parameters") or {}
            if rp.get("rope_type") == "longrope":
                want["rope.scaling.original_context_length"] = cfg["original_max_position_embeddings"]
                for kind in ("long", "short"):
                    t = tensors.get(f"rope_factors_{kind}.weight")
                    if t is None or not np.allclose(np.asarray(t.data), np.array(rp[f"{kind}_factor"], dtype=np.float32)):
                        problems.append(f"rope_factors_{kind}.weight missing or not the config's {kind}_factor")
        for k, v in want.items():
            got = key(k)
            if got is None or abs(float(got) - float(v)) > 1e-6 * max(1.0, abs(float(v))):
                problems.append(f"{arch}.{k} = {got}, expected {v}")
        report["families"][family] = {"architecture": arch, "tensors": len(r.tensors), "compared_with_hf": compared,
                                      "problems": problems}
        print(family, arch, f"{len(r.tensors)} tensors, {compared} compared with HF,", "OK" if not problems else problems)
        ok = ok and not problems
    record(report, ok, "gguf_families")


if __name__ == "__main__":
    main()
