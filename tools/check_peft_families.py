#!/usr/bin/env python3
"""Checks, for every family in the zoo, that the LoRA adapter sft writes after a short finetune
loads in Python PEFT and gives sft's loss.

For each tiny fixture config in Tests/SFTCoreTests/Fixtures/model/zoo (vocabulary widened to the
gpt2 fixture tokenizer's), this script
  - builds the model in transformers with weights large enough that logits are far from
    uniform, and saves it with the gpt2 fixture tokenizer as an HF folder;
  - runs `sftctl finetune` (LoRA r=4 on PEFT's default targets for the family, all-linear where
    PEFT has none (phi3), 3 steps of lr 1e-2 on Examples/data/dolly.jsonl) -> OUT/adapter;
  - runs `sftctl eval --model FOLDER --adapter OUT/adapter --text-file T --json`, and
    `sftctl eval` without the adapter;
  - loads the folder in transformers, attaches the adapter with PeftModel.from_pretrained, and
    compares its mean next-token loss on the same text (tokenized by transformers from the
    same tokenizer.json) with sft's: within 1e-4 relative. The adapter must also move the loss
    (|with - without| > 1e-6), or the comparison would prove nothing.
The summary goes to Tests/SFTCoreTests/Fixtures/export/results/peft_families.json.

Usage: python3 tools/check_peft_families.py [--dir DIR] [--sftctl PATH]
Needs: pip install torch transformers peft safetensors; swift build -c release (for sftctl)
"""
import json, os, shutil, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_check import ROOT, FIX, arguments, record

TOL = 1e-4
TEXT = "The quick brown fox jumps over the lazy dog. 12 + 30 = 42, isn't it? Paris is the capital of France."
# PEFT's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, read from the installed peft.


def main():
    ap = arguments(gguf=False)
    ap.add_argument("--sftctl", default=os.path.join(ROOT, ".build", "release", "sftctl"))
    ap.add_argument("--families", default="")
    a = ap.parse_args()
    import torch, transformers, peft
    from peft import PeftModel
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(2)
    torch.manual_seed(0)
    zoo = os.path.join(FIX, "model", "zoo")
    tok_dir = os.path.join(FIX, "tokenizers", "gpt2")
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    base_dir = os.path.join(a.dir, "peft_families")
    os.makedirs(base_dir, exist_ok=True)
    text_file = os.path.join(base_dir, "text.txt")
    open(text_file, "w").write(TEXT)
    ids = torch.tensor([tokenizer(TEXT)["input_ids"]])
    report = {"script": "tools/check_peft_families.py", "tolerance": TOL, "text_tokens": ids.shape[1],
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
              "families": {}}
    ok = True
    families = [f for f in sorted(os.listdir(zoo)) if os.path.isdir(os.path.join(zoo, f))]
    if a.families:
        families = [f for f in families if f in a.families.split(",")]
    for family in families:
        cfg = json.load(open(os.path.join(zoo, family, "config.json")))
        cfg["vocab_size"] = len(tokenizer)
        folder = os.path.join(base_dir, family)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        config = AutoConfig.for_model(**{k: v for k, v in cfg.items() if k not in ("transformers_version",)})
        config._attn_implementation = "eager"
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    # Gemma's norms are zero-centred (1 + w).
                    p.copy_((0.0 if cfg["model_type"] in ("gemma2", "gemma3_text") else 1.0) + 0.1 * torch.randn_like(p))
                else:
                    p.copy_(0.2 * torch.randn_like(p))
        model.save_pretrained(folder)
        for f in os.listdir(tok_dir):
            if f.startswith("tokenizer"):
                shutil.copy(os.path.join(tok_dir, f), folder)
        targets = PEFT_TARGETS.get(cfg["model_type"]) or ["all-linear"]
        out = os.path.join(folder, "run")
        run_cfg = {"model": folder, "data": os.path.join(ROOT, "Examples", "data", "dolly.jsonl"), "format": "dolly",
                   "template": "alpaca", "output_dir": out, "method": "lora", "lora_r": 4, "lora_alpha": 8,
                   "lora_dropout": 0.0, "lora_target_modules": targets, "learning_rate": 1e-2, "max_steps": 3,
                   "num_train_epochs": 3, "max_seq_length": 256, "packing": True, "per_device_train_batch_size": 1,
                   "save_steps": 100}
        cfg_file = os.path.join(folder, "finetune.json")
        json.dump(run_cfg, open(cfg_file, "w"))
        entry = {"model_type": cfg["model_type"], "targets": targets}
        try:
            subprocess.run([a.sftctl, "finetune", "--config", cfg_file], check=True, capture_output=True, text=True)
            adapter = os.path.join(out, "adapter")

            def sft_eval(*extra):
                r = subprocess.run([a.sftctl, "eval", "--model", folder, "--text-file", text_file, "--json", *extra],
                                   check=True, capture_output=True, text=True)
                return json.loads(r.stdout.strip().splitlines()[-1])
            sft_with, sft_without = sft_eval("--adapter", adapter), sft_eval()
            base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
            pm = PeftModel.from_pretrained(base, adapter).eval()
            with torch.no_grad():
                logits = pm(ids).logits[0, :-1].double()
                loss = torch.nn.functional.cross_entropy(logits, ids[0, 1:]).item()
            entry.update({"sft_loss": sft_with["mean_loss"], "sft_tokens": sft_with["tokens"], "peft_loss": loss,
                          "peft_tokens": ids.shape[1] - 1, "sft_loss_without_adapter": sft_without["mean_loss"],
                          "adapter_config_targets": json.load(open(os.path.join(adapter, "adapter_config.json")))["target_modules"]})
            rel = abs(sft_with["mean_loss"] - loss) / abs(loss)
            moved = abs(sft_with["mean_loss"] - sft_without["mean_loss"])
            entry.update({"relative_diff": rel, "adapter_effect": moved})
            passed = rel <= TOL and moved > 1e-6 and sft_with["tokens"] == ids.shape[1] - 1
        except subprocess.CalledProcessError as e:
            entry["error"] = (e.stderr or "")[-2000:]
            passed = False
        entry["pass"] = passed
        report["families"][family] = entry
        print(family, json.dumps(entry)[:400])
        ok = ok and passed
    record(report, ok, "peft_families")


if __name__ == "__main__":
    main()
