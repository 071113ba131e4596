#!/usr/bin/env python3
"""Makes the small GGUF fixtures for the Swift GGUF tests (Tests/SFTCoreTests/Fixtures/formats).

quants.gguf      one tensor per GGML block type (2 rows x 256 columns of random raw blocks with
                 sane scale fields, plus properly quantized rows for the legacy types), and for
                 each one "<name>.expected": the f32 values from gguf-py's reference
                 dequantizer (gguf.quants.dequantize), Q8_K excepted (gguf-py has none; its
                 expected values come from the one-line formula d * q below).
metadata.gguf    every metadata value type incl. nested arrays, general.alignment = 64, and
                 two small tensors; small enough that tests can truncate it at every byte.
permute.gguf     a 1-layer "llama" model whose q/k rows were permuted the way llama.cpp's
                 HF->GGUF converter does it (reshape (H, 2, D/2, C), swap axes 1 and 2), with
                 permute_hf.safetensors holding the original HF tensors.

Run from the repository root:  python3 tools/make_gguf_fixtures.py
Versions used: printed at the top of the output (gguf, numpy, safetensors).
"""
import os
import numpy as np
import gguf
from gguf.constants import GGMLQuantizationType as T, GGML_QUANT_SIZES
from gguf.quants import quantize, dequantize
import safetensors
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "SFTCoreTests", "Fixtures", "formats")
rng = np.random.default_rng(1234)

# Byte offsets of the f16 scale fields inside each block (the rest of the block is random).
HALF_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0], T.IQ4_NL: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def random_blocks(t, rows, cols):
    bs, ts = GGML_QUANT_SIZES[t]
    nblocks = rows * cols // bs
    raw = rng.integers(0, 256, size=(nblocks, ts), dtype=np.uint8)
    for off in HALF_FIELDS.get(t, []):
        h = rng.uniform(-0.05, 0.05, size=nblocks).astype(np.float16)
        raw[:, off:off + 2] = h.view(np.uint8).reshape(nblocks, 2)
    if t == T.Q8_K:
        d = rng.uniform(-0.05, 0.05, size=nblocks).astype(np.float32)
        raw[:, 0:4] = d.view(np.uint8).reshape(nblocks, 4)
    return raw.reshape(rows, -1)


def q8_k_reference(raw, rows, cols):
    blocks = raw.reshape(-1, 292)
    d = blocks[:, 0:4].copy().view(np.float32)           # (n, 1)
    q = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
    return (d * q).reshape(rows, cols)


def make_quants():
    w = gguf.GGUFWriter(os.path.join(OUT, "quants.gguf"), "fixture")
    rows, cols = 2, 256
    for t in [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.IQ4_NL,
              T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_K]:
        raw = random_blocks(t, rows, cols)
        name = t.name.lower()
        exp = q8_k_reference(raw, rows, cols) if t == T.Q8_K else dequantize(raw, t)
        assert exp.shape == (rows, cols) and np.isfinite(exp).all(), t
        w.add_tensor(name, raw, raw_dtype=t)
        w.add_tensor(name + ".expected", exp.astype(np.float32))
    # Realistic data for the legacy formats: quantized from Gaussian weights by gguf-py.
    x = rng.standard_normal((rows, cols)).astype(np.float32) * 0.02
    for t in [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]:
        raw = quantize(x, t)
        name = t.name.lower() + ".quantized"
        w.add_tensor(name, raw, raw_dtype=t)
        w.add_tensor(name + ".expected", dequantize(raw, t).astype(np.float32))
    # Plain float types, including f16 subnormals, signed zeros and the largest f16.
    special = np.array([0.0, -0.0, 6.1e-5, 5.96e-8, -3.0e-6, 65504.0, -65504.0, 1.0], dtype=np.float32)
    f = np.concatenate([special, rng.standard_normal(rows * cols - special.size).astype(np.float32)]).reshape(rows, cols)
    h = f.astype(np.float16)
    w.add_tensor("f16", h)
    w.add_tensor("f16.expected", h.astype(np.float32))
    b = quantize(f, T.BF16)
    w.add_tensor("bf16", b, raw_dtype=T.BF16)
    w.add_tensor("bf16.expected", dequantize(b, T.BF16).astype(np.float32))
    w.add_tensor("f32", f)
    w.add_tensor("f32.expected", f)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


def make_metadata():
    w = gguf.GGUFWriter(os.path.join(OUT, "metadata.gguf"), "fixture")
    V = gguf.GGUFValueType
    w.add_custom_alignment(64)
    w.add_key_value("t.u8", 200, V.UINT8)
    w.add_key_value("t.i8", -100, V.INT8)
    w.add_key_value("t.u16", 60000, V.UINT16)
    w.add_key_value("t.i16", -30000, V.INT16)
    w.add_key_value("t.u32", 4000000000, V.UINT32)
    w.add_key_value("t.i32", -2000000000, V.INT32)
    w.add_key_value("t.u64", 2**63 + 5, V.UINT64)
    w.add_key_value("t.i64", -(2**62), V.INT64)
    w.add_key_value("t.f32", 1.5, V.FLOAT32)
    w.add_key_value("t.f64", -2.25e100, V.FLOAT64)
    w.add_key_value("t.true", True, V.BOOL)
    w.add_key_value("t.false", False, V.BOOL)
    w.add_key_value("t.str", "héllo ✓", V.STRING)
    w.add_key_value("t.empty_str", "", V.STRING)
    w.add_key_value("t.arr_i32", [1, -2, 3], V.ARRAY, sub_type=V.INT32)
    w.add_key_value("t.arr_f32", [0.5, -1.0], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("t.arr_str", ["a", "bc", ""], V.ARRAY)
    w.add_key_value("t.arr_bool", [True, False], V.ARRAY)
    w.add_key_value("t.nested", [[1, 2], [3], [4, 5, 6]], V.ARRAY)
    w.add_key_value("t.nested_str", [["x"], ["y", "z"]], V.ARRAY)
    w.add_tensor("a", np.arange(6, dtype=np.float32).reshape(2, 3))
    w.add_tensor("b", np.array([[1, -2], [3, -4], [5, -6.5]], dtype=np.float16))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


def llama_cpp_permute(wt, n_head):
    """llama.cpp's converter: per head, rows [first half; second half] -> interleaved."""
    return wt.reshape(n_head, 2, wt.shape[0] // n_head // 2, *wt.shape[1:]).swapaxes(1, 2).reshape(wt.shape)


def rope_check(q_hf, q_gguf, n_head, D):
    """The permutation is what makes ggml's interleaved RoPE (pairs 2i, 2i+1) equal HF's
    rotate-half RoPE (pairs i, i+D/2): check that on random activations."""
    x = rng.standard_normal(q_hf.shape[1]).astype(np.float64)
    pos, base = 7, 10000.0
    freqs = pos * base ** (-np.arange(D // 2) * 2.0 / D)
    c, s = np.cos(freqs), np.sin(freqs)
    hf = (q_hf @ x).reshape(n_head, D)
    a, b = hf[:, :D // 2], hf[:, D // 2:]
    hf_rot = np.concatenate([a * c - b * s, b * c + a * s], axis=1)
    gg = (q_gguf @ x).reshape(n_head, D)
    a, b = gg[:, 0::2], gg[:, 1::2]
    gg_rot = np.stack([a * c - b * s, b * c + a * s], axis=2).reshape(n_head, D)
    # the same numbers, in interleaved order
    assert np.allclose(gg_rot[:, 0::2], hf_rot[:, :D // 2]) and np.allclose(gg_rot[:, 1::2], hf_rot[:, D // 2:])
    print("rope check: interleaved RoPE on permuted rows == rotate-half RoPE on HF rows")


def make_permute():
    H, KV, D, C, F, V = 4, 2, 4, 16, 24, 10
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
    hf = {
        "model.embed_tokens.weight": f32(V, C),
        "model.norm.weight": f32(C),
        "lm_head.weight": f32(V, C),
        "model.layers.0.input_layernorm.weight": f32(C),
        "model.layers.0.post_attention_layernorm.weight": f32(C),
        "model.layers.0.self_attn.q_proj.weight": f32(H * D, C),
        "model.layers.0.self_attn.k_proj.weight": f32(KV * D, C),
        "model.layers.0.self_attn.v_proj.weight": f32(KV * D, C),
        "model.layers.0.self_attn.o_proj.weight": f32(C, H * D),
        "model.layers.0.mlp.gate_proj.weight": f32(F, C),
        "model.layers.0.mlp.up_proj.weight": f32(F, C),
        "model.layers.0.mlp.down_proj.weight": f32(C, F),
    }
    save_file(hf, os.path.join(OUT, "permute_hf.safetensors"))
    q = llama_cpp_permute(hf["model.layers.0.self_attn.q_proj.weight"], H)
    k = llama_cpp_permute(hf["model.layers.0.self_attn.k_proj.weight"], KV)
    rope_check(hf["model.layers.0.self_attn.q_proj.weight"].astype(np.float64), q.astype(np.float64), H, D)
    rope_check(hf["model.layers.0.self_attn.k_proj.weight"].astype(np.float64), k.astype(np.float64), KV, D)
    w = gguf.GGUFWriter(os.path.join(OUT, "permute.gguf"), "llama")
    w.add_block_count(1)
    w.add_embedding_length(C)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_rope_dimension_count(D)
    w.add_tensor("token_embd.weight", hf["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", hf["model.norm.weight"])
    w.add_tensor("output.weight", hf["lm_head.weight"])
    w.add_tensor("blk.0.attn_norm.weight", hf["model.layers.0.input_layernorm.weight"])
    w.add_tensor("blk.0.ffn_norm.weight", hf["model.layers.0.post_attention_layernorm.weight"])
    w.add_tensor("blk.0.attn_q.weight", q)
    w.add_tensor("blk.0.attn_k.weight", k)
    w.add_tensor("blk.0.attn_v.weight", hf["model.layers.0.self_attn.v_proj.weight"])
    w.add_tensor("blk.0.attn_output.weight", hf["model.layers.0.self_attn.o_proj.weight"])
    w.add_tensor("blk.0.ffn_gate.weight", hf["model.layers.0.mlp.gate_proj.weight"])
    w.add_tensor("blk.0.ffn_up.weight", hf["model.layers.0.mlp.up_proj.weight"])
    w.add_tensor("blk.0.ffn_down.weight", hf["model.layers.0.mlp.down_proj.weight"])
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


if __name__ == "__main__":
    from importlib.metadata import version
    print("gguf", version("gguf"), "numpy", np.__version__, "safetensors", safetensors.__version__)
    os.makedirs(OUT, exist_ok=True)
    make_quants()
    make_metadata()
    make_permute()
    for f in sorted(os.listdir(OUT)):
        print(f, os.path.getsize(os.path.join(OUT, f)), "bytes")
