// Gemma 2 (Gemma Team 2024), as HF's modeling_gemma2.py (`gemma2`, Gemma2ForCausalLM), on the
// decoder stack shared with Gemma 3 (NN/Gemma.swift): embeddings scaled by √C; pre-norm layers
// with four (1 + w) RMSNorms around GQA attention (softmax scale query_pre_attn_scalar^-½,
// scores softcapped as attn_logit_softcapping · tanh(x / attn_logit_softcapping)) and a GeGLU
// MLP; final (1 + w) RMSNorm; LM head tied to the embedding, its logits softcapped with
// final_logit_softcapping. One RoPE for every layer; layers alternate sliding-window and global
// attention as `layer_types` says (transformers 4 configs: even layers slide, odd ones are global).
// GGUF: llama.cpp's "gemma2" (below).

import Foundation
import SFTKernels

/// The config of Gemma 2 (`model_type` gemma2) as read from an HF config.json or a GGUF's
/// `gemma2.*` keys; decoding refuses settings sft does not implement, naming the field.
public struct Gemma2Config: Equatable, Decodable, DecoderShaped {
    public var shape: DecoderShape
    /// Whether q/k/v/o projections have biases (HF `attention_bias`, default false).
    public var attentionBias: Bool
    /// Attention scores are scaled by this^-½ instead of D^-½ (HF `query_pre_attn_scalar`,
    /// default 256).
    public var queryPreAttnScalar: Double
    /// Window of the sliding-attention layers: keys at most this many tokens back, themselves
    /// included (HF `sliding_window`, default 4096).
    public var slidingWindow: Int
    /// Per layer "sliding_attention" or "full_attention" (HF `layer_types`; derived from the
    /// sliding-window pattern when the config predates it).
    public var layerTypes: [String]
    /// RoPE θ and scaling, the same for every layer (HF `rope_theta`/`rope_scaling`, or
    /// `rope_parameters`).
    public var rope: RopeParameters
    /// Attention-logit and final-logit softcapping; nil = none (null in config.json).
    public var attnLogitSoftcapping: Double?
    /// Final-logit softcapping: logits become cap · tanh(z / cap) (HF
    /// `final_logit_softcapping`); nil: none.
    public var finalLogitSoftcapping: Double?

    /// The keys Gemma 2 reads besides `DecoderShape`'s.
    enum CodingKeys: String, CodingKey, CaseIterable {
        case attentionBias = "attention_bias", hiddenActivation = "hidden_activation", hiddenAct = "hidden_act"
        case queryPreAttnScalar = "query_pre_attn_scalar", slidingWindow = "sliding_window", layerTypes = "layer_types"
        case slidingWindowSize = "sliding_window_size", cacheImplementation = "cache_implementation"
        case attnLogitSoftcapping = "attn_logit_softcapping", finalLogitSoftcapping = "final_logit_softcapping"
        case useBidirectionalAttention = "use_bidirectional_attention"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let all = try [String: JSONValue](from: decoder)
        shape = try DecoderShape(from: decoder, defaults: .init(headDim: 256, rmsNormEps: 1e-6, maxPositionEmbeddings: 8192,
                                                                tieWordEmbeddings: true))
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        queryPreAttnScalar = try c.decodeIfPresent(Double.self, forKey: .queryPreAttnScalar) ?? 256
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow) ?? 4096
        for key in [CodingKeys.hiddenActivation, .hiddenAct] {
            try HFConfig.requireActivation(try c.decodeIfPresent(String.self, forKey: key), key.rawValue, ["gelu_pytorch_tanh"])
        }
        if let size = try c.decodeIfPresent(Int.self, forKey: .slidingWindowSize), size != slidingWindow {
            throw SFTError.config(field: "sliding_window_size", message: "\(size) differs from sliding_window \(slidingWindow)")
        }
        // transformers' defaults are 50 and 30; an explicit null turns a softcap off.
        func softcap(_ key: CodingKeys, default d: Double) throws -> Double? {
            guard c.contains(key) else { return d }
            guard let v = try c.decodeIfPresent(Double.self, forKey: key) else { return nil }
            guard v > 0 else { throw SFTError.config(field: key.rawValue, message: "\(v) must be > 0 (or null)") }
            return v
        }
        attnLogitSoftcapping = try softcap(.attnLogitSoftcapping, default: 50)
        finalLogitSoftcapping = try softcap(.finalLogitSoftcapping, default: 30)
        if try c.decodeIfPresent(Bool.self, forKey: .useBidirectionalAttention) == true {
            throw SFTError.config(field: "use_bidirectional_attention", message: "bidirectional attention is not implemented")
        }
        if let t = try c.decodeIfPresent([String].self, forKey: .layerTypes) {
            layerTypes = t
        } else {
            // transformers 4: layer i slides when i is even.
            layerTypes = (0..<shape.numLayers).map { $0 % 2 == 0 ? "sliding_attention" : "full_attention" }
        }
        try HFConfig.checkLayerTypes(layerTypes, layers: shape.numLayers)
        rope = try RopeParameters.fromHF(all, defaultTheta: 10000)
        try shape.checkSizes()
        try GemmaLayerSpec.checkWindow(slidingWindow, queryPreAttnScalar: queryPreAttnScalar)
    }

    /// From an HF config.json object (snake_case keys, transformers 4 or 5 layout). Keys that
    /// are neither read nor harmless (`HFConfig.harmless`) are errors naming them.
    /// - Parameter c: The config.json contents.
    /// - Throws: `SFTError.config` naming the first key that is missing, inconsistent or not implemented.
    public init(hf c: [String: JSONValue]) throws {
        self = try HFConfig.decode(Gemma2Config.self, from: c, family: "gemma2", understood: DecoderShape.keyNames + CodingKeys.allCases.map(\.rawValue))
    }

    /// The config as an HF config.json object (what a merged model's config.json contains).
    public var hf: [String: JSONValue] {
        var c = shape.hf(modelType: "gemma2", architecture: "Gemma2ForCausalLM")
        c.merge(GemmaLayerSpec.hf(attentionBias: attentionBias, queryPreAttnScalar: queryPreAttnScalar, slidingWindow: slidingWindow,
                        layerTypes: layerTypes)) { a, _ in a }
        c["rope_parameters"] = rope.hfParameters
        c["attn_logit_softcapping"] = attnLogitSoftcapping.map(JSONValue.double) ?? .null
        c["final_logit_softcapping"] = finalLogitSoftcapping.map(JSONValue.double) ?? .null
        return c
    }

    /// Layer i of the shared Gemma stack.
    func layerSpec(_ i: Int) -> GemmaLayerSpec {
        GemmaLayerSpec(shape, attentionBias: attentionBias, queryPreAttnScalar: queryPreAttnScalar, layerType: layerTypes[i],
                       slidingWindow: slidingWindow, qkNorm: false, attnSoftcap: attnLogitSoftcapping)
    }
}

/// Gemma 2 with parameter names as in HF's `Gemma2ForCausalLM`; its LM head is the
/// embedding unless the config unties them.
public final class Gemma2Model: Module, CausalLM, PackedHeadModel {
    /// The config the model was built from.
    public let config: Gemma2Config
    let model: GemmaBody
    let lmHead: Linear?
    let rotary: RotaryEmbedding

    /// Allocates the model's parameters (not initialized: load weights before use).
    /// - Parameters:
    ///   - c: The model's config.
    ///   - be: The device the parameters live on.
    /// - Throws: When allocation fails or the RoPE settings are invalid.
    public init(config c: Gemma2Config, on be: Backend) throws {
        config = c
        model = try GemmaBody.gemma(vocabSize: c.vocabSize, layers: (0..<c.numLayers).map(c.layerSpec), on: be)
        lmHead = c.tieWordEmbeddings ? nil : try Linear(inFeatures: c.hiddenSize, outFeatures: c.vocabSize, bias: false, on: be)
        rotary = try RotaryEmbedding(c.rope, headDim: c.headDim, maxPositionEmbeddings: c.maxPositionEmbeddings, on: be)
    }

    override public var children: [(String, Module)] {
        var c: [(String, Module)] = [("model", model)]
        if let lmHead { c.append(("lm_head", lmHead)) }
        return c
    }

    public var modelType: String { "gemma2" }
    public var vocabSize: Int { config.vocabSize }
    public var hiddenSize: Int { config.hiddenSize }
    public var numLayers: Int { config.numLayers }
    public var tiedEmbeddings: Bool { lmHead == nil }
    public var lmHeadWeight: Parameter { lmHead?.weight ?? model.embedTokens.weight }
    public var hfConfig: [String: JSONValue] { config.hf }
    /// PEFT's default for gemma2.
    public var peftDefaultLoRATargets: [String]? { ["q_proj", "v_proj"] }
    public var finalLogitSoftcap: Float { Float(config.finalLogitSoftcapping ?? 0) }
    public var layout: ModelLayout { config.layout }
    public func ggufExport() throws -> GGUFModelExport { try config.ggufExport() }
    var packedHead: PackedMatrix?

    /// The RoPE of a forward whose longest position is `maxPosition`.
    private func layerRope(maxPosition: Int) throws -> LayerRope {
        LayerRope(invFreq: try rotary.invFreq(maxPosition: maxPosition), attentionFactor: rotary.attentionFactor)
    }

    public func hiddenStates(_ input: ModelInput, checkpointing: Bool) throws -> Tensor {
        let r = try layerRope(maxPosition: rotary.parameters.dependsOnLength ? Int(try input.positions.ints().max() ?? 0) : 0)
        return try model.hiddenStates(input, ropes: (r, r), checkpointing: checkpointing)
    }

    public func makeCache(capacity: Int) throws -> KVCache {
        try KVCache(layers: config.numLayers, capacity: capacity, kvDim: config.numKVHeads * config.headDim,
                    on: rotary.invFreq.backend)
    }

    public func decode(_ ids: [Int32], cache: KVCache) throws -> [Float] {
        let r = try layerRope(maxPosition: cache.count + ids.count - 1)
        let last = try model.decode(ids, cache: cache, ropes: (r, r))
        return try Autograd.withNoGrad { try headLogits(last) }
    }
}

// MARK: - Sizes and GGUF (llama.cpp's "gemma2": norms stored as 1 + w, no output tensor (tied
// head), both softcaps always applied (defaults 50 / 30), layer i sliding when i is even, queries
// scaled by head_dim^-½ — by (hidden / heads)^-½ for the 46-layer 27B)

extension Gemma2Config {
    /// Sizes for the memory estimate (`GemmaLayerSpec.layout`: the Gemma stack).
    public var layout: ModelLayout { GemmaLayerSpec.layout(shape, attentionBias: attentionBias, qkNorm: false) }

    static let ggufKeys: [(gguf: String, hf: String)] = [
        ("block_count", "num_hidden_layers"), ("embedding_length", "hidden_size"),
        ("feed_forward_length", "intermediate_size"), ("attention.head_count", "num_attention_heads"),
        ("attention.head_count_kv", "num_key_value_heads"), ("attention.layer_norm_rms_epsilon", "rms_norm_eps"),
        ("context_length", "max_position_embeddings"), ("vocab_size", "vocab_size"),
        ("attention.key_length", "head_dim"), ("attention.sliding_window", "sliding_window"),
        ("attn_logit_softcapping", "attn_logit_softcapping"), ("final_logit_softcapping", "final_logit_softcapping"),
        ("rope.freq_base", "rope_theta"),
    ]

    /// llama.cpp's query scale as query_pre_attn_scalar (the 27B has 46 layers).
    static func llamaCppQueryScalar(layers: Int, hidden: Int, heads: Int, headDim: Int) -> Int {
        GGUFArchitecture.gemmaQueryScalar(layers: layers, layers27B: 46, hidden: hidden, heads: heads, headDim: headDim)
    }

    static let gguf = GGUFArchitecture(
        name: "gemma2", layerPrefix: "model.layers.",
        globals: ["token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"],
        blocks: ["attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                 "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                 "post_attention_norm": "post_attention_layernorm", "ffn_norm": "pre_feedforward_layernorm",
                 "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
                 "post_ffw_norm": "post_feedforward_layernorm"],
        normsPlusOne: true) { file in
        var c = GGUFArchitecture.commonConfig(file, arch: "gemma2", keys: ggufKeys)
        c["model_type"] = "gemma2"
        let known: Set<String> = Set(ggufKeys.map(\.gguf)).union([
            "attention.value_length", "rope.dimension_count", "rope.scaling.type", "rope.scaling.factor"])
        c.merge(GGUFArchitecture.unknownKeys(file, arch: "gemma2", known: known)) { a, _ in a }
        for (key, value) in GGUFArchitecture.ropeConfig(file, arch: "gemma2") { c[key] = value }
        let layers = (c["num_hidden_layers"] as? Int) ?? 0
        let hidden = (c["hidden_size"] as? Int) ?? 0
        let heads = (c["num_attention_heads"] as? Int) ?? 1
        let headDim = (c["head_dim"] as? Int) ?? hidden / max(1, heads)
        c["head_dim"] = headDim
        c["query_pre_attn_scalar"] = llamaCppQueryScalar(layers: layers, hidden: hidden, heads: heads, headDim: headDim)
        // llama.cpp's defaults where the keys are absent (transformers' too).
        c["sliding_window"] = c["sliding_window"] ?? 4096
        c["layer_types"] = (0..<layers).map { $0 % 2 == 0 ? "sliding_attention" : "full_attention" }
        return c
    }

    /// The `gemma2.*` keys llama.cpp's converter writes; settings it has no key for are refused.
    func ggufExport() throws -> GGUFModelExport {
        let scalar = Self.llamaCppQueryScalar(layers: numLayers, hidden: hiddenSize, heads: numHeads, headDim: headDim)
        guard queryPreAttnScalar == Double(scalar) else {
            throw SFTError.unsupported("GGUF export of gemma2 with query_pre_attn_scalar \(queryPreAttnScalar) ≠ \(scalar) (llama.cpp scales queries by head_dim, or hidden / heads at 46 layers)")
        }
        guard tieWordEmbeddings else { throw SFTError.unsupported("GGUF export of gemma2 with tie_word_embeddings false (llama.cpp's gemma2 has no output tensor)") }
        guard !attentionBias else { throw SFTError.unsupported("GGUF export of gemma2 with attention_bias (llama.cpp's gemma2 has no biases)") }
        guard layerTypes.indices.allSatisfy({ (layerTypes[$0] == "sliding_attention") == ($0 % 2 == 0) }) else {
            throw SFTError.unsupported("GGUF export of gemma2 layer_types \(layerTypes) (llama.cpp slides the even layers)")
        }
        guard let attnCap = attnLogitSoftcapping, let finalCap = finalLogitSoftcapping else {
            throw SFTError.unsupported("GGUF export of gemma2 without attn_logit_softcapping or final_logit_softcapping (llama.cpp always applies both)")
        }
        var m: [(String, GGUFValue)] = [
            ("gemma2.vocab_size", .uint32(UInt32(vocabSize))), ("gemma2.context_length", .uint32(UInt32(maxPositionEmbeddings))),
            ("gemma2.embedding_length", .uint32(UInt32(hiddenSize))), ("gemma2.block_count", .uint32(UInt32(numLayers))),
            ("gemma2.feed_forward_length", .uint32(UInt32(intermediateSize))),
            ("gemma2.attention.head_count", .uint32(UInt32(numHeads))),
            ("gemma2.attention.head_count_kv", .uint32(UInt32(numKVHeads))),
            ("gemma2.attention.layer_norm_rms_epsilon", .float32(rmsNormEps)),
            ("gemma2.attention.key_length", .uint32(UInt32(headDim))), ("gemma2.attention.value_length", .uint32(UInt32(headDim))),
            ("gemma2.attention.sliding_window", .uint32(UInt32(slidingWindow))),
            ("gemma2.attn_logit_softcapping", .float32(Float(attnCap))),
            ("gemma2.final_logit_softcapping", .float32(Float(finalCap))),
            ("gemma2.rope.freq_base", .float32(Float(rope.theta))),
        ]
        if let s = rope.scaling, s.ropeType != "default" || s.freqFactors != nil {
            guard s.ropeType == "linear", s.freqFactors == nil else {
                throw SFTError.unsupported("GGUF export of gemma2 with rope_type '\(s.ropeType)' (llama.cpp's gemma2 has linear scaling)")
            }
            m += [("gemma2.rope.scaling.type", .string("linear")), ("gemma2.rope.scaling.factor", .float32(Float(s.factor ?? 1)))]
        }
        return GGUFModelExport(architecture: Gemma2Config.gguf, metadata: m, heads: (numHeads, numKVHeads))
    }
}
