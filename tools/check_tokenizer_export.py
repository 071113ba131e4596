#!/usr/bin/env python3
"""Checks that tokenizer files written by sft (TokenizerSpec.writeHuggingFace) load in HF
`tokenizers` and in transformers' AutoTokenizer and give the reference ids.

sft writes the files in the Swift test TokenizerExportTests (kept under $SFT_EXPORT_DIR): SmolLM2's
tokenizer from the real GGUF, and the round-tripped tokenizer fixtures (gpt2, llama3, sp_legacy,
sp_metaspace, sp_gguf). For every text of Tests/SFTCoreTests/Fixtures/tokenizers/<name>/golden.json
(ids made by the reference tokenizers: HF tokenizers, sentencepiece) this script compares
  - tokenizers.Tokenizer.from_file(tokenizer.json).encode(text, add_special_tokens=True/False)
  - AutoTokenizer.from_pretrained(folder)(text, add_special_tokens=True/False)
with the golden ids, and the decode of the ids with the golden decode where one is recorded.
The summary goes to Tests/SFTCoreTests/Fixtures/export/results/tokenizer_export.json.

Usage: python3 tools/check_tokenizer_export.py [--dir DIR] [--no-swift]
  --dir DIR    where sft wrote the folders (default /tmp/sft-export-check); unless --no-swift,
               the script first runs the Swift test with SFT_EXPORT_DIR=DIR to write them.
Needs: pip install tokenizers transformers
"""
import json, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_check import FIX, arguments, swift_test, record


def main():
    a = arguments(gguf=False).parse_args()
    swift_test(a, "TokenizerExportTests")

    import tokenizers, transformers
    from transformers import AutoTokenizer
    report = {"script": "tools/check_tokenizer_export.py",
              "versions": {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__},
              "tokenizers": {}}
    ok = True
    for name in ["smollm2", "gpt2", "llama3", "sp_legacy", "sp_metaspace", "sp_gguf"]:
        folder = os.path.join(a.dir, "tokenizer_" + name)
        golden = json.load(open(os.path.join(FIX, "tokenizers", name, "golden.json")))["cases"]
        fast = tokenizers.Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        auto = AutoTokenizer.from_pretrained(folder)
        r = {"texts": len(golden), "auto_class": type(auto).__name__, "tokenizers_mismatches": 0,
             "auto_mismatches": 0, "decode_mismatches": 0, "first_mismatch": None}
        for c in golden:
            for special, want in [(True, c["ids"]), (False, c["ids_no_special"])]:
                got_fast = fast.encode(c["text"], add_special_tokens=special).ids
                got_auto = auto(c["text"], add_special_tokens=special)["input_ids"]
                for key, got in [("tokenizers_mismatches", got_fast), ("auto_mismatches", got_auto)]:
                    if got != want:
                        r[key] += 1
                        if r["first_mismatch"] is None:
                            k = next((i for i, (x, y) in enumerate(zip(got, want)) if x != y), min(len(got), len(want)))
                            r["first_mismatch"] = {"via": key, "text": c["text"], "special": special, "at": k,
                                                   "got": got[k:k + 5], "want": want[k:k + 5]}
            if c.get("decoded") is not None and fast.decode(c["ids"], skip_special_tokens=False) != c["decoded"]:
                r["decode_mismatches"] += 1
        r["pass"] = r["tokenizers_mismatches"] == 0 and r["auto_mismatches"] == 0
        ok = ok and r["pass"]
        report["tokenizers"][name] = r
        print(name, json.dumps(r, ensure_ascii=False))
    record(report, ok, "tokenizer_export", ensure_ascii=False)


if __name__ == "__main__":
    main()
