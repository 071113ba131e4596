// Llama (Touvron et al. 2023) and the family that shares its block: Llama 1/2/3/3.1, Mistral,
// SmolLM, Qwen2 (q/k/v biases). Mirrors HF's modeling_llama.py: pre-norm decoder layers of
// RMSNorm → GQA self-attention with rotate-half RoPE → residual → RMSNorm → SwiGLU MLP →
// residual; final RMSNorm; LM head (tied to the embedding when the config says so).
//
// Shapes: B batch, T tokens, N = B·T rows, C hidden, H heads, KV kv heads, D head dim,
// F intermediate, V vocab. Activations are (N, C) row-major; q is (N, H·D) = (B, T, H, D).

import Foundation
import SFTKernels

/// The config of the Llama-shaped families (`model_type` llama, mistral, qwen2, qwen3), as read
/// from an HF config.json or a GGUF's `llama.*`/`qwen2.*` keys. Decoding checks the settings sft
/// does not implement (`hidden_act` other than silu, nonzero `attention_dropout`, unknown RoPE
/// types) and throws naming the field.
public struct LlamaConfig: Equatable, Decodable, Sendable, DecoderShaped {
    /// The sizes and settings every HF-style decoder config shares (read through `DecoderShaped`).
    public var shape: DecoderShape
    /// RoPE's base θ: head-dim pair i rotates at θ^(−2i/D) per position (HF `rope_theta`, or
    /// `rope_parameters.rope_theta` in transformers 5).
    public var ropeTheta: Double
    /// How RoPE's frequencies are scaled for long contexts (HF `rope_scaling` /
    /// `rope_parameters`); nil: plain RoPE.
    public var ropeScaling: RopeScaling?
    /// Whether q/k/v projections have biases (HF `attention_bias`; default true for qwen2, false
    /// otherwise).
    public var attentionBias: Bool
    /// Whether gate/up/down projections have biases (HF `mlp_bias`, default false).
    public var mlpBias: Bool
    /// The HF `model_type`: "llama", "mistral", "qwen2" or "qwen3".
    public var modelType: String
    /// Keys attend to at most this many tokens back, themselves included (Mistral; Qwen2 on
    /// the layers `layerTypes` marks "sliding_attention"); nil: full causal attention.
    public var slidingWindow: Int?
    /// Per layer "full_attention" or "sliding_attention"; nil: every layer the same (windowed
    /// when `slidingWindow` is set).
    public var layerTypes: [String]?
    /// Qwen3: RMSNorm over each head's q and k (`q_norm`, `k_norm`) before RoPE.
    public var qkNorm: Bool

    /// A config from its sizes, for tests and models built in code; defaults are Llama's.
    /// - Parameters:
    ///   - hiddenSize: C, the residual width.
    ///   - intermediateSize: F, the MLP width.
    ///   - numLayers: Number of decoder layers.
    ///   - numHeads: H, query heads.
    ///   - numKVHeads: KV, key/value heads (a divisor of H).
    ///   - headDim: D; nil: hiddenSize / numHeads.
    ///   - vocabSize: V.
    ///   - rmsNormEps: RMSNorm epsilon.
    ///   - ropeTheta: RoPE base.
    ///   - ropeScaling: RoPE scaling; nil: none.
    ///   - tieWordEmbeddings: Whether the LM head is the embedding.
    ///   - attentionBias: Whether q/k/v have biases.
    ///   - mlpBias: Whether the MLP projections have biases.
    ///   - maxPositionEmbeddings: Pretraining context length.
    ///   - modelType: The HF `model_type`.
    ///   - bosTokenId: Beginning-of-sequence id, if any.
    ///   - eosTokenId: End-of-sequence id, if any.
    ///   - slidingWindow: Attention window in tokens; nil: full attention.
    ///   - layerTypes: Per layer "full_attention" or "sliding_attention"; nil: all alike.
    ///   - qkNorm: Whether q and k get a per-head RMSNorm (Qwen3).
    public init(hiddenSize: Int, intermediateSize: Int, numLayers: Int, numHeads: Int, numKVHeads: Int,
                headDim: Int? = nil, vocabSize: Int, rmsNormEps: Float = 1e-5, ropeTheta: Double = 10000,
                ropeScaling: RopeScaling? = nil, tieWordEmbeddings: Bool = false, attentionBias: Bool = false,
                mlpBias: Bool = false, maxPositionEmbeddings: Int = 2048, modelType: String = "llama",
                bosTokenId: Int? = nil, eosTokenId: Int? = nil, slidingWindow: Int? = nil,
                layerTypes: [String]? = nil, qkNorm: Bool = false) {
        shape = DecoderShape(hiddenSize: hiddenSize, intermediateSize: intermediateSize, numLayers: numLayers, numHeads: numHeads,
                             numKVHeads: numKVHeads, headDim: headDim, vocabSize: vocabSize, rmsNormEps: rmsNormEps,
                             maxPositionEmbeddings: maxPositionEmbeddings, tieWordEmbeddings: tieWordEmbeddings,
                             bosTokenId: bosTokenId, eosTokenId: eosTokenId)
        self.ropeTheta = ropeTheta; self.ropeScaling = ropeScaling
        self.attentionBias = attentionBias; self.mlpBias = mlpBias; self.modelType = modelType
        self.slidingWindow = slidingWindow; self.layerTypes = layerTypes; self.qkNorm = qkNorm
    }

    /// The keys Llama-shaped families read besides `DecoderShape`'s.
    enum CodingKeys: String, CodingKey, CaseIterable {
        case attentionBias = "attention_bias", mlpBias = "mlp_bias", modelType = "model_type"
        case slidingWindow = "sliding_window", useSlidingWindow = "use_sliding_window", maxWindowLayers = "max_window_layers"
        case layerTypes = "layer_types", hiddenAct = "hidden_act"
    }

    /// Families built from this config, with their defaults where their HF configs differ.
    static let families: [String: (qkvBias: Bool, qkNorm: Bool)] = [
        "llama": (false, false), "mistral": (false, false), "qwen2": (true, false), "qwen3": (false, true),
    ]

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let all = try [String: JSONValue](from: decoder)
        modelType = try c.decodeIfPresent(String.self, forKey: .modelType) ?? "llama"
        guard let family = LlamaConfig.families[modelType] else {
            throw SFTError.config(field: "model_type", message: "'\(modelType)' is not a Llama-shaped family")
        }
        shape = try DecoderShape(from: decoder, defaults: .init(rmsNormEps: 1e-6, maxPositionEmbeddings: 2048, tieWordEmbeddings: false))
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? family.qkvBias
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        qkNorm = family.qkNorm
        try HFConfig.requireActivation(try c.decodeIfPresent(String.self, forKey: .hiddenAct), "hidden_act", ["silu"])
        let rope = try RopeParameters.fromHF(all)
        ropeTheta = rope.theta
        ropeScaling = rope.scaling
        // Sliding windows: Mistral windows every layer; Qwen2/3 only with use_sliding_window,
        // on the layers from max_window_layers on (transformers 5 writes them as layer_types).
        let window = try c.decodeIfPresent(Int.self, forKey: .slidingWindow)
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
        if modelType == "qwen2" || modelType == "qwen3" {
            let use = try c.decodeIfPresent(Bool.self, forKey: .useSlidingWindow) ?? false
            slidingWindow = use ? window : nil
            if use, layerTypes == nil, let from = try c.decodeIfPresent(Int.self, forKey: .maxWindowLayers) {
                layerTypes = (0..<shape.numLayers).map { $0 >= from ? "sliding_attention" : "full_attention" }
            }
        } else {
            slidingWindow = window
        }
        if let t = layerTypes {
            try HFConfig.checkLayerTypes(t, layers: shape.numLayers)
            if t.contains("sliding_attention"), slidingWindow == nil {
                throw SFTError.config(field: "sliding_window", message: "layer_types has sliding layers but no window is set")
            }
        }
        if let w = slidingWindow, w <= 0 { throw SFTError.config(field: "sliding_window", message: "\(w) must be positive") }
        try shape.checkSizes()
    }

    /// From an HF config.json object (snake_case keys, transformers 4 or 5 layout). Keys that
    /// are neither read nor harmless are errors naming them.
    public init(hf c: [String: JSONValue]) throws {
        self = try HFConfig.decode(LlamaConfig.self, from: c, family: c["model_type"]?.stringValue ?? "llama",
                                   understood: DecoderShape.keyNames + CodingKeys.allCases.map(\.rawValue))
    }

    /// The sliding window of layer `i` (nil: full attention).
    public func window(layer i: Int) -> Int? {
        guard let slidingWindow else { return nil }
        guard let layerTypes else { return slidingWindow }
        return layerTypes[i] == "sliding_attention" ? slidingWindow : nil
    }

    /// `ropeTheta` and `ropeScaling` together, as the rotary embedding takes them.
    public var rope: RopeParameters { RopeParameters(theta: ropeTheta, scaling: ropeScaling) }

    /// Sizes for the memory estimate. Activations per token and layer (what sft's ops save for
    /// backward), with Q = H·D, KVd = KV·D: the two norm outputs and the two residual sums (4C),
    /// the attention and MLP outputs (2C), q before/after RoPE and the attention output (3Q), k
    /// before/after RoPE and v (3KVd), the softmax statistics (H), gate, up and their SwiGLU
    /// product (3F); Qwen3's q/k norms add their outputs (Q + KVd).
    public var layout: ModelLayout {
        let C = hiddenSize, F = intermediateSize, Q = numHeads * headDim, KVd = numKVHeads * headDim
        return ModelLayout(
            layers: numLayers, hidden: C, vocab: vocabSize, tiedEmbeddings: tieWordEmbeddings,
            linears: [.init("q_proj", C, Q, bias: attentionBias), .init("k_proj", C, KVd, bias: attentionBias),
                      .init("v_proj", C, KVd, bias: attentionBias), .init("o_proj", Q, C),
                      .init("gate_proj", C, F, bias: mlpBias), .init("up_proj", C, F, bias: mlpBias),
                      .init("down_proj", F, C, bias: mlpBias)],
            layerNormValues: 2 * C + (qkNorm ? 2 * headDim : 0), finalNormValues: C,
            activationsPerToken: 6 * C + 3 * Q + 3 * KVd + numHeads + 3 * F + (qkNorm ? Q + KVd : 0),
            bf16ActivationsPerToken: 2 * C + (qkNorm ? Q + 2 * KVd : 3 * Q + 3 * KVd) + 3 * F)
    }

    static let architectures = ["llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                                "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"]

    /// The config as transformers 4 writes it (rope_theta / rope_scaling at top level), which
    /// transformers 5 and llama.cpp's converter also read.
    public var hf: [String: JSONValue] {
        var c = shape.hf(modelType: modelType, architecture: LlamaConfig.architectures[modelType] ?? "LlamaForCausalLM")
        c["rope_theta"] = .double(ropeTheta)
        c["attention_bias"] = .bool(attentionBias)
        c["mlp_bias"] = .bool(mlpBias)
        c["hidden_act"] = "silu"
        if let slidingWindow {
            c["sliding_window"] = .int(slidingWindow)
            if modelType == "qwen2" || modelType == "qwen3" { c["use_sliding_window"] = true }
        }
        if let layerTypes { c["layer_types"] = .array(layerTypes.map(JSONValue.string)) }
        c["rope_scaling"] = rope.hfScaling
        return c
    }
}

final class LlamaAttention: Module {
    let qProj, kProj, vProj, oProj: Linear
    /// Qwen3's per-head RMSNorm of q and k (over D), before RoPE.
    let qNorm, kNorm: RMSNorm?
    let H: Int, KV: Int, D: Int
    /// Sliding window of this layer (nil: full causal).
    let window: Int?

    init(_ c: LlamaConfig, layer: Int, on be: Backend) throws {
        H = c.numHeads; KV = c.numKVHeads; D = c.headDim
        window = c.window(layer: layer)
        qProj = try Linear(inFeatures: c.hiddenSize, outFeatures: H * D, bias: c.attentionBias, on: be)
        kProj = try Linear(inFeatures: c.hiddenSize, outFeatures: KV * D, bias: c.attentionBias, on: be)
        vProj = try Linear(inFeatures: c.hiddenSize, outFeatures: KV * D, bias: c.attentionBias, on: be)
        oProj = try Linear(inFeatures: H * D, outFeatures: c.hiddenSize, bias: false, on: be)
        qNorm = c.qkNorm ? try RMSNorm(dim: D, eps: c.rmsNormEps, on: be) : nil
        kNorm = c.qkNorm ? try RMSNorm(dim: D, eps: c.rmsNormEps, on: be) : nil
    }

    override var children: [(String, Module)] {
        var c: [(String, Module)] = [("q_proj", qProj), ("k_proj", kProj), ("v_proj", vProj), ("o_proj", oProj)]
        if let qNorm, let kNorm { c += [("q_norm", qNorm), ("k_norm", kNorm)] }
        return c
    }

    /// q and k projected, head-normalized (Qwen3) and rotated; v projected.
    private func qkv(_ x: Tensor, positions: Tensor, invFreq: Tensor) throws -> (Tensor, Tensor, Tensor) {
        var q = try qProj(x)                                                    // (N, H·D)
        var k = try kProj(x)                                                    // (N, KV·D)
        let v = try vProj(x)                                                    // (N, KV·D)
        if let qNorm, let kNorm {
            let N = x.shape[0]
            q = try qNorm(try q.reshaped([N * H, D])).reshaped([N, H * D])     // (N·H, D) rows
            k = try kNorm(try k.reshaped([N * KV, D])).reshaped([N, KV * D])
        }
        q = try Ops.rope(q, positions: positions, invFreq: invFreq, heads: H)
        k = try Ops.rope(k, positions: positions, invFreq: invFreq, heads: KV)
        return (q, k, v)
    }

    func callAsFunction(_ x: Tensor, _ input: ModelInput, rope: LayerRope) throws -> Tensor {
        let (q, k, v) = try qkv(x, positions: input.positions, invFreq: rope.invFreq)
        let o = try Ops.attention(q: q, k: k, v: v, docIds: input.docIds, alibi: nil,
                                  shape: AttentionShape(B: input.B, T: input.T, H: H, KV: KV, D: D,
                                                        scale: rope.scale(1 / Float(D).squareRoot()), window: window))  // (N, H·D)
        return try oProj(o)
    }

    /// Cached step: appends k/v of `x`'s tokens to `cache` layer `layer`.
    func decode(_ x: Tensor, positions: Tensor, rope: LayerRope, cache: KVCache, layer: Int) throws -> Tensor {
        let (q, k, v) = try qkv(x, positions: positions, invFreq: rope.invFreq)
        return try oProj(try cache.attend(q: q, k: k, v: v, layer: layer, H: H, KV: KV, D: D,
                                          scale: rope.scale(1 / Float(D).squareRoot()), window: window))
    }
}

final class LlamaMLP: Module {
    let gateProj, upProj, downProj: Linear

    init(_ c: LlamaConfig, on be: Backend) throws {
        gateProj = try Linear(inFeatures: c.hiddenSize, outFeatures: c.intermediateSize, bias: c.mlpBias, on: be)
        upProj = try Linear(inFeatures: c.hiddenSize, outFeatures: c.intermediateSize, bias: c.mlpBias, on: be)
        downProj = try Linear(inFeatures: c.intermediateSize, outFeatures: c.hiddenSize, bias: c.mlpBias, on: be)
    }

    override var children: [(String, Module)] { [("gate_proj", gateProj), ("up_proj", upProj), ("down_proj", downProj)] }

    func callAsFunction(_ x: Tensor) throws -> Tensor {
        try downProj(try Ops.swiglu(gate: try gateProj(x), up: try upProj(x)))  // (N, F) → (N, C)
    }
}

final class LlamaDecoderLayer: Module {
    let selfAttn: LlamaAttention
    let mlp: LlamaMLP
    let inputLayernorm, postAttentionLayernorm: RMSNorm

    init(_ c: LlamaConfig, layer: Int, on be: Backend) throws {
        selfAttn = try LlamaAttention(c, layer: layer, on: be)
        mlp = try LlamaMLP(c, on: be)
        inputLayernorm = try RMSNorm(dim: c.hiddenSize, eps: c.rmsNormEps, on: be)
        postAttentionLayernorm = try RMSNorm(dim: c.hiddenSize, eps: c.rmsNormEps, on: be)
    }

    override var children: [(String, Module)] {
        [("self_attn", selfAttn), ("mlp", mlp), ("input_layernorm", inputLayernorm),
         ("post_attention_layernorm", postAttentionLayernorm)]
    }

    /// x + attention(norm(x)), then h + mlp(norm(h)); `attention` is the training or the cached form.
    func callAsFunction(_ x: Tensor, attention: (Tensor) throws -> Tensor) throws -> Tensor {
        let h = try Ops.add(x, try attention(try inputLayernorm(x)))
        return try Ops.add(h, try mlp(try postAttentionLayernorm(h)))
    }

    /// The packed weights of the seven projections, when each has one and nothing else (LoRA,
    /// 4-bit) changes its output; nil otherwise.
    var packedProjections: [PackedMatrix]? {
        let a = selfAttn, m = mlp
        let ps = [a.qProj, a.kProj, a.vProj, a.oProj, m.gateProj, m.upProj, m.downProj].compactMap { l in
            l.lora == nil && l.quantized == nil ? l.packed : nil
        }
        guard ps.count == 7, m.gateProj.bias == nil, m.upProj.bias == nil, m.downProj.bias == nil, a.oProj.bias == nil else { return nil }
        return ps
    }

    /// One token through the layer on packed weights (batch-1 decode), updating s.x (C) in
    /// place; its key and value go to cache row `cache.count`. Four pool jobs: q/k/v from one
    /// quantized x, o-proj accumulated into the residual, gate/up with SwiGLU fused, down-proj
    /// accumulated into the residual.
    func packedStep(_ s: LlamaStepBuffers, _ w: [PackedMatrix], cache: KVCache, layer: Int, invFreq: Tensor) throws {
        let a = selfAttn, be = s.x.backend, C = s.x.count, p = cache.count, kvRow = a.KV * a.D
        let k = cache.keys[layer].storage.advanced(byBytes: p * kvRow * 4)
        let v = cache.values[layer].storage.advanced(byBytes: p * kvRow * 4)
        try be.rmsnormForward(x: s.x.storage, weight: inputLayernorm.weight.value.storage, y: s.xn.storage,
                              rstd: s.rstd.storage, N: 1, C: C, eps: inputLayernorm.eps)
        try PackedMatrix.multiply([(w[0], s.q.storage), (w[1], k), (w[2], v)], x: s.xn.storage, on: be)
        for (bias, out, n) in [(a.qProj.bias, s.q.storage, a.H * a.D), (a.kProj.bias, k, kvRow), (a.vProj.bias, v, kvRow)] {
            if let bias { try be.axpy(alpha: 1, bias.value.storage, out, count: n) }
        }
        try be.rope(x: s.q.storage, ldx: a.H * a.D, y: s.q.storage, ldy: a.H * a.D, positions: s.pos.storage,
                    invFreq: invFreq.storage, N: 1, H: a.H, D: a.D, inverse: false)
        try be.rope(x: k, ldx: kvRow, y: k, ldy: kvRow, positions: s.pos.storage, invFreq: invFreq.storage,
                    N: 1, H: a.KV, D: a.D, inverse: false)
        try be.attentionCached(q: s.q.storage, kCache: cache.keys[layer].storage, vCache: cache.values[layer].storage,
                               o: s.o.storage, Tq: 1, S: p + 1, H: a.H, KV: a.KV, D: a.D, scale: 1 / Float(a.D).squareRoot(),
                               alibi: nil, softcap: 0)
        try PackedMatrix.multiply([(w[3], s.x.storage)], x: s.o.storage, epilogue: .accumulate, on: be)  // x += o_proj(o)
        try be.rmsnormForward(x: s.x.storage, weight: postAttentionLayernorm.weight.value.storage, y: s.xn.storage,
                              rstd: s.rstd.storage, N: 1, C: C, eps: postAttentionLayernorm.eps)
        try PackedMatrix.multiply([(w[4], s.h.storage), (w[5], nil)], x: s.xn.storage, epilogue: .swiglu, on: be)
        try PackedMatrix.multiply([(w[6], s.x.storage)], x: s.h.storage, epilogue: .accumulate, on: be)  // x += down(h)
    }
}

/// Buffers one sequence reuses across packed one-token steps (kept on its KV cache).
final class LlamaStepBuffers {
    let x, xn, q, o, h, rstd, id, pos: Tensor

    init(_ c: LlamaConfig, on be: Backend) throws {
        x = try Tensor(empty: [1, c.hiddenSize], on: be)                              // residual stream (1, C)
        xn = try Tensor(empty: [1, c.hiddenSize], on: be)                             // normalized (1, C)
        q = try Tensor(empty: [1, c.numHeads * c.headDim], on: be)                    // (1, H·D)
        o = try Tensor(empty: [1, c.numHeads * c.headDim], on: be)                    // attention output (1, H·D)
        h = try Tensor(empty: [1, c.intermediateSize], on: be)                        // silu(gate) ⊙ up (1, F)
        rstd = try Tensor(empty: [1], on: be)
        id = try Tensor(empty: [1], dtype: .i32, on: be)
        pos = try Tensor(empty: [1], dtype: .i32, on: be)
    }

    private var logitsBuffer: Tensor?

    /// The (1, V) logits of the packed LM head, allocated on first use.
    func logits(vocab V: Int) throws -> Tensor {
        if let l = logitsBuffer, l.count == V { return l }
        let l = try Tensor(empty: [1, V], on: x.backend)
        logitsBuffer = l
        return l
    }
}

/// A Llama-shaped decoder (Llama, Mistral, Qwen2, Qwen3), with parameter names as in HF's
/// `LlamaForCausalLM` (`model.layers.N.self_attn.q_proj.weight`, …).
public final class LlamaModel: Module, CausalLM, PackedHeadModel {
    /// The config the model was built from.
    public let config: LlamaConfig
    /// The `model.` sub-tree of HF's LlamaForCausalLM.
    let model: DecoderBody<LlamaDecoderLayer, RMSNorm>
    let lmHead: Linear?
    let rotary: RotaryEmbedding
    /// The frequencies for sequences within the pretraining length.
    var invFreq: Tensor { rotary.invFreq }
    /// The LM head in GGUF block form for generation (the embedding's blocks when tied).
    var packedHead: PackedMatrix?

    /// Allocates the model's parameters (not initialized: load weights before use).
    /// - Parameters:
    ///   - c: The model's config.
    ///   - be: The device the parameters live on.
    /// - Throws: When allocation fails or the RoPE settings are invalid.
    public init(config c: LlamaConfig, on be: Backend) throws {
        config = c
        model = DecoderBody(embedTokens: try Embedding(vocab: c.vocabSize, dim: c.hiddenSize, on: be),
                            layers: try (0..<c.numLayers).map { try LlamaDecoderLayer(c, layer: $0, on: be) },
                            norm: try RMSNorm(dim: c.hiddenSize, eps: c.rmsNormEps, on: be))
        lmHead = c.tieWordEmbeddings ? nil : try Linear(inFeatures: c.hiddenSize, outFeatures: c.vocabSize, bias: false, on: be)
        rotary = try RotaryEmbedding(c.rope, headDim: c.headDim, maxPositionEmbeddings: c.maxPositionEmbeddings, on: be)
    }

    override public var children: [(String, Module)] {
        var c: [(String, Module)] = [("model", model)]
        if let lmHead { c.append(("lm_head", lmHead)) }
        return c
    }

    public var modelType: String { config.modelType }
    public var vocabSize: Int { config.vocabSize }
    public var hiddenSize: Int { config.hiddenSize }
    public var numLayers: Int { config.numLayers }
    public var tiedEmbeddings: Bool { lmHead == nil }
    public var lmHeadWeight: Parameter { lmHead?.weight ?? model.embedTokens.weight }
    public var hfConfig: [String: JSONValue] {
        get throws {
            guard config.ropeScaling?.freqFactors == nil else {
                throw SFTError.unsupported("HF export of RoPE frequency factors read from a GGUF rope_freqs tensor (transformers has no such setting; export the HF original instead)")
            }
            return config.hf
        }
    }

    public func hiddenStates(_ input: ModelInput, checkpointing: Bool) throws -> Tensor {
        let rope = LayerRope(invFreq: try rotary.invFreq(for: input), attentionFactor: rotary.attentionFactor)
        return try model(try model.embedTokens(input.ids, rowLength: input.T), checkpointing: checkpointing) { layer, x in
            try layer(x) { try layer.selfAttn($0, input, rope: rope) }
        }
    }

    /// q_proj and v_proj for llama, mistral, qwen2 and qwen3 alike.
    public var peftDefaultLoRATargets: [String]? { ["q_proj", "v_proj"] }
    public var layout: ModelLayout { config.layout }
    public func ggufExport() throws -> GGUFModelExport { try config.ggufExport() }

    public func makeCache(capacity: Int) throws -> KVCache {
        try KVCache(layers: config.numLayers, capacity: capacity, kvDim: config.numKVHeads * config.headDim,
                    on: invFreq.backend)
    }

    public func decode(_ ids: [Int32], cache: KVCache) throws -> [Float] {
        try cache.checkRoom(for: ids.count)
        if ids.count == 1, let logits = try Autograd.withNoGrad({ try packedStep(ids[0], cache: cache) }) { return logits }
        let rope = LayerRope(invFreq: try rotary.invFreq(maxPosition: cache.count + ids.count - 1),
                             attentionFactor: rotary.attentionFactor)
        let last = try model.decode(ids, cache: cache, embed: { try model.embedTokens($0) }) { i, layer, x, positions in
            try layer(x) { try layer.selfAttn.decode($0, positions: positions, rope: rope, cache: cache, layer: i) }
        }
        return try Autograd.withNoGrad { try headLogits(last) }
    }

    /// Logits of one token decoded on packed weights with reused buffers; nil when some
    /// layer cannot run packed (then `decode` takes the general path).
    func packedStep(_ id: Int32, cache: KVCache) throws -> [Float]? {
        let be = invFreq.backend, C = config.hiddenSize, V = config.vocabSize
        // The packed step knows plain RoPE and full attention only.
        guard be.supports(.ggufBlocks), !rotary.parameters.dependsOnLength, rotary.attentionFactor == 1,
              config.slidingWindow == nil, !config.qkNorm else { return nil }
        var weights: [[PackedMatrix]] = []
        weights.reserveCapacity(model.layers.count)
        for layer in model.layers {
            guard let w = layer.packedProjections else { return nil }
            weights.append(w)
        }
        let s: LlamaStepBuffers
        if let b = cache.stepBuffers as? LlamaStepBuffers, b.x.backend === be {
            s = b
        } else {
            s = try LlamaStepBuffers(config, on: be)
            cache.stepBuffers = s
        }
        var (token, position) = (id, Int32(cache.count))
        try be.upload(&token, to: s.id.storage, bytes: 4)
        try be.upload(&position, to: s.pos.storage, bytes: 4)
        try be.embeddingForward(ids: s.id.storage, table: model.embedTokens.weight.value.storage, out: s.x.storage,
                                N: 1, C: C, V: V)
        for (i, layer) in model.layers.enumerated() {
            try layer.packedStep(s, weights[i], cache: cache, layer: i, invFreq: invFreq)
        }
        cache.count += 1
        try be.rmsnormForward(x: s.x.storage, weight: model.norm.weight.value.storage, y: s.xn.storage,
                              rstd: s.rstd.storage, N: 1, C: C, eps: model.norm.eps)
        guard let packedHead else { return try Ops.linear(s.xn, lmHeadWeight.value).floats() }
        let logits = try s.logits(vocab: V)
        try PackedMatrix.multiply([(packedHead, logits.storage)], x: s.xn.storage, on: be)
        return try logits.floats()
    }
}

// MARK: - GGUF: llama.cpp's "llama" (Llama, Mistral: q/k rows permuted), "qwen2", "qwen3"

extension LlamaConfig {
    /// `<arch>.<key>` → HF config key.
    static let ggufConfigKeys: [(gguf: String, hf: String)] = [
        ("block_count", "num_hidden_layers"), ("embedding_length", "hidden_size"),
        ("feed_forward_length", "intermediate_size"), ("attention.head_count", "num_attention_heads"),
        ("attention.head_count_kv", "num_key_value_heads"),
        ("attention.layer_norm_rms_epsilon", "rms_norm_eps"),
        ("attention.layer_norm_epsilon", "layer_norm_epsilon"), ("rope.freq_base", "rope_theta"),
        ("context_length", "max_position_embeddings"), ("vocab_size", "vocab_size"),
        ("attention.key_length", "head_dim"),
    ]

    /// llama.cpp's tensor names for the Llama block.
    static func gguf(_ arch: String) -> GGUFArchitecture {
        GGUFArchitecture(
            name: arch, layerPrefix: "model.layers.",
            globals: ["token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                      "output_norm.bias": "model.norm.bias", "output.weight": "lm_head.weight", "output.bias": "lm_head.bias"],
            blocks: ["attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                     "attn_output": "self_attn.o_proj", "attn_norm": "input_layernorm",
                     "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj",
                     "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
                     "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"],
            derived: ["rope_freqs.weight"], permutesQK: arch == "llama" || arch == "mistral") { file in
            var c = GGUFArchitecture.commonConfig(file, arch: arch, keys: ggufConfigKeys)
            c["model_type"] = arch
            if let w = file.metadata["\(arch).attention.sliding_window"]?.int, w > 0 { c["sliding_window"] = w }
            for (key, value) in GGUFArchitecture.ropeConfig(file, arch: arch) { c[key] = value }
            return c
        }
    }

    /// The GGUF architecture for this model_type (llama.cpp converts Mistral v0.1-style
    /// checkpoints as "llama").
    var ggufArchitecture: String { modelType == "mistral" ? "llama" : modelType }

    /// RoPE scaling as llama.cpp stores it: llama3 (and factors read from a GGUF) as the
    /// `rope_freqs` tensor of per-frequency divisors, linear and yarn as `rope.scaling.*` keys;
    /// kinds llama.cpp has no key for are refused, naming the kind.
    func ggufRope(arch a: String) throws -> (metadata: [(String, GGUFValue)], freqFactors: [Float]?) {
        guard let s = ropeScaling else { return ([], nil) }
        switch s.ropeType {
        case "default", "llama3":
            // Divisors of the plain frequencies that give the scaled ones.
            let plain = try RopeParameters(theta: ropeTheta, scaling: nil)
                .frequencies(headDim: headDim, maxPositionEmbeddings: maxPositionEmbeddings).invFreq
            let scaled = try rope.frequencies(headDim: headDim, maxPositionEmbeddings: maxPositionEmbeddings).invFreq
            return ([], zip(plain, scaled).map { Float(Double($0) / Double($1)) })
        case "linear" where s.freqFactors == nil:
            return ([("\(a).rope.scaling.type", .string("linear")), ("\(a).rope.scaling.factor", .float32(Float(s.factor ?? 1)))], nil)
        case "yarn" where s.freqFactors == nil && s.attentionFactor == nil && s.mscale == nil && s.betaFast == nil && s.betaSlow == nil:
            var m: [(String, GGUFValue)] = [("\(a).rope.scaling.type", .string("yarn")),
                                            ("\(a).rope.scaling.factor", .float32(Float(s.factor ?? 1)))]
            if let n = s.originalMaxPositionEmbeddings { m.append(("\(a).rope.scaling.original_context_length", .uint32(UInt32(n)))) }
            return (m, nil)
        default:
            throw SFTError.unsupported("GGUF export of rope_type '\(s.ropeType)' with these settings (llama.cpp has keys for llama3 as rope_freqs, linear and plain yarn)")
        }
    }

    /// The `<arch>.*` keys llama.cpp's converter writes for this config.
    func ggufExport() throws -> GGUFModelExport {
        guard LlamaConfig.families[modelType] != nil else {
            throw SFTError.unsupported("GGUF export of model type '\(modelType)'")
        }
        let a = ggufArchitecture
        let r = try ggufRope(arch: a)
        var m: [(String, GGUFValue)] = [
            ("\(a).vocab_size", .uint32(UInt32(vocabSize))), ("\(a).context_length", .uint32(UInt32(maxPositionEmbeddings))),
            ("\(a).embedding_length", .uint32(UInt32(hiddenSize))), ("\(a).block_count", .uint32(UInt32(numLayers))),
            ("\(a).feed_forward_length", .uint32(UInt32(intermediateSize))),
            ("\(a).attention.head_count", .uint32(UInt32(numHeads))), ("\(a).attention.head_count_kv", .uint32(UInt32(numKVHeads))),
            ("\(a).rope.freq_base", .float32(Float(ropeTheta))),
        ]
        m += r.metadata
        if let window = slidingWindow, layerTypes == nil {
            m.append(("\(a).attention.sliding_window", .uint32(UInt32(window))))
        } else if slidingWindow != nil {
            throw SFTError.unsupported("GGUF export of per-layer sliding windows (layer_types) for \(modelType)")
        }
        m.append(("\(a).attention.layer_norm_rms_epsilon", .float32(rmsNormEps)))
        m.append(("\(a).rope.dimension_count", .uint32(UInt32(headDim))))
        if headDim * numHeads != hiddenSize {
            m.append(("\(a).attention.key_length", .uint32(UInt32(headDim))))
            m.append(("\(a).attention.value_length", .uint32(UInt32(headDim))))
        }
        return GGUFModelExport(architecture: LlamaConfig.gguf(a), metadata: m,
                               derivedTensors: r.freqFactors.map { [("rope_freqs.weight", $0)] } ?? [],
                               heads: (numHeads, numKVHeads))
    }
}
