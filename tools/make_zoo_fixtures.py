#!/usr/bin/env python3
"""Golden fixtures for the model zoo: tiny random models of each family saved by transformers 5
(config.json in the layout transformers 5 writes, with `rope_parameters`; model.safetensors),
and what transformers computes on them in float32 with eager attention.

Writes under Tests/SFTCoreTests/Fixtures/model/zoo/:
  <family>/config.json, <family>/model.safetensors   the tiny model (weights stored as f16 values,
                                                     so the files stay small; the model runs in f32)
  <family>/golden.json    per token sequence: mean next-token loss, per-token losses, top-5 logits
                          at the last position, a greedy continuation with the top-two gaps,
                          and LoRA gradients (r=2 on q_proj and v_proj, A and B random)
  rope_frequencies.json   inverse frequencies and attention factors of every RoPE kind, from
                          transformers' ROPE_INIT_FUNCTIONS

Weights are drawn larger than transformers' init (std 0.3 instead of 0.02) so logits are far
from uniform and a wrong RoPE, window or norm shows in the loss.

Usage: python3 tools/make_zoo_fixtures.py
Needs: pip install torch transformers safetensors
"""
import json, os
import torch, transformers, safetensors
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
dest = os.path.join(root, "Tests", "SFTCoreTests", "Fixtures", "model", "zoo")
os.makedirs(dest, exist_ok=True)
torch.manual_seed(0)

V = 64
base = dict(vocab_size=V, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
            attn_implementation="eager")

families = {
    # Llama 3.1-style: llama3 RoPE (original length 32 so that the blend touches these tiny dims)
    "llama31": ("llama", dict(rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                               "original_max_position_embeddings": 32})),
    # SmolLM2-style: θ = 100000, tied embeddings (what a permissive reader got wrong)
    "smollm2": ("llama", dict(rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                              tie_word_embeddings=True)),
    # Mistral: a sliding window shorter than the sequences
    "mistral": ("mistral", dict(sliding_window=5, head_dim=4)),
    # Qwen2: q/k/v biases, θ = 1e6
    "qwen2": ("qwen2", dict(rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    # Qwen3: per-head RMSNorm of q and k, head_dim apart from hidden / heads
    "qwen3": ("qwen3", dict(head_dim=8, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    # Yarn on a Llama (attention factor) and linear scaling: kinds the frequency fixture checks
    # one by one, here also end to end
    # Gemma 3 text: GeGLU (tanh GELU), (1 + w) norms, QK-norm, scaled embeddings, alternating
    # sliding / global layers with their own RoPE (linear scaling on the global ones)
    "gemma3": ("gemma3_text", dict(num_hidden_layers=3, head_dim=8, query_pre_attn_scalar=8, sliding_window=4,
                                   layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                                   hidden_activation="gelu_pytorch_tanh",
                                   rope_parameters={"full_attention": {"rope_type": "linear", "rope_theta": 1000000.0, "factor": 2.0},
                                                    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})),
    # Phi-3: fused qkv_proj / gate_up_proj, LongRoPE (original length 16: sequence 0 runs on the
    # long factors, sequence 1 on the short ones until its greedy continuation passes 16), window
    "phi3": ("phi3", dict(original_max_position_embeddings=16, sliding_window=6, pad_token_id=0, eos_token_id=2,
                          rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                           "short_factor": [1.0, 1.3], "long_factor": [2.0, 5.0]})),
    # MPT: ALiBi (6 heads: the non-power-of-two slope order), fused Wqkv, bias-free LayerNorm,
    # exact GELU, tied head
    "mpt": ("mpt", dict(d_model=24, n_heads=6, n_layers=2, max_seq_len=128)),
    # MPT with clip_qkv small enough that the clamp bites
    "mpt_clip": ("mpt", dict(d_model=16, n_heads=4, n_layers=2, max_seq_len=128, attn_config={"clip_qkv": 0.6})),
    "llama_yarn": ("llama", dict(rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                                  "original_max_position_embeddings": 32})),
    # Gemma 2: as Gemma 3 without QK-norm, one RoPE, attention- and final-logit softcapping small
    # enough to bite on these logits
    "gemma2": ("gemma2", dict(num_hidden_layers=3, head_dim=8, query_pre_attn_scalar=8, sliding_window=4,
                              layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                              hidden_activation="gelu_pytorch_tanh", attn_logit_softcapping=2.0,
                              final_logit_softcapping=3.0,
                              rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
}

# Two sequences of token ids: one long enough for windows and RoPE, one short.
g = torch.Generator().manual_seed(1)
sequences = [torch.randint(3, V, (20,), generator=g).tolist(), torch.randint(3, V, (9,), generator=g).tolist()]

versions = {"torch": torch.__version__, "transformers": transformers.__version__, "safetensors": safetensors.__version__}


def make(name, model_type, extra):
    if model_type == "mpt":   # MPT's own key names
        cfg = AutoConfig.for_model(model_type, vocab_size=V, bos_token_id=1, eos_token_id=2, **extra)
    else:
        cfg = AutoConfig.for_model(model_type, **{**base, **extra})
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
            p.copy_(p.half().float())   # f16-exact values, stored as f16
    model.eval()
    folder = os.path.join(dest, name)
    os.makedirs(folder, exist_ok=True)
    model.config.save_pretrained(folder)
    tensors = {n: p.detach().half().contiguous() for n, p in model.named_parameters()}
    if getattr(model.config, "tie_word_embeddings", False):
        tensors.pop("lm_head.weight", None)
    save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})

    out = {"versions": versions, "model_type": model_type, "sequences": []}
    for ids in sequences:
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(x).logits[0]
        per_token = torch.nn.functional.cross_entropy(logits[:-1], x[0, 1:], reduction="none")
        top = torch.topk(logits[-1], 5)
        seq, greedy, gaps = list(ids), [], []
        with torch.no_grad():
            for _ in range(8):
                lg = model(torch.tensor([seq])).logits[0, -1]
                t2 = torch.topk(lg, 2)
                greedy.append(int(t2.indices[0])); gaps.append(float(t2.values[0] - t2.values[1]))
                seq.append(int(t2.indices[0]))
        out["sequences"].append({"ids": ids, "mean_loss": per_token.mean().item(), "token_losses": per_token.tolist(),
                                 "top5_ids": top.indices.tolist(), "top5_logits": top.values.tolist(),
                                 "greedy": greedy, "greedy_gaps": gaps})

    # LoRA gradients: y = x Wᵀ + (alpha / r) x Aᵀ Bᵀ on q_proj and v_proj (Phi-3: qkv_proj and
    # o_proj) of every layer, A and B
    # random (B non-zero so both get gradients); loss = mean next-token loss of sequence 0.
    r, alpha = 2, 4.0
    gl = torch.Generator().manual_seed(2)
    lora, hooks = {}, []
    targets = {"phi3": ["qkv_proj", "o_proj"], "mpt": ["Wqkv", "out_proj"]}.get(model_type, ["q_proj", "v_proj"])
    for n, m in model.named_modules():
        if any(n.endswith("." + t) for t in targets):
            A = (0.3 * torch.randn(r, m.in_features, generator=gl)).half().float().requires_grad_()
            B = (0.3 * torch.randn(m.out_features, r, generator=gl)).half().float().requires_grad_()
            lora[n] = (A, B)
            hooks.append(m.register_forward_hook(lambda mod, inp, outp, A=A, B=B: outp + (alpha / r) * inp[0] @ A.T @ B.T))
    x = torch.tensor([sequences[0]])
    logits = model(x).logits[0]
    loss = torch.nn.functional.cross_entropy(logits[:-1], x[0, 1:])
    loss.backward()
    for h in hooks:
        h.remove()
    out["lora"] = {"r": r, "alpha": alpha, "loss": loss.item(), "targets": targets,
                   "modules": {n: {"A": A.detach().flatten().tolist(), "B": B.detach().flatten().tolist(),
                                   "dA": A.grad.flatten().tolist(), "dB": B.grad.flatten().tolist()}
                               for n, (A, B) in lora.items()}}
    with open(os.path.join(folder, "golden.json"), "w") as f:
        json.dump(out, f)
    print(name, "loss", [round(s["mean_loss"], 4) for s in out["sequences"]], "lora loss", round(loss.item(), 4))


for name, (model_type, extra) in families.items():
    make(name, model_type, extra)

# Inverse frequencies of every RoPE kind, for a head dim of 32.
D = 32
rope_cases = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0},
    "llama3": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    "yarn": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64},
    "yarn_mscale": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0, "original_max_position_embeddings": 64,
                    "beta_fast": 16.0, "beta_slow": 2.0, "mscale": 1.0, "mscale_all_dim": 0.5, "truncate": False},
    "longrope": {"rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": 64,
                 "short_factor": [1.0 + 0.05 * i for i in range(D // 2)],
                 "long_factor": [1.0 + 0.5 * i for i in range(D // 2)]},
}
freqs = {"versions": versions, "head_dim": D, "max_position_embeddings": 256, "cases": {}}
for name, rp in rope_cases.items():
    cfg = AutoConfig.for_model("llama", hidden_size=D * 2, num_attention_heads=2, head_dim=D,
                               max_position_embeddings=256, rope_parameters=dict(rp))
    fn = ROPE_INIT_FUNCTIONS[rp["rope_type"]] if rp["rope_type"] != "default" else None
    entry = {"rope_parameters": rp, "lengths": {}}
    for seq_len in [None, 300]:
        if fn is None:
            inv = 1.0 / (rp["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
            att = 1.0
        else:
            inv, att = fn(cfg, "cpu", seq_len=seq_len)
        entry["lengths"]["load" if seq_len is None else str(seq_len)] = {"inv_freq": inv.tolist(), "attention_factor": float(att)}
    freqs["cases"][name] = entry
with open(os.path.join(dest, "rope_frequencies.json"), "w") as f:
    json.dump(freqs, f, indent=0)
print("wrote", dest)
