#!/usr/bin/env python3
"""Makes the safetensors fixtures for the Swift safetensors / HF-folder tests, and checks a
file written by sft's Swift writer with the reference implementation.

python_written.safetensors  tensors of several dtypes (F32 F16 BF16 I64 I32 U8, an empty and
                            a 0-d tensor) and __metadata__, written by the `safetensors`
                            package. The values are fixed below; the Swift test repeats them.
hf_sharded/                 a tiny HF folder: config.json, tokenizer_config.json,
                            model.safetensors.index.json and two bf16/f16 shards.

Run from the repository root:
    python3 tools/make_safetensors_fixtures.py                # write the fixtures
    python3 tools/make_safetensors_fixtures.py --check-swift  # verify swift_written.safetensors
The check reads Tests/SFTCoreTests/Fixtures/formats/swift_written.safetensors (written by the
Swift test `SafetensorsTests.testSwiftWriterOutputMatchesCommittedFile` with
SFT_WRITE_FIXTURES=1) and writes its report to swift_written.check.txt beside it.
"""
import json
import os
import sys
import numpy as np
import safetensors
from safetensors import serialize_file, TensorSpec, safe_open
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "SFTCoreTests", "Fixtures", "formats")


def bf16_bits(x):
    """float32 -> bf16 bits, round to nearest even (exact for the values used here)."""
    b = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def write_raw(path, tensors, metadata=None):
    """tensors: name -> (dtype name for TensorSpec, shape, numpy array holding the bytes)."""
    specs = {n: TensorSpec(dtype=dt, shape=list(shape), data_ptr=a.ctypes.data, data_len=a.nbytes) for n, (dt, shape, a) in tensors.items()}
    serialize_file(specs, path, metadata)


PYTHON_WRITTEN = {
    "w.f32": ("float32", [2, 3], np.arange(6, dtype=np.float32) * 0.5 - 1),
    "w.f16": ("float16", [4], np.array([1, -2.5, 2.0**-14, 65504], dtype=np.float16)),
    "w.bf16": ("bfloat16", [2, 2], bf16_bits([1, -1.5, 3.140625, -0.0078125])),
    "i.i64": ("int64", [3], np.array([-1, 0, 2**40], dtype=np.int64)),
    "i.i32": ("int32", [2], np.array([7, -8], dtype=np.int32)),
    "b.u8": ("uint8", [3], np.array([0, 128, 255], dtype=np.uint8)),
    "e.empty": ("float32", [0, 4], np.zeros(0, dtype=np.float32)),
    "s.scalar": ("float32", [], np.array([42], dtype=np.float32)),
}


def make_python_written():
    write_raw(os.path.join(OUT, "python_written.safetensors"), PYTHON_WRITTEN, {"format": "pt", "source": "fixture"})


def make_hf_sharded():
    d = os.path.join(OUT, "hf_sharded")
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(7)
    emb = rng.standard_normal((8, 4)).astype(np.float32)
    norm = rng.standard_normal(4).astype(np.float32)
    q = rng.standard_normal((4, 4)).astype(np.float32)
    shard1 = {"model.embed_tokens.weight": ("bfloat16", [8, 4], bf16_bits(emb))}
    shard2 = {"model.norm.weight": ("float16", [4], norm.astype(np.float16)),
              "model.layers.0.self_attn.q_proj.weight": ("float32", [4, 4], q)}
    write_raw(os.path.join(d, "model-00001-of-00002.safetensors"), shard1, {"format": "pt"})
    write_raw(os.path.join(d, "model-00002-of-00002.safetensors"), shard2, {"format": "pt"})
    index = {"metadata": {"total_size": 8 * 4 * 2 + 4 * 2 + 16 * 4},
             "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                            "model.norm.weight": "model-00002-of-00002.safetensors",
                            "model.layers.0.self_attn.q_proj.weight": "model-00002-of-00002.safetensors"}}
    json.dump(index, open(os.path.join(d, "model.safetensors.index.json"), "w"), indent=2)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4,
              "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 8, "rms_norm_eps": 1e-5}
    json.dump(config, open(os.path.join(d, "config.json"), "w"), indent=2)
    json.dump({"bos_token": "<s>", "chat_template": "{{ messages }}"}, open(os.path.join(d, "tokenizer_config.json"), "w"))
    # Expected f32 values after the reader's cast (bf16 / f16 rounding applied here).
    expected = {"model.embed_tokens.weight": (bf16_bits(emb).astype(np.uint32) << 16).view(np.float32),
                "model.norm.weight": norm.astype(np.float16).astype(np.float32),
                "model.layers.0.self_attn.q_proj.weight": q.reshape(-1)}
    save_file({k: v.reshape(-1) for k, v in expected.items()}, os.path.join(OUT, "hf_sharded_expected.safetensors"))


# What the Swift test writes (keep in sync with SafetensorsTests.swiftWrittenTensors).
SWIFT_EXPECTED = {
    "a.f32": np.array([[1.0, -2.0, 0.25], [3.5, 1e-3, -7.0]], dtype=np.float32),
    "b.f16": np.array([1.0, -2.5, 0.1, 65504.0], dtype=np.float32).astype(np.float16),
    "c.bf16": np.array([1.0, -1.5, 3.14159, 1e-3], dtype=np.float32).reshape(2, 2),
    "d.i64": np.array([-1, 0, 2**40], dtype=np.int64),
    "e.i32": np.array([7, -8], dtype=np.int32),
    "f.u8": np.array([0, 128, 255], dtype=np.uint8),
    "g.weird \"name\"\n": np.array([1.0], dtype=np.float32),
}


def check_swift():
    path = os.path.join(OUT, "swift_written.safetensors")
    lines = [f"safetensors {safetensors.__version__} numpy {np.__version__}", f"checked {os.path.basename(path)}"]
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata()
        assert meta == {"format": "pt", "writer": "sft"}, meta
        names = list(f.keys())
        assert sorted(names) == sorted(SWIFT_EXPECTED), names
        for n, exp in SWIFT_EXPECTED.items():
            got = f.get_tensor(n) if n != "c.bf16" else None
            if n == "c.bf16":
                # numpy has no bf16: compare the raw bits through the byte-level API
                raw = dict(safetensors.deserialize(open(path, "rb").read()))[n]
                assert raw["dtype"] == "bfloat16" or raw["dtype"] == "BF16", raw["dtype"]
                bits = np.frombuffer(bytes(raw["data"]), dtype=np.uint16)
                assert (bits == bf16_bits(exp.reshape(-1))).all(), (bits, bf16_bits(exp.reshape(-1)))
                lines.append(f"{n}: BF16 {list(raw['shape'])} bits match round-to-nearest-even")
                continue
            assert got.dtype == exp.dtype and got.shape == exp.shape and (got == exp).all(), (n, got, exp)
            lines.append(f"{n!r}: {got.dtype} {list(got.shape)} values match")
    header_len = int.from_bytes(open(path, "rb").read(8), "little")
    assert (8 + header_len) % 8 == 0
    lines.append(f"header {header_len} bytes, data starts at a multiple of 8")
    lines.append("OK")
    report = "\n".join(lines) + "\n"
    open(os.path.join(OUT, "swift_written.check.txt"), "w").write(report)
    print(report, end="")


if __name__ == "__main__":
    if "--check-swift" in sys.argv:
        check_swift()
    else:
        print("safetensors", safetensors.__version__, "numpy", np.__version__)
        make_python_written()
        make_hf_sharded()
