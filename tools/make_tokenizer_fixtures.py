#!/usr/bin/env python3
"""Makes the golden fixtures for sft's tokenizer tests (Tests/SFTCoreTests/Fixtures/tokenizers/).

References (the tokenizers sft must reproduce, id for id):
  smollm2/      SmolLM2-135M-Instruct's tokenizer, rebuilt with HF `tokenizers` from the vocab and
                merges stored in the real GGUF (.assets/SmolLM2-135M-Instruct.Q4_1.gguf), with the
                pre-tokenizer of the original tokenizer.json: Sequence[Digits(individual_digits),
                ByteLevel(add_prefix_space=False, use_regex=True)]. That is also llama.cpp's "smollm"
                pre-tokenizer (regexes "\\p{N}" then the GPT-2 pattern). transformers' own GGUF
                conversion drops the digit split, so it is not used. Only golden ids are stored; the
                tests read the vocabulary from the GGUF asset.
  sp_legacy/    a small SentencePiece-style BPE (byte fallback, "▁" for spaces) in tokenizer.json
                form, as Llama-2 / Mistral ship it: normalizer Prepend("▁") + Replace(" ", "▁").
  sp_metaspace/ the same vocabulary with the newer Metaspace pre-tokenizer (prepend_scheme "first").
  llama3/       a small byte-level BPE with the Llama-3 split regex and ignore_merges (as Llama-3).
  gpt2/         a small byte-level BPE with the plain GPT-2 regex (ByteLevel(use_regex=True)).
  sp_gguf/      a real SentencePiece BPE model (trained with the `sentencepiece` package: byte
                fallback, split digits, identity normalization — Llama-2's settings), stored as a
                tokenizer-only GGUF (tokenizer.ggml.model "llama", tokens, scores, token types) the
                way llama.cpp's converter writes it; golden ids come from sentencepiece itself.

Each folder's golden.json records, per text: ids with and without the tokenizer's special tokens,
and HF's decode. The trained vocabularies are learned from a fixed English text plus a slice of
ShareGPT (.assets, or $SFT_ASSETS), so regenerating needs the assets.

Usage: python3 tools/make_tokenizer_fixtures.py [--out Tests/SFTCoreTests/Fixtures/tokenizers]
                                                [--smollm2-json PATH]  (also write the rebuilt
                                                SmolLM2 tokenizer.json there, for debugging)
Needs: pip install tokenizers sentencepiece gguf numpy
"""
import argparse
import importlib.metadata
import json
import os
import platform
import random
import sys
import tempfile

import gguf
import sentencepiece as spm
import tokenizers
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.environ.get("SFT_ASSETS") or os.path.join(ROOT, ".assets")

GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")

CHATML = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat's 12+30?"
          "<|im_end|>\n<|im_start|>assistant\n12 + 30 = 42.<|im_end|>\n")

# Hand-picked texts: every behaviour a pre-tokenizer or merge loop can get wrong.
TEXTS = [
    "",
    "Hello, world! This is a short sentence of ordinary English prose.",
    "The quick brown fox jumps over the lazy dog. It's 5 o'clock; they'll see we're done, I'm sure, you've said, he'd go.",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\nprint([fib(i) for i in range(10)])\n",
    "Numbers: 12345 and 3.14 and 1,000,000 and 2024-11-25 and -7e10 and 0x1F.",
    "Emoji: 🎉🙂 thumbs 👍🏽 family 👨\u200d👩\u200d👧 flag 🇫🇷 done",
    "中文文本：机器学习很有趣。日本語のテキストです。한국어 문장입니다.",
    "مرحبا بالعالم، هذه جملة عربية. الأرقام: ٣٤٥ و 678.",
    "Mixed: Привет мир, γειά σου κόσμε, שלום עולם, नमस्ते दुनिया, café naïve résumé.",
    "Combining marks: e\u0301 a\u0308 n\u0303 and precomposed é ä ñ; Vietnamese: Tiếng Việt có dấu.",
    "spaces:  two   three    four     five      six",
    "  leading spaces and trailing spaces   ",
    "newlines\n\nand\n\n\nmore\r\nwindows\r\n\r\nlines\n",
    "tabs\tand\t\ttabs \t mixed \n\t indentation",
    "    four leading spaces then\n        eight",
    "nbsp:\u00a0here, ideographic\u3000space, thin\u2009space, en\u2002space",
    "Contractions uppercase: IT'S THEY'RE WE'LL I'M DON'T 'S 'T 'Re 'VE",
    "quotes 'single' \"double\" `back` and punctuation!!! ??? ... --- (a) [b] {c} <d>",
    "Digits next to letters: abc123def 4x4 x86_64 v1.2.3 ①②③ Ⅻ ½ ²",
    "URL https://example.com/path?q=1&r=two#frag and email someone@example.org",
    "JSON: {\"key\": [1, 2.5, null, true], \"nested\": {\"a\": \"b\"}}",
    CHATML,
    "Text mentioning <|im_start|> inside a line and <|im_end|>at the end<|endoftext|>",
    "A long word: Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    "\n",
    " ",
    "   \n  ",
    "a",
]

# Pieces for random texts: letters of several scripts, digits of several kinds, every whitespace
# class, contractions in both cases, marks, emoji with joiners and modifiers, punctuation.
PIECES = ["a", "b", "Z", "é", "e\u0301", "ß", "日", "本", "語", "ا", "ل", "ب", "Я", "ж", "1", "23", "4567",
          "٣", "①", "Ⅻ", "½", " ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", "\r", "\u00a0", "\u3000", "\u2009",
          "'s", "'S", "'re", "'LL", "'t", "'", "don't", "?", "!!", ".", "...", ",", "😀", "👍🏽", "\u200d",
          "-", "_", "(", ")", "<", ">", "|", "\\", "/", "\"", "$", "€", "hello", " world", "Hello", "THE",
          " the", " 42", "x", "\u0301", "ǅ", "ⅰ", "\u000b", "\u000c", "\u0085", "\u2028"]


def random_texts(seed, n):
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 14))) for _ in range(n)]


def training_text():
    """A fixed, small training corpus: the hand texts plus the first ~400 KB of ShareGPT values."""
    parts = list(TEXTS)
    path = os.path.join(ASSETS, "ShareGPT_V3_unfiltered_cleaned_split.json")
    with open(path, "rb") as f:
        head = f.read(3_000_000).decode("utf-8", errors="ignore")
    dec = json.JSONDecoder()
    total, pos = 0, 0
    while total < 400_000:
        pos = head.find('"value": "', pos)
        if pos < 0:
            break
        value, end = dec.raw_decode(head, pos + len('"value": '))
        pos = end
        parts.append(value)
        total += len(value)
    return parts


def golden(tok, texts, with_special_parse=True):
    cases = []
    for t in texts:
        enc = tok.encode(t, add_special_tokens=True)
        plain = tok.encode(t, add_special_tokens=False)
        cases.append({
            "text": t,
            "ids": enc.ids,
            "ids_no_special": plain.ids,
            "decoded": tok.decode(enc.ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(enc.ids, skip_special_tokens=True),
        })
    return cases


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")


def versions():
    return {"python": platform.python_version(), "tokenizers": tokenizers.__version__,
            "sentencepiece": spm.__version__, "gguf": importlib.metadata.version("gguf")}


def gguf_field(reader, key):
    f = reader.fields[key]
    return f.contents()


def smollm2_hf_tokenizer(path=None):
    """SmolLM2's tokenizer as HF tokenizers runs it, rebuilt from the GGUF's vocab and merges."""
    path = path or os.path.join(ASSETS, "SmolLM2-135M-Instruct.Q4_1.gguf")
    r = gguf.GGUFReader(path)
    tokens = gguf_field(r, "tokenizer.ggml.tokens")
    merges = gguf_field(r, "tokenizer.ggml.merges")
    types = gguf_field(r, "tokenizer.ggml.token_type")
    assert gguf_field(r, "tokenizer.ggml.pre") == "smollm"
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens)
    pairs = [tuple(m.split(" ")) for m in merges]
    assert all(len(p) == 2 for p in pairs)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False, ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [t for t, ty in zip(tokens, types) if ty == 3]  # GGUF token type 3 = control
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tok


def make_smollm2(out, json_path):
    tok = smollm2_hf_tokenizer()
    if json_path:
        tok.save(json_path)
    texts = TEXTS + random_texts(1, 150)
    write_json(os.path.join(out, "smollm2", "golden.json"), {
        "about": "SmolLM2-135M-Instruct tokenizer ids (HF tokenizers on the GGUF's vocab+merges, "
                 "pre-tokenizer Digits(individual)+ByteLevel); made by tools/make_tokenizer_fixtures.py",
        "versions": versions(), "cases": golden(tok, texts)})


def model_state(tok):
    return json.loads(tok.to_str())["model"]


def make_sp(out, corpus):
    # Train merges within words (Metaspace split), then lay the vocabulary out as Llama-2 does:
    # <unk> <s> </s>, the 256 byte tokens <0x00>..<0xFF>, then the learned pieces.
    t = Tokenizer(models.BPE(unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    t.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=700, special_tokens=["<unk>", "<s>", "</s>"],
                                                       limit_alphabet=70, show_progress=False, min_frequency=2))
    m = model_state(t)
    learned = sorted(m["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in learned:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = [tuple(x) if isinstance(x, list) else tuple(x.split(" ")) for x in m["merges"]]
    texts = TEXTS + random_texts(2, 120)

    def build(metaspace):
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
        # Both layouts decode as Llama-2 / Mistral files do: Replace, ByteFallback, Fuse, Strip.
        if metaspace:  # Mistral v0.3 / transformers legacy=False
            tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        else:
            tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
        tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in ["<unk>", "<s>", "</s>"]])
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", 1)])
        return tok

    config = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>", "pad_token": None,
              "chat_template": "{% for m in messages %}{{ bos_token + '[INST] ' + m['content'] + ' [/INST]' }}{% endfor %}"}
    for name, meta in (("sp_legacy", False), ("sp_metaspace", True)):
        tok = build(meta)
        os.makedirs(os.path.join(out, name), exist_ok=True)
        tok.save(os.path.join(out, name, "tokenizer.json"))
        write_json(os.path.join(out, name, "tokenizer_config.json"), config)
        write_json(os.path.join(out, name, "golden.json"), {
            "about": f"SentencePiece-style BPE with byte fallback ({name}); made by tools/make_tokenizer_fixtures.py",
            "versions": versions(), "cases": golden(tok, texts)})


def make_bytelevel(out, corpus, name, split_pattern):
    tok = Tokenizer(models.BPE(ignore_merges=split_pattern is not None))
    if split_pattern is None:  # GPT-2: the regex lives inside ByteLevel
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(tokenizers.Regex(split_pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ])
    tok.decoder = decoders.ByteLevel()
    if name == "llama3":
        special = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    else:
        special = ["<|endoftext|>"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=1000, special_tokens=special, show_progress=False,
                                                         min_frequency=2,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if name == "llama3":
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
            special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
        config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
                  "chat_template": "{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] + '<|eot_id|>' }}{% endfor %}"}
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        config = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
        # Added tokens that swallow neighbouring whitespace, and one that is not special.
        tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True, normalized=False),
                                AddedToken("<sep>", rstrip=True, special=True, normalized=False)])
        tok.add_tokens([AddedToken("[user-word]", special=False, normalized=False)])
    os.makedirs(os.path.join(out, name), exist_ok=True)
    tok.save(os.path.join(out, name, "tokenizer.json"))
    write_json(os.path.join(out, name, "tokenizer_config.json"), config)
    texts = TEXTS + ["<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there!<|eot_id|>",
                     "hello <mask> world", "a \t <mask>b", "x<sep>  y", "<sep>\n\nz <mask>", " <mask> <sep> ",
                     "a [user-word] b[user-word]c"] + \
        random_texts(3 if name == "llama3" else 4, 150)
    write_json(os.path.join(out, name, "golden.json"), {
        "about": f"byte-level BPE, {name} pre-tokenizer; made by tools/make_tokenizer_fixtures.py",
        "versions": versions(), "cases": golden(tok, texts)})


def make_sp_gguf(out, corpus):
    """A real SentencePiece BPE model as a tokenizer-only GGUF; golden ids from sentencepiece."""
    with tempfile.TemporaryDirectory() as tmp:
        txt = os.path.join(tmp, "corpus.txt")
        with open(txt, "w", encoding="utf-8") as f:
            for line in corpus:
                for l in line.split("\n"):
                    if l.strip():
                        f.write(l + "\n")
        prefix = os.path.join(tmp, "sp")
        spm.SentencePieceTrainer.train(
            input=txt, model_prefix=prefix, model_type="bpe", vocab_size=800, character_coverage=0.995,
            byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True,
            normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2, num_threads=1)
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    n = sp.get_piece_size()
    tokens, scores, types = [], [], []
    for i in range(n):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(2)
        elif sp.is_control(i):
            types.append(3)
        elif sp.is_byte(i):
            types.append(6)
        elif sp.is_unused(i):
            types.append(5)
        else:
            types.append(1)
    os.makedirs(os.path.join(out, "sp_gguf"), exist_ok=True)
    path = os.path.join(out, "sp_gguf", "tokenizer.gguf")
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    texts = [t for t in TEXTS + random_texts(5, 120) if "<|" not in t]
    cases = []
    for t in texts:
        ids = sp.encode(t)
        cases.append({"text": t, "ids": [1] + ids, "ids_no_special": ids,
                      "decoded_skip_special": sp.decode(ids)})
    write_json(os.path.join(out, "sp_gguf", "golden.json"), {
        "about": "SentencePiece BPE (byte fallback, split digits, identity normalization) ids from sentencepiece; "
                 "made by tools/make_tokenizer_fixtures.py", "versions": versions(), "cases": cases})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "Tests", "SFTCoreTests", "Fixtures", "tokenizers"))
    ap.add_argument("--smollm2-json", default=None)
    a = ap.parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    corpus = training_text()
    make_smollm2(a.out, a.smollm2_json)
    make_sp(a.out, corpus)
    make_bytelevel(a.out, corpus, "llama3", LLAMA3_PATTERN)
    make_bytelevel(a.out, corpus, "gpt2", None)
    make_sp_gguf(a.out, corpus)
    print("wrote fixtures to", a.out, versions(), file=sys.stderr)


if __name__ == "__main__":
    main()
