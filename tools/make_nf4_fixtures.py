#!/usr/bin/env python3
"""Makes Tests/SFTCoreTests/Fixtures/quantization/bnb4bit.safetensors: bitsandbytes' own 4-bit
(NF4 / FP4) quantization and dequantization of small tensors, for the bit-exact tests of
sft's quantizer (Sources/CSFTKernels/quant_nf4.c).

It runs the real library (PyPI `bitsandbytes`, CPU; the versions are stored in the file's
metadata): `bitsandbytes.functional.quantize_4bit` / `dequantize_4bit` / `create_dynamic_map`.
On CPU, quantize_4bit runs bitsandbytes' reference torch implementation (backends/default).
For double quantization (compress_statistics) bitsandbytes' CPU build routes the 8-bit step
to a C++ kernel that approximates the nearest code with a 65536-bin lookup table; the
fixture records both that output (`*.qabsmax_cpu`) and the reference torch kernel's output
(`*.qabsmax`, got by dispatching bitsandbytes::quantize_blockwise to its
CompositeExplicitAutograd kernel), which is what sft implements.
C.dequant is bitsandbytes' reference dequantize_4bit (the same dispatch): its CPU C++ kernel
in 0.50 indexes absmax per row and gives wrong values when a row's length is not a multiple
of the block size (blocks then straddle rows; the script prints where the two differ).

Tensors, per case C (see CASES): C.x (f32 input), C.packed (u8 bytes), C.absmax (f32),
C.dequant (f32, dequantize_4bit); double-quantized cases add C.qabsmax (u8), C.absmax2 (f32),
C.offset (f32 [1]), C.qabsmax_cpu (u8). Also dynamic_map (f32 [256]).
Metadata: "cases" (JSON list of {name, type, blocksize, shape, double}), versions.

With --smollm2 [path/to/SmolLM2-135M-Instruct.Q4_1.gguf] it also writes
Fixtures/quantization/smollm2_nf4.json: the mean next-token loss of SmolLM2 on the texts of
Fixtures/model/smollm2_golden.json after every Linear but the LM head is quantized by
bitsandbytes (NF4 and FP4, block 64, double quantization) and dequantized again, run by
transformers in float32 on the GGUF's dequantized weights (needs transformers and gguf too).

Run from the repository root:  python3 tools/make_nf4_fixtures.py [--smollm2 [gguf]]
"""
import json
import os
import sys

import numpy as np
import torch
import bitsandbytes
import bitsandbytes.functional as F
from bitsandbytes.functional import QuantState
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "SFTCoreTests", "Fixtures", "quantization",
                   "bnb4bit.safetensors")


def special_values(quant_type):
    """One block with absmax exactly 1 holding every f32 midpoint of the code (exact ties),
    values just above / below them, signed zeros and tiny values (FP4's two zero codes)."""
    code = F.get_4bit_type(quant_type, device="cpu")
    s = torch.sort(code).values
    mids = (s[:-1] + s[1:]) / 2
    up = torch.nextafter(mids, torch.tensor(2.0))
    down = torch.nextafter(mids, torch.tensor(-2.0))
    vals = torch.cat([torch.tensor([1.0, -1.0, 0.0, -0.0, 1e-3, -1e-3, 1e-30, -1e-30]), mids, up, down])
    return vals


def make_input(name, shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * 0.02
    if name.startswith("special"):
        flat = x.reshape(-1)
        sp = special_values("nf4" if "nf4" in name else "fp4")
        flat[: sp.numel()] = sp                       # block 0: absmax 1 with the ties
        flat[64:128] = 0                              # block 1: all zeros
        x = flat.reshape(shape)
    return x.contiguous()


# name, type, blocksize, shape, double quantization
CASES = [
    ("nf4_b64", "nf4", 64, (32, 96), False),
    ("fp4_b64", "fp4", 64, (32, 96), False),
    ("nf4_b32_odd", "nf4", 32, (7, 37), False),       # short last block, odd count
    ("fp4_b128_tail", "fp4", 128, (5, 50), False),
    ("nf4_b4096_tail", "nf4", 4096, (1, 4196), False),
    ("special_nf4", "nf4", 64, (4, 64), False),
    ("special_fp4", "fp4", 64, (4, 64), False),
    ("nf4_b32_dq", "nf4", 32, (90, 100), True),        # 282 absmax values: blocks of 256 + 26
    ("fp4_b64_dq", "fp4", 64, (32, 160), True),
]


REFERENCE = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)


def reference_blockwise(a, code, blocksize):
    return torch.ops.bitsandbytes.quantize_blockwise.default.redispatch(REFERENCE, a, code, blocksize)


def reference_dequantize_4bit(packed, absmax, blocksize, quant_type, shape):
    return torch.ops.bitsandbytes.dequantize_4bit.default.redispatch(
        REFERENCE, packed, absmax, blocksize, quant_type, list(shape), torch.float32)


def dequantized_absmax(state):
    """The f32 absmax of a double-quantized state, as dequantize_4bit rebuilds it."""
    return F.dequantize_blockwise(state.absmax, state.state2) + state.offset


def main():
    tensors = {}
    meta_cases = []
    dyn = F.create_dynamic_map()
    tensors["dynamic_map"] = dyn.numpy()
    for i, (name, qt, bs, shape, dq) in enumerate(CASES):
        x = make_input(name, shape, seed=100 + i)
        packed, st = F.quantize_4bit(x, blocksize=bs, quant_type=qt, compress_statistics=False)
        tensors[f"{name}.x"] = x.numpy()
        tensors[f"{name}.packed"] = packed.reshape(-1).numpy()
        tensors[f"{name}.absmax"] = st.absmax.numpy()
        absmax = st.absmax
        if dq:
            # The library's own double quantization (offset, and the CPU kernel's 8-bit codes).
            packed2, st2 = F.quantize_4bit(x, blocksize=bs, quant_type=qt, compress_statistics=True)
            assert torch.equal(packed2, packed)
            offset = st2.offset
            q_ref, absmax2 = reference_blockwise(st.absmax - offset, dyn, 256)
            assert torch.equal(absmax2, st2.state2.absmax)
            state2 = QuantState(absmax=absmax2, code=dyn.clone(), blocksize=256, dtype=torch.float32)
            state = QuantState(absmax=q_ref, shape=x.shape, dtype=torch.float32, blocksize=bs,
                               code=F.get_4bit_type(qt, device="cpu"), quant_type=qt, offset=offset, state2=state2)
            tensors[f"{name}.qabsmax"] = q_ref.numpy()
            tensors[f"{name}.qabsmax_cpu"] = st2.absmax.numpy()
            tensors[f"{name}.absmax2"] = absmax2.numpy()
            tensors[f"{name}.offset"] = offset.reshape(1).numpy()
            absmax = dequantized_absmax(state)
            diff = int((q_ref != st2.absmax).sum())
            print(f"{name}: bitsandbytes' CPU 8-bit kernel differs from its reference in {diff} of {q_ref.numel()} codes")
        ref = reference_dequantize_4bit(packed, absmax, bs, qt, shape)
        public = F.dequantize_4bit(packed, state if dq else st)
        if not torch.equal(ref, public):
            print(f"{name}: bitsandbytes' CPU dequantize_4bit differs from its reference "
                  f"in {int((ref != public).sum())} of {ref.numel()} values (row length {shape[-1]}, block {bs})")
        tensors[f"{name}.dequant"] = ref.numpy().reshape(shape)
        meta_cases.append({"name": name, "type": qt, "blocksize": bs, "shape": list(shape), "double": dq})
    metadata = {
        "cases": json.dumps(meta_cases),
        "bitsandbytes": bitsandbytes.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, OUT, metadata=metadata)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes), bitsandbytes {bitsandbytes.__version__}, torch {torch.__version__}")


def smollm2(path):
    import transformers
    from transformers import AutoModelForCausalLM
    root = os.path.join(os.path.dirname(__file__), "..")
    golden = json.load(open(os.path.join(root, "Tests", "SFTCoreTests", "Fixtures", "model", "smollm2_golden.json")))
    out = {"versions": {"bitsandbytes": bitsandbytes.__version__, "torch": torch.__version__,
                        "transformers": transformers.__version__},
           "model": os.path.basename(path), "block_size": 64, "double_quant": True, "losses": {}}
    for qt in ["nf4", "fp4"]:
        model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                     dtype=torch.float32).eval()
        with torch.no_grad():
            for name, mod in model.named_modules():
                if isinstance(mod, torch.nn.Linear) and not name.endswith("lm_head"):
                    w = mod.weight.data.contiguous()
                    q, st = F.quantize_4bit(w, blocksize=64, quant_type=qt, compress_statistics=True)
                    q_ref, absmax2 = reference_blockwise(F.quantize_4bit(w, blocksize=64, quant_type=qt)[1].absmax - st.offset,
                                                         F.create_dynamic_map(), 256)
                    absmax = F.dequantize_blockwise(q_ref, absmax=absmax2, code=F.create_dynamic_map(), blocksize=256) + st.offset
                    mod.weight.data.copy_(reference_dequantize_4bit(q, absmax, 64, qt, w.shape))
            losses = {}
            for text, t in golden["texts"].items():
                x = torch.tensor([t["ids"]])
                logits = model(x).logits[0]
                losses[text] = torch.nn.functional.cross_entropy(logits[:-1], x[0, 1:]).item()
                print(f"{qt} {text}: loss {losses[text]:.4f} (f32 {t['mean_loss']:.4f})")
            out["losses"][qt] = losses
    dest = os.path.join(os.path.dirname(OUT), "smollm2_nf4.json")
    with open(dest, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", dest)


if __name__ == "__main__":
    main()
    if "--smollm2" in sys.argv:
        i = sys.argv.index("--smollm2")
        default = os.path.join(os.path.dirname(__file__), "..", ".assets", "SmolLM2-135M-Instruct.Q4_1.gguf")
        smollm2(sys.argv[i + 1] if len(sys.argv) > i + 1 else default)
