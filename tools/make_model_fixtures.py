#!/usr/bin/env python3
"""Golden values for the Llama model test: SmolLM2-135M-Instruct (the GGUF from scripts/fetch-assets)
run by transformers in float32 on the GGUF's own dequantized weights.

Writes Tests/SFTCoreTests/Fixtures/model/smollm2_golden.json with, per text: token ids (from the
HF `tokenizers` reference built with SmolLM2's real pre-tokenizer: Digits(individual) + ByteLevel,
since transformers' GGUF tokenizer conversion misses the digit split), mean next-token loss,
the top-5 logits at the last position, and a 24-token greedy continuation with the reference's
top-two logit gap at every step.

Usage: python3 tools/make_model_fixtures.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]
Needs: pip install torch transformers gguf tokenizers
"""
import json, os, sys
import torch, transformers, gguf, tokenizers
from transformers import AutoModelForCausalLM
from tokenizers import Tokenizer, models, pre_tokenizers, decoders

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, ".assets", "SmolLM2-135M-Instruct.Q4_1.gguf")

# Reference tokenizer from the GGUF vocabulary with SmolLM2's pre-tokenizer.
reader = gguf.GGUFReader(path)
def field(name):
    f = reader.fields[name]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
tokens = field("tokenizer.ggml.tokens")
merges = [tuple(m.split(" ", 1)) for m in field("tokenizer.ggml.merges")]
tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, ignore_merges=False))
tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
tok.decoder = decoders.ByteLevel()
types = reader.fields["tokenizer.ggml.token_type"]
special = [tokens[i] for i, ti in enumerate(types.data) if int(types.parts[ti][0]) == 3]
tok.add_special_tokens(special)

model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                             torch_dtype=torch.float32)
model.eval()

texts = {
    "prose": "The quick brown fox jumps over the lazy dog. It was a bright cold day in April, and the clocks were striking thirteen.",
    "code": "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "numbers": "In 1969, 3 astronauts flew 384400 km; pi is 3.14159 and e is 2.71828.",
    "chatml": "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "multilingual": "Café naïve — 東京は日本の首都です。 مرحبا بالعالم 🙂🚀",
}
out = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                    "gguf": getattr(gguf, "__version__", "?"), "tokenizers": tokenizers.__version__},
       "model": os.path.basename(path), "texts": {}}
with torch.no_grad():
    for name, text in texts.items():
        ids = tok.encode(text).ids
        x = torch.tensor([ids])
        logits = model(x).logits[0]
        loss = torch.nn.functional.cross_entropy(logits[:-1], x[0, 1:]).item()
        top = torch.topk(logits[-1], 5)
        seq = list(ids)
        greedy, gaps = [], []
        for _ in range(24):
            lg = model(torch.tensor([seq])).logits[0, -1]
            t2 = torch.topk(lg, 2)
            greedy.append(int(t2.indices[0])); gaps.append(float(t2.values[0] - t2.values[1]))
            seq.append(int(t2.indices[0]))
        out["texts"][name] = {"text": text, "ids": ids, "mean_loss": loss,
                              "top5_ids": top.indices.tolist(), "top5_logits": top.values.tolist(),
                              "greedy": greedy, "greedy_gaps": gaps}
        print(name, len(ids), "tokens, loss", round(loss, 4), "greedy:", repr(tok.decode(greedy)))
dest = os.path.join(root, "Tests", "SFTCoreTests", "Fixtures", "model", "smollm2_golden.json")
with open(dest, "w") as f:
    json.dump(out, f, indent=1, ensure_ascii=False)
print("wrote", dest)
