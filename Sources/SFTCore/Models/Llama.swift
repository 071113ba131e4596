// Llama (Touvron et al. 2023) and the family that shares its block: Llama 1/2/3/3.1, Mistral,
// SmolLM, Qwen2 (q/k/v biases). Mirrors HF's modeling_llama.py: pre-norm decoder layers of
// RMSNorm → GQA self-attention with rotate-half RoPE → residual → RMSNorm → SwiGLU MLP →
// residual; final RMSNorm; LM head (tied to the embedding when the config says so).
//
// Shapes: B batch, T tokens, N = B·T rows, C hidden, H heads, KV kv heads, D head dim,
// F intermediate, V vocab. Activations are (N, C) row-major; q is (N, H·D) = (B, T, H, D).

import Foundation

public struct LlamaConfig: Equatable, Decodable {
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numLayers: Int
    public var numHeads: Int
    public var numKVHeads: Int
    public var headDim: Int
    public var vocabSize: Int
    public var rmsNormEps: Float
    public var ropeTheta: Double
    public var ropeScaling: RopeScaling?
    public var tieWordEmbeddings: Bool
    public var attentionBias: Bool
    public var mlpBias: Bool
    public var maxPositionEmbeddings: Int
    public var modelType: String
    public var bosTokenId: Int?
    public var eosTokenId: Int?
    /// Keys attend to at most this many tokens back, themselves included (Mistral; Qwen2 on
    /// the layers `layerTypes` marks "sliding_attention"); nil: full causal attention.
    public var slidingWindow: Int?
    /// Per layer "full_attention" or "sliding_attention"; nil: every layer the same (windowed
    /// when `slidingWindow` is set).
    public var layerTypes: [String]?
    /// Qwen3: RMSNorm over each head's q and k (`q_norm`, `k_norm`) before RoPE.
    public var qkNorm: Bool

    public init(hiddenSize: Int, intermediateSize: Int, numLayers: Int, numHeads: Int, numKVHeads: Int,
                headDim: Int? = nil, vocabSize: Int, rmsNormEps: Float = 1e-5, ropeTheta: Double = 10000,
                ropeScaling: RopeScaling? = nil, tieWordEmbeddings: Bool = false, attentionBias: Bool = false,
                mlpBias: Bool = false, maxPositionEmbeddings: Int = 2048, modelType: String = "llama",
                bosTokenId: Int? = nil, eosTokenId: Int? = nil, slidingWindow: Int? = nil,
                layerTypes: [String]? = nil, qkNorm: Bool = false) {
        self.hiddenSize = hiddenSize; self.intermediateSize = intermediateSize; self.numLayers = numLayers
        self.numHeads = numHeads; self.numKVHeads = numKVHeads; self.headDim = headDim ?? hiddenSize / numHeads
        self.vocabSize = vocabSize; self.rmsNormEps = rmsNormEps; self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling; self.tieWordEmbeddings = tieWordEmbeddings
        self.attentionBias = attentionBias; self.mlpBias = mlpBias
        self.maxPositionEmbeddings = maxPositionEmbeddings; self.modelType = modelType
        self.bosTokenId = bosTokenId; self.eosTokenId = eosTokenId
        self.slidingWindow = slidingWindow; self.layerTypes = layerTypes; self.qkNorm = qkNorm
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size", numLayers = "num_hidden_layers"
        case numHeads = "num_attention_heads", numKVHeads = "num_key_value_heads", headDim = "head_dim"
        case vocabSize = "vocab_size", rmsNormEps = "rms_norm_eps", tieWordEmbeddings = "tie_word_embeddings"
        case attentionBias = "attention_bias", mlpBias = "mlp_bias", maxPositionEmbeddings = "max_position_embeddings"
        case modelType = "model_type", bosTokenId = "bos_token_id", eosTokenId = "eos_token_id"
        case slidingWindow = "sliding_window", useSlidingWindow = "use_sliding_window", maxWindowLayers = "max_window_layers"
        case layerTypes = "layer_types", hiddenAct = "hidden_act", attentionDropout = "attention_dropout"
        case ropeTheta = "rope_theta", ropeScaling = "rope_scaling", ropeParameters = "rope_parameters"
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
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        numLayers = try c.decode(Int.self, forKey: .numLayers)
        numHeads = try c.decode(Int.self, forKey: .numHeads)
        numKVHeads = try c.decodeIfPresent(Int.self, forKey: .numKVHeads) ?? numHeads
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim) ?? hiddenSize / max(1, numHeads)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        rmsNormEps = Float(try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6)
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? family.qkvBias
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 2048
        bosTokenId = try? c.decodeIfPresent(Int.self, forKey: .bosTokenId)
        eosTokenId = try? c.decodeIfPresent(Int.self, forKey: .eosTokenId)
        qkNorm = family.qkNorm
        try HFConfig.requireActivation(try c.decodeIfPresent(String.self, forKey: .hiddenAct), "hidden_act", ["silu"])
        try HFConfig.requireZero(try c.decodeIfPresent(Double.self, forKey: .attentionDropout), "attention_dropout")
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
                layerTypes = (0..<numLayers).map { $0 >= from ? "sliding_attention" : "full_attention" }
            }
        } else {
            slidingWindow = window
        }
        if let t = layerTypes {
            guard t.count == numLayers else {
                throw SFTError.config(field: "layer_types", message: "\(t.count) entries for \(numLayers) layers")
            }
            if let bad = t.first(where: { $0 != "full_attention" && $0 != "sliding_attention" }) {
                throw SFTError.config(field: "layer_types", message: "'\(bad)' is not implemented (full_attention, sliding_attention)")
            }
            if t.contains("sliding_attention"), slidingWindow == nil {
                throw SFTError.config(field: "sliding_window", message: "layer_types has sliding layers but no window is set")
            }
        }
        if let w = slidingWindow, w <= 0 { throw SFTError.config(field: "sliding_window", message: "\(w) must be positive") }
        guard hiddenSize > 0, numLayers > 0, numHeads > 0, numKVHeads > 0, numHeads % numKVHeads == 0,
              vocabSize > 0, headDim % 2 == 0 else {
            throw SFTError.config(field: "num_key_value_heads", message: "inconsistent shape: hidden \(hiddenSize), heads \(numHeads), kv heads \(numKVHeads), head_dim \(headDim)")
        }
    }

    /// From an HF config.json object (snake_case keys, transformers 4 or 5 layout). Keys that
    /// are neither read nor harmless are errors naming them.
    public init(hf c: [String: Any]) throws {
        self = try HFConfig.decode(LlamaConfig.self, from: c, family: (c["model_type"] as? String) ?? "llama",
                                   understood: CodingKeys.allCases.map(\.rawValue))
    }

    /// The sliding window of layer `i` (nil: full attention).
    public func window(layer i: Int) -> Int? {
        guard let slidingWindow else { return nil }
        guard let layerTypes else { return slidingWindow }
        return layerTypes[i] == "sliding_attention" ? slidingWindow : nil
    }

    public var rope: RopeParameters { RopeParameters(theta: ropeTheta, scaling: ropeScaling) }

    static let architectures = ["llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                                "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"]

    /// The config as transformers 4 writes it (rope_theta / rope_scaling at top level), which
    /// transformers 5 and llama.cpp's converter also read.
    public var hf: [String: Any] {
        var c: [String: Any] = [
            "architectures": [LlamaConfig.architectures[modelType] ?? "LlamaForCausalLM"],
            "model_type": modelType, "hidden_size": hiddenSize, "intermediate_size": intermediateSize,
            "num_hidden_layers": numLayers, "num_attention_heads": numHeads, "num_key_value_heads": numKVHeads,
            "head_dim": headDim, "vocab_size": vocabSize, "rms_norm_eps": Double(rmsNormEps), "rope_theta": ropeTheta,
            "tie_word_embeddings": tieWordEmbeddings, "attention_bias": attentionBias, "mlp_bias": mlpBias,
            "max_position_embeddings": maxPositionEmbeddings, "hidden_act": "silu", "torch_dtype": "float32",
        ]
        if let bosTokenId { c["bos_token_id"] = bosTokenId }
        if let eosTokenId { c["eos_token_id"] = eosTokenId }
        if let slidingWindow {
            c["sliding_window"] = slidingWindow
            if modelType == "qwen2" || modelType == "qwen3" { c["use_sliding_window"] = true }
        }
        if let layerTypes { c["layer_types"] = layerTypes }
        if let s = ropeScaling, let d = try? JSONEncoder().encode(s),
           let o = try? JSONSerialization.jsonObject(with: d) { c["rope_scaling"] = o }
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

    func callAsFunction(_ x: Tensor, _ input: ModelInput, rope: LayerRope) throws -> Tensor {
        let h = try Ops.add(x, try selfAttn(try inputLayernorm(x), input, rope: rope))
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

/// The `model.` sub-tree of HF's LlamaForCausalLM.
final class LlamaBody: Module {
    let embedTokens: Embedding
    let layers: [LlamaDecoderLayer]
    let norm: RMSNorm

    init(_ c: LlamaConfig, on be: Backend) throws {
        embedTokens = try Embedding(vocab: c.vocabSize, dim: c.hiddenSize, on: be)
        layers = try (0..<c.numLayers).map { try LlamaDecoderLayer(c, layer: $0, on: be) }
        norm = try RMSNorm(dim: c.hiddenSize, eps: c.rmsNormEps, on: be)
    }

    override var children: [(String, Module)] {
        [("embed_tokens", embedTokens)] + layers.enumerated().map { ("layers.\($0.offset)", $0.element) } + [("norm", norm)]
    }
}

public final class LlamaModel: Module, CausalLM {
    public let config: LlamaConfig
    let model: LlamaBody
    let lmHead: Linear?
    let rotary: RotaryEmbedding
    /// The frequencies for sequences within the pretraining length.
    var invFreq: Tensor { rotary.invFreq }
    /// The LM head in GGUF block form for generation (the embedding's blocks when tied).
    public var packedLMHead: PackedMatrix?

    public init(config c: LlamaConfig, on be: Backend) throws {
        config = c
        model = try LlamaBody(c, on: be)
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
    public var hfConfig: [String: Any] {
        get throws {
            guard config.ropeScaling?.freqFactors == nil else {
                throw SFTError.unsupported("HF export of RoPE frequency factors read from a GGUF rope_freqs tensor (transformers has no such setting; export the HF original instead)")
            }
            return config.hf
        }
    }

    public func hiddenStates(_ input: ModelInput, checkpointing: Bool) throws -> Tensor {
        let rope = LayerRope(invFreq: try rotary.invFreq(for: input), attentionFactor: rotary.attentionFactor)
        var x = try model.embedTokens(input.ids, rowLength: input.T)                                 // (N, C)
        for layer in model.layers {
            if checkpointing {
                x = try Autograd.checkpoint([x]) { try layer($0[0], input, rope: rope) }
            } else {
                x = try layer(x, input, rope: rope)
            }
        }
        return try model.norm(x)
    }

    /// q_proj and v_proj for llama, mistral, qwen2 and qwen3 alike.
    public var peftDefaultLoRATargets: [String] { ["q_proj", "v_proj"] }

    public func memoryEstimate(quantization: QuantizationConfig?, lora: LoRAConfig?, batch: Int, sequence: Int,
                               checkpointing: Bool, optimizerShards: Int) -> MemoryEstimate? {
        MemoryEstimate(config: config, quantization: quantization, lora: lora, batch: batch, sequence: sequence,
                       checkpointing: checkpointing, optimizerShards: optimizerShards)
    }

    public func makeCache(capacity: Int) throws -> KVCache {
        try KVCache(layers: config.numLayers, capacity: capacity, kvDim: config.numKVHeads * config.headDim,
                    on: invFreq.backend)
    }

    public func decode(_ ids: [Int32], cache: KVCache) throws -> [Float] {
        try cache.checkRoom(for: ids.count)
        return try Autograd.withNoGrad {
            if ids.count == 1, let logits = try packedStep(ids[0], cache: cache) { return logits }
            let be = invFreq.backend
            let positions = try Tensor(ints: (0..<ids.count).map { Int32(cache.count + $0) }, shape: [ids.count], on: be)
            let rope = LayerRope(invFreq: try rotary.invFreq(maxPosition: cache.count + ids.count - 1),
                                 attentionFactor: rotary.attentionFactor)
            var x = try model.embedTokens(try Tensor(ints: ids, shape: [ids.count], on: be))
            for (i, layer) in model.layers.enumerated() {
                let a = try layer.selfAttn.decode(try layer.inputLayernorm(x), positions: positions, rope: rope,
                                                  cache: cache, layer: i)
                let h = try Ops.add(x, a)
                x = try Ops.add(h, try layer.mlp(try layer.postAttentionLayernorm(h)))
            }
            cache.count += ids.count
            let last = try model.norm(try x.rows(ids.count - 1, 1))
            if let packedLMHead { return try packedLMHead.apply(last).floats() }
            return try Ops.linear(last, lmHeadWeight.value).floats()
        }
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
        guard let packedLMHead else { return try Ops.linear(s.xn, lmHeadWeight.value).floats() }
        let logits = try s.logits(vocab: V)
        try PackedMatrix.multiply([(packedLMHead, logits.storage)], x: s.xn.storage, on: be)
        return try logits.floats()
    }
}
