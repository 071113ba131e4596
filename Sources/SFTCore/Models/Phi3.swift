// Phi-3 / Phi-3.5 (Abdin et al. 2024), as HF's modeling_phi3.py: the Llama block with fused
// projections — `qkv_proj` (q, k, v stacked by rows) and `gate_up_proj` (gate, up) — LongRoPE
// (`longrope`: short factors up to the pretraining length, long ones beyond, and its attention
// factor) and a sliding window. Pre-norm RMSNorm layers → GQA attention → residual → RMSNorm →
// SwiGLU MLP → residual; final RMSNorm; untied LM head.
//
// Shapes: N = B·T rows, C hidden, H heads, KV kv heads, D head dim, F intermediate, V vocab.

import Foundation
import SFTKernels

/// The config of Phi-3 / Phi-3.5 (`model_type` phi3) as read from an HF config.json or a
/// GGUF's `phi3.*` keys. Decoding refuses what sft does not implement (`hidden_act` other than
/// silu, nonzero dropouts, `partial_rotary_factor` ≠ 1) naming the field.
public struct Phi3Config: Equatable, Decodable, DecoderShaped {
    /// The sizes and settings every HF-style decoder config shares (read through `DecoderShaped`).
    public var shape: DecoderShape
    /// The pretraining context length LongRoPE's short factors cover (HF
    /// `original_max_position_embeddings`); nil when the config has none.
    public var originalMaxPositionEmbeddings: Int?
    /// Keys attend to at most this many tokens back, themselves included (HF `sliding_window`);
    /// nil: full causal attention.
    public var slidingWindow: Int?
    /// RoPE θ and scaling (HF `rope_theta`/`rope_scaling`, or `rope_parameters`), including
    /// LongRoPE's short and long factors.
    public var rope: RopeParameters

    /// The keys Phi-3 reads besides `DecoderShape`'s.
    enum CodingKeys: String, CodingKey, CaseIterable {
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
        case slidingWindow = "sliding_window", hiddenAct = "hidden_act"
        case residPdrop = "resid_pdrop", embdPdrop = "embd_pdrop"
        case partialRotaryFactor = "partial_rotary_factor"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        var all = try [String: JSONValue](from: decoder)
        shape = try DecoderShape(from: decoder, defaults: .init(rmsNormEps: 1e-5, maxPositionEmbeddings: 4096, tieWordEmbeddings: false))
        originalMaxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .originalMaxPositionEmbeddings)
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow)
        try HFConfig.requireActivation(try c.decodeIfPresent(String.self, forKey: .hiddenAct), "hidden_act", ["silu"])
        for key in [CodingKeys.residPdrop, .embdPdrop] {
            try HFConfig.requireZero(try c.decodeIfPresent(Double.self, forKey: key), key.rawValue)
        }
        if let p = try c.decodeIfPresent(Double.self, forKey: .partialRotaryFactor), p != 1 {
            throw SFTError.config(field: "partial_rotary_factor", message: "\(p): partial rotary embeddings are not implemented (only 1.0)")
        }
        all.removeValue(forKey: "partial_rotary_factor")
        rope = try RopeParameters.fromHF(all)
        if let w = slidingWindow, w <= 0 { throw SFTError.config(field: "sliding_window", message: "\(w) must be positive") }
        try shape.checkSizes()
    }

    /// From an HF config.json object (snake_case keys, transformers 4 or 5 layout). Keys that
    /// are neither read nor harmless (`HFConfig.harmless`) are errors naming them.
    /// - Parameter c: The config.json contents.
    /// - Throws: `SFTError.config` naming the first key that is missing, inconsistent or not implemented.
    public init(hf c: [String: JSONValue]) throws {
        self = try HFConfig.decode(Phi3Config.self, from: c, family: "phi3",
                                   understood: DecoderShape.keyNames + CodingKeys.allCases.map(\.rawValue))
    }

    /// The config as an HF config.json object (what a merged model's config.json contains).
    public var hf: [String: JSONValue] {
        var c = shape.hf(modelType: "phi3", architecture: "Phi3ForCausalLM", writesHeadDim: false)
        c["hidden_act"] = "silu"
        c["rope_theta"] = .double(rope.theta)
        c["rope_scaling"] = rope.hfScaling
        if let originalMaxPositionEmbeddings { c["original_max_position_embeddings"] = .int(originalMaxPositionEmbeddings) }
        if let slidingWindow { c["sliding_window"] = .int(slidingWindow) }
        return c
    }
}

final class Phi3Attention: Module {
    let qkvProj, oProj: Linear
    let H: Int, KV: Int, D: Int
    let window: Int?

    init(_ c: Phi3Config, on be: Backend) throws {
        H = c.numHeads; KV = c.numKVHeads; D = c.headDim; window = c.slidingWindow
        qkvProj = try Linear(inFeatures: c.hiddenSize, outFeatures: (H + 2 * KV) * D, bias: false, on: be)
        oProj = try Linear(inFeatures: H * D, outFeatures: c.hiddenSize, bias: false, on: be)
    }

    override var children: [(String, Module)] { [("qkv_proj", qkvProj), ("o_proj", oProj)] }

    private func qkv(_ x: Tensor, positions: Tensor, rope: LayerRope) throws -> (Tensor, Tensor, Tensor) {
        let fused = try qkvProj(x)                                                  // (N, (H + 2KV)·D)
        var q = try Ops.columns(fused, from: 0, count: H * D)                       // (N, H·D)
        var k = try Ops.columns(fused, from: H * D, count: KV * D)                  // (N, KV·D)
        let v = try Ops.columns(fused, from: (H + KV) * D, count: KV * D)           // (N, KV·D)
        q = try Ops.rope(q, positions: positions, invFreq: rope.invFreq, heads: H)
        k = try Ops.rope(k, positions: positions, invFreq: rope.invFreq, heads: KV)
        return (q, k, v)
    }

    func callAsFunction(_ x: Tensor, _ input: ModelInput, rope: LayerRope) throws -> Tensor {
        let (q, k, v) = try qkv(x, positions: input.positions, rope: rope)
        let o = try Ops.attention(q: q, k: k, v: v, docIds: input.docIds, alibi: nil,
                                  shape: AttentionShape(B: input.B, T: input.T, H: H, KV: KV, D: D,
                                                        scale: rope.scale(1 / Float(D).squareRoot()), window: window))
        return try oProj(o)
    }

    func decode(_ x: Tensor, positions: Tensor, rope: LayerRope, cache: KVCache, layer: Int) throws -> Tensor {
        let (q, k, v) = try qkv(x, positions: positions, rope: rope)
        return try oProj(try cache.attend(q: q, k: k, v: v, layer: layer, H: H, KV: KV, D: D,
                                          scale: rope.scale(1 / Float(D).squareRoot()), window: window))
    }
}

final class Phi3MLP: Module {
    let gateUpProj, downProj: Linear
    let F: Int

    init(_ c: Phi3Config, on be: Backend) throws {
        F = c.intermediateSize
        gateUpProj = try Linear(inFeatures: c.hiddenSize, outFeatures: 2 * F, bias: false, on: be)
        downProj = try Linear(inFeatures: F, outFeatures: c.hiddenSize, bias: false, on: be)
    }
    override var children: [(String, Module)] { [("gate_up_proj", gateUpProj), ("down_proj", downProj)] }

    func callAsFunction(_ x: Tensor) throws -> Tensor {
        let gu = try gateUpProj(x)                                                  // (N, 2F): gate | up
        return try downProj(try Ops.swiglu(gate: try Ops.columns(gu, from: 0, count: F), up: try Ops.columns(gu, from: F, count: F)))
    }
}

final class Phi3DecoderLayer: Module {
    let selfAttn: Phi3Attention
    let mlp: Phi3MLP
    let inputLayernorm, postAttentionLayernorm: RMSNorm

    init(_ c: Phi3Config, on be: Backend) throws {
        selfAttn = try Phi3Attention(c, on: be)
        mlp = try Phi3MLP(c, on: be)
        inputLayernorm = try RMSNorm(dim: c.hiddenSize, eps: c.rmsNormEps, on: be)
        postAttentionLayernorm = try RMSNorm(dim: c.hiddenSize, eps: c.rmsNormEps, on: be)
    }

    override var children: [(String, Module)] {
        [("self_attn", selfAttn), ("mlp", mlp), ("input_layernorm", inputLayernorm),
         ("post_attention_layernorm", postAttentionLayernorm)]
    }

    func callAsFunction(_ x: Tensor, attention: (Tensor) throws -> Tensor) throws -> Tensor {
        let h = try Ops.add(x, try attention(try inputLayernorm(x)))
        return try Ops.add(h, try mlp(try postAttentionLayernorm(h)))
    }
}

/// Phi-3 / Phi-3.5 with parameter names as in HF's `Phi3ForCausalLM` (fused
/// `self_attn.qkv_proj` and `mlp.gate_up_proj`).
public final class Phi3Model: Module, CausalLM, PackedHeadModel {
    /// The config the model was built from.
    public let config: Phi3Config
    let model: DecoderBody<Phi3DecoderLayer, RMSNorm>
    let lmHead: Linear?
    let rotary: RotaryEmbedding

    /// Allocates the model's parameters (not initialized: load weights before use).
    /// - Parameters:
    ///   - c: The model's config.
    ///   - be: The device the parameters live on.
    /// - Throws: When allocation fails or the RoPE settings are invalid.
    public init(config c: Phi3Config, on be: Backend) throws {
        config = c
        model = DecoderBody(embedTokens: try Embedding(vocab: c.vocabSize, dim: c.hiddenSize, on: be),
                            layers: try (0..<c.numLayers).map { _ in try Phi3DecoderLayer(c, on: be) },
                            norm: try RMSNorm(dim: c.hiddenSize, eps: c.rmsNormEps, on: be))
        lmHead = c.tieWordEmbeddings ? nil : try Linear(inFeatures: c.hiddenSize, outFeatures: c.vocabSize, bias: false, on: be)
        rotary = try RotaryEmbedding(c.rope, headDim: c.headDim, maxPositionEmbeddings: c.maxPositionEmbeddings, on: be)
    }

    override public var children: [(String, Module)] {
        var c: [(String, Module)] = [("model", model)]
        if let lmHead { c.append(("lm_head", lmHead)) }
        return c
    }

    public var modelType: String { "phi3" }
    public var vocabSize: Int { config.vocabSize }
    public var hiddenSize: Int { config.hiddenSize }
    public var numLayers: Int { config.numLayers }
    public var tiedEmbeddings: Bool { lmHead == nil }
    public var lmHeadWeight: Parameter { lmHead?.weight ?? model.embedTokens.weight }
    public var hfConfig: [String: JSONValue] { config.hf }
    /// PEFT has no default targets for phi3 (its mapping has no entry; PEFT asks for them).
    public var peftDefaultLoRATargets: [String]? { nil }
    public var layout: ModelLayout { config.layout }
    public func ggufExport() throws -> GGUFModelExport { try config.ggufExport() }
    var packedHead: PackedMatrix?

    public func hiddenStates(_ input: ModelInput, checkpointing: Bool) throws -> Tensor {
        let rope = LayerRope(invFreq: try rotary.invFreq(for: input), attentionFactor: rotary.attentionFactor)
        return try model(try model.embedTokens(input.ids, rowLength: input.T), checkpointing: checkpointing) { layer, x in
            try layer(x) { try layer.selfAttn($0, input, rope: rope) }
        }
    }

    public func makeCache(capacity: Int) throws -> KVCache {
        try KVCache(layers: config.numLayers, capacity: capacity, kvDim: config.numKVHeads * config.headDim,
                    on: rotary.invFreq.backend)
    }

    public func decode(_ ids: [Int32], cache: KVCache) throws -> [Float] {
        let rope = LayerRope(invFreq: try rotary.invFreq(maxPosition: cache.count + ids.count - 1),
                             attentionFactor: rotary.attentionFactor)
        let last = try model.decode(ids, cache: cache, embed: { try model.embedTokens($0) }) { i, layer, x, positions in
            try layer(x) { try layer.selfAttn.decode($0, positions: positions, rope: rope, cache: cache, layer: i) }
        }
        return try Autograd.withNoGrad { try headLogits(last) }
    }
}

// MARK: - Sizes and GGUF (llama.cpp's "phi3": fused attn_qkv, gate|up fused in ffn_up, LongRoPE
// factors as the rope_factors_long / rope_factors_short tensors)

extension Phi3Config {
    /// Sizes for the memory estimate. Activations per token and layer: norm outputs, residual
    /// sums, attention and MLP outputs (6C); the fused q|k|v and its three column copies
    /// (2(Q + 2KVd)); q and k after RoPE (Q + KVd); the attention output (Q) and softmax
    /// statistics (H); the fused gate|up, its two column copies and the SwiGLU product (5F).
    public var layout: ModelLayout {
        let C = hiddenSize, F = intermediateSize, Q = numHeads * headDim, KVd = numKVHeads * headDim
        return ModelLayout(
            layers: numLayers, hidden: C, vocab: vocabSize, tiedEmbeddings: tieWordEmbeddings,
            linears: [.init("qkv_proj", C, Q + 2 * KVd), .init("o_proj", Q, C), .init("gate_up_proj", C, 2 * F),
                      .init("down_proj", F, C)],
            layerNormValues: 2 * C, finalNormValues: C,
            activationsPerToken: 6 * C + 2 * (Q + 2 * KVd) + Q + KVd + Q + numHeads + 5 * F,
            bf16ActivationsPerToken: 2 * C + 2 * (Q + 2 * KVd) + 2 * Q + KVd + 5 * F)
    }

    static let ggufKeys: [(gguf: String, hf: String)] = [
        ("block_count", "num_hidden_layers"), ("embedding_length", "hidden_size"),
        ("feed_forward_length", "intermediate_size"), ("attention.head_count", "num_attention_heads"),
        ("attention.head_count_kv", "num_key_value_heads"), ("attention.layer_norm_rms_epsilon", "rms_norm_eps"),
        ("rope.freq_base", "rope_theta"), ("context_length", "max_position_embeddings"), ("vocab_size", "vocab_size"),
        ("attention.key_length", "head_dim"),
    ]

    static let gguf = GGUFArchitecture(
        name: "phi3", layerPrefix: "model.layers.",
        globals: ["token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                  "output.weight": "lm_head.weight"],
        blocks: ["attn_norm": "input_layernorm", "attn_qkv": "self_attn.qkv_proj", "attn_output": "self_attn.o_proj",
                 "ffn_norm": "post_attention_layernorm", "ffn_up": "mlp.gate_up_proj", "ffn_down": "mlp.down_proj"],
        derived: ["rope_factors_long.weight", "rope_factors_short.weight"]) { file in
        let m = file.metadata
        var c = GGUFArchitecture.commonConfig(file, arch: "phi3", keys: ggufKeys)
        c["model_type"] = "phi3"
        let known: Set<String> = Set(ggufKeys.map(\.gguf)).union([
            "attention.value_length", "attention.sliding_window", "rope.dimension_count",
            "rope.scaling.original_context_length", "rope.scaling.attn_factor"])
        c.merge(GGUFArchitecture.unknownKeys(file, arch: "phi3", known: known)) { a, _ in a }
        if let w = m["phi3.attention.sliding_window"]?.int, w > 0 { c["sliding_window"] = w }
        let heads = (c["num_attention_heads"] as? Int) ?? 1
        let headDim = (c["head_dim"] as? Int) ?? ((c["hidden_size"] as? Int) ?? 0) / max(1, heads)
        if let dims = m["phi3.rope.dimension_count"]?.int, dims != headDim {
            c["partial_rotary_factor"] = Double(dims) / Double(max(1, headDim))
        }
        let original = m["phi3.rope.scaling.original_context_length"]?.int
        if let original { c["original_max_position_embeddings"] = original }
        if let l = file.tensor(named: "rope_factors_long.weight"), let s = file.tensor(named: "rope_factors_short.weight"),
           let long = try? file.dequantize(l), let short = try? file.dequantize(s) {
            var scaling: [String: Any] = ["rope_type": "longrope", "long_factor": long.map(Double.init),
                                          "short_factor": short.map(Double.init)]
            if let original { scaling["original_max_position_embeddings"] = original }
            // The stored attention factor, unless it is the one transformers derives (then the
            // config leaves it out, as the HF original does).
            if let stored = m["phi3.rope.scaling.attn_factor"]?.float, let original,
               let context = c["max_position_embeddings"] as? Int {
                let factor = Double(context) / Double(original)
                let derived = factor <= 1 ? 1 : (1 + Foundation.log(factor) / Foundation.log(Double(original))).squareRoot()
                if abs(Double(Float(derived)) - stored) > 1e-6 { scaling["attention_factor"] = stored }
            }
            c["rope_scaling"] = scaling
        } else if let a = m["phi3.rope.scaling.attn_factor"]?.float, a != 1 {
            c["phi3.rope.scaling.attn_factor"] = a
        }
        return c
    }

    /// The `phi3.*` keys llama.cpp's converter writes, and LongRoPE's factor tensors.
    func ggufExport() throws -> GGUFModelExport {
        var m: [(String, GGUFValue)] = [
            ("phi3.vocab_size", .uint32(UInt32(vocabSize))), ("phi3.context_length", .uint32(UInt32(maxPositionEmbeddings))),
            ("phi3.embedding_length", .uint32(UInt32(hiddenSize))), ("phi3.block_count", .uint32(UInt32(numLayers))),
            ("phi3.feed_forward_length", .uint32(UInt32(intermediateSize))),
            ("phi3.attention.head_count", .uint32(UInt32(numHeads))), ("phi3.attention.head_count_kv", .uint32(UInt32(numKVHeads))),
            ("phi3.attention.layer_norm_rms_epsilon", .float32(rmsNormEps)),
            ("phi3.rope.dimension_count", .uint32(UInt32(headDim))), ("phi3.rope.freq_base", .float32(Float(rope.theta))),
            ("phi3.attention.sliding_window", .uint32(UInt32(slidingWindow ?? 0))),
        ]
        if headDim * numHeads != hiddenSize {
            m.append(("phi3.attention.key_length", .uint32(UInt32(headDim))))
            m.append(("phi3.attention.value_length", .uint32(UInt32(headDim))))
        }
        var tensors: [(name: String, values: [Float])] = []
        if let s = rope.scaling {
            guard s.ropeType == "longrope", s.freqFactors == nil, let long = s.longFactor, let short = s.shortFactor else {
                throw SFTError.unsupported("GGUF export of phi3 with rope_type '\(s.ropeType)' (llama.cpp's phi3 has LongRoPE factors only)")
            }
            guard s.factor == nil else {
                throw SFTError.unsupported("GGUF export of phi3 LongRoPE with an explicit factor (llama.cpp derives it from the context lengths)")
            }
            let original = s.originalMaxPositionEmbeddings ?? originalMaxPositionEmbeddings ?? maxPositionEmbeddings
            let attention = try rope.frequencies(headDim: headDim, maxPositionEmbeddings: maxPositionEmbeddings).attentionFactor
            m.append(("phi3.rope.scaling.original_context_length", .uint32(UInt32(original))))
            m.append(("phi3.rope.scaling.attn_factor", .float32(attention)))
            tensors = [("rope_factors_long.weight", long.map(Float.init)), ("rope_factors_short.weight", short.map(Float.init))]
        } else if let original = originalMaxPositionEmbeddings {
            m.append(("phi3.rope.scaling.original_context_length", .uint32(UInt32(original))))
        }
        return GGUFModelExport(architecture: Phi3Config.gguf, metadata: m, derivedTensors: tensors, heads: (numHeads, numKVHeads))
    }
}
