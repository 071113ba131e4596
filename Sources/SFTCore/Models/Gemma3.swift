// Gemma 3, text part (Gemma Team 2025), as HF's modeling_gemma3.py (`gemma3_text`,
// Gemma3ForCausalLM), on the decoder stack shared with Gemma 2 (NN/Gemma.swift): embeddings
// scaled by √C; pre-norm decoder layers with four (1 + w) RMSNorms — input → GQA attention with
// per-head (1 + w) RMSNorm of q and k, RoPE, softmax scale query_pre_attn_scalar^-½ (optional
// logit softcapping) → post-attention norm → residual; pre-feedforward norm → GeGLU MLP →
// post-feedforward norm → residual; final (1 + w) RMSNorm; LM head tied to the embedding. Layers
// alternate sliding-window ("sliding_attention", local RoPE θ) and global ("full_attention",
// global RoPE θ and scaling) attention as `layer_types` says.
//
// Shapes: N = B·T rows, C hidden, H heads, KV kv heads, D head dim, F intermediate, V vocab.

import Foundation
import SFTKernels

/// The config of Gemma 3's text model (`model_type` gemma3_text) as read from an HF
/// config.json or a GGUF's `gemma3.*` keys; decoding refuses settings sft does not implement,
/// naming the field.
public struct Gemma3Config: Equatable, Decodable, DecoderShaped {
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
    /// Attention-logit and final-logit softcapping; nil = none.
    public var attnLogitSoftcapping: Double?
    /// Final-logit softcapping: logits become cap · tanh(z / cap) (HF
    /// `final_logit_softcapping`); nil: none.
    public var finalLogitSoftcapping: Double?
    /// RoPE of the global and the sliding layers.
    public var ropeFull: RopeParameters
    /// RoPE of the sliding-window layers: θ from HF `rope_local_base_freq` (or
    /// `rope_parameters.sliding_attention`), without scaling.
    public var ropeSliding: RopeParameters

    /// The keys Gemma 3 reads besides `DecoderShape`'s.
    enum CodingKeys: String, CodingKey, CaseIterable {
        case attentionBias = "attention_bias", hiddenActivation = "hidden_activation", hiddenAct = "hidden_act"
        case queryPreAttnScalar = "query_pre_attn_scalar", slidingWindow = "sliding_window", layerTypes = "layer_types"
        case slidingWindowPattern = "sliding_window_pattern", slidingWindowPatternPrivate = "_sliding_window_pattern"
        case ropeLocalBaseFreq = "rope_local_base_freq"
        case attnLogitSoftcapping = "attn_logit_softcapping", finalLogitSoftcapping = "final_logit_softcapping"
        case useBidirectionalAttention = "use_bidirectional_attention"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let all = try [String: JSONValue](from: decoder)
        shape = try DecoderShape(from: decoder, defaults: .init(headDim: 256, rmsNormEps: 1e-6, maxPositionEmbeddings: 131072,
                                                                tieWordEmbeddings: true))
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        queryPreAttnScalar = try c.decodeIfPresent(Double.self, forKey: .queryPreAttnScalar) ?? 256
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow) ?? 4096
        try HFConfig.requireActivation(try c.decodeIfPresent(String.self, forKey: .hiddenActivation) ?? "gelu_pytorch_tanh",
                                       "hidden_activation", ["gelu_pytorch_tanh"])
        attnLogitSoftcapping = try c.decodeIfPresent(Double.self, forKey: .attnLogitSoftcapping)
        finalLogitSoftcapping = try c.decodeIfPresent(Double.self, forKey: .finalLogitSoftcapping)
        for (key, v) in [("attn_logit_softcapping", attnLogitSoftcapping), ("final_logit_softcapping", finalLogitSoftcapping)] {
            if let v, !(v > 0) { throw SFTError.config(field: key, message: "\(v) must be > 0 (or null)") }
        }
        if try c.decodeIfPresent(Bool.self, forKey: .useBidirectionalAttention) == true {
            throw SFTError.config(field: "use_bidirectional_attention", message: "bidirectional attention is not implemented")
        }
        if let t = try c.decodeIfPresent([String].self, forKey: .layerTypes) {
            layerTypes = t
        } else {
            // Older configs: every `sliding_window_pattern`-th layer is global.
            let pattern = try c.decodeIfPresent(Int.self, forKey: .slidingWindowPattern)
                ?? c.decodeIfPresent(Int.self, forKey: .slidingWindowPatternPrivate) ?? 6
            layerTypes = (0..<shape.numLayers).map { ($0 + 1) % pattern == 0 ? "full_attention" : "sliding_attention" }
        }
        try HFConfig.checkLayerTypes(layerTypes, layers: shape.numLayers)
        if case .object(let p)? = all["rope_parameters"], p.contains(where: { $0.0 == "full_attention" }) {
            ropeFull = try RopeParameters.fromHF(all, layerType: "full_attention")
            ropeSliding = try RopeParameters.fromHF(all, layerType: "sliding_attention")
        } else {
            // transformers 4: rope_theta / rope_scaling are the global RoPE, the local one is
            // plain with rope_local_base_freq.
            ropeFull = try RopeParameters.fromHF(all, defaultTheta: 1_000_000)
            ropeSliding = RopeParameters(theta: try c.decodeIfPresent(Double.self, forKey: .ropeLocalBaseFreq) ?? 10000, scaling: nil)
        }
        try shape.checkSizes()
        try GemmaLayerSpec.checkWindow(slidingWindow, queryPreAttnScalar: queryPreAttnScalar)
    }

    /// From an HF config.json object (snake_case keys, transformers 4 or 5 layout). Keys that
    /// are neither read nor harmless (`HFConfig.harmless`) are errors naming them.
    /// - Parameter c: The config.json contents.
    /// - Throws: `SFTError.config` naming the first key that is missing, inconsistent or not implemented.
    public init(hf c: [String: JSONValue]) throws {
        self = try HFConfig.decode(Gemma3Config.self, from: c, family: "gemma3_text", understood: DecoderShape.keyNames + CodingKeys.allCases.map(\.rawValue))
    }

    /// The config as an HF config.json object (what a merged model's config.json contains).
    public var hf: [String: JSONValue] {
        var c = shape.hf(modelType: "gemma3_text", architecture: "Gemma3ForCausalLM")
        c.merge(GemmaLayerSpec.hf(attentionBias: attentionBias, queryPreAttnScalar: queryPreAttnScalar, slidingWindow: slidingWindow,
                        layerTypes: layerTypes)) { a, _ in a }
        c["rope_parameters"] = ["full_attention": ropeFull.hfParameters, "sliding_attention": ropeSliding.hfParameters]
        c["attn_logit_softcapping"] = attnLogitSoftcapping.map(JSONValue.double)
        c["final_logit_softcapping"] = finalLogitSoftcapping.map(JSONValue.double)
        return c
    }

    /// Layer i of the shared Gemma stack.
    func layerSpec(_ i: Int) -> GemmaLayerSpec {
        GemmaLayerSpec(shape, attentionBias: attentionBias, queryPreAttnScalar: queryPreAttnScalar, layerType: layerTypes[i],
                       slidingWindow: slidingWindow, qkNorm: true, attnSoftcap: attnLogitSoftcapping)
    }
}

/// Gemma 3's text decoder with parameter names as in HF's `Gemma3ForCausalLM`; its LM
/// head is the embedding unless the config unties them.
public final class Gemma3Model: Module, CausalLM, PackedHeadModel {
    /// The config the model was built from.
    public let config: Gemma3Config
    let model: GemmaBody
    let lmHead: Linear?
    let ropeFull, ropeSliding: RotaryEmbedding

    /// Allocates the model's parameters (not initialized: load weights before use).
    /// - Parameters:
    ///   - c: The model's config.
    ///   - be: The device the parameters live on.
    /// - Throws: When allocation fails or the RoPE settings are invalid.
    public init(config c: Gemma3Config, on be: Backend) throws {
        config = c
        model = try GemmaBody.gemma(vocabSize: c.vocabSize, layers: (0..<c.numLayers).map(c.layerSpec), on: be)
        lmHead = c.tieWordEmbeddings ? nil : try Linear(inFeatures: c.hiddenSize, outFeatures: c.vocabSize, bias: false, on: be)
        ropeFull = try RotaryEmbedding(c.ropeFull, headDim: c.headDim, maxPositionEmbeddings: c.maxPositionEmbeddings, on: be)
        ropeSliding = try RotaryEmbedding(c.ropeSliding, headDim: c.headDim, maxPositionEmbeddings: c.maxPositionEmbeddings, on: be)
    }

    override public var children: [(String, Module)] {
        var c: [(String, Module)] = [("model", model)]
        if let lmHead { c.append(("lm_head", lmHead)) }
        return c
    }

    public var modelType: String { "gemma3_text" }
    public var finalLogitSoftcap: Float { Float(config.finalLogitSoftcapping ?? 0) }
    public var vocabSize: Int { config.vocabSize }
    public var hiddenSize: Int { config.hiddenSize }
    public var numLayers: Int { config.numLayers }
    public var tiedEmbeddings: Bool { lmHead == nil }
    public var lmHeadWeight: Parameter { lmHead?.weight ?? model.embedTokens.weight }
    public var hfConfig: [String: JSONValue] { config.hf }
    /// PEFT's default for gemma3_text.
    public var peftDefaultLoRATargets: [String]? { ["q_proj", "v_proj"] }
    public var layout: ModelLayout { config.layout }
    public func ggufExport() throws -> GGUFModelExport { try config.ggufExport() }
    var packedHead: PackedMatrix?

    /// Both RoPEs for a forward whose longest position is `maxPosition`.
    private func ropes(maxPosition: Int) throws -> (full: LayerRope, sliding: LayerRope) {
        (LayerRope(invFreq: try ropeFull.invFreq(maxPosition: maxPosition), attentionFactor: ropeFull.attentionFactor),
         LayerRope(invFreq: try ropeSliding.invFreq(maxPosition: maxPosition), attentionFactor: ropeSliding.attentionFactor))
    }

    public func hiddenStates(_ input: ModelInput, checkpointing: Bool) throws -> Tensor {
        let needsLength = ropeFull.parameters.dependsOnLength || ropeSliding.parameters.dependsOnLength
        let r = try ropes(maxPosition: needsLength ? Int(try input.positions.ints().max() ?? 0) : 0)
        return try model.hiddenStates(input, ropes: r, checkpointing: checkpointing)
    }

    public func makeCache(capacity: Int) throws -> KVCache {
        try KVCache(layers: config.numLayers, capacity: capacity, kvDim: config.numKVHeads * config.headDim,
                    on: ropeFull.invFreq.backend)
    }

    public func decode(_ ids: [Int32], cache: KVCache) throws -> [Float] {
        let last = try model.decode(ids, cache: cache, ropes: try ropes(maxPosition: cache.count + ids.count - 1))
        return try Autograd.withNoGrad { try headLogits(last) }
    }
}

// MARK: - Sizes and GGUF (llama.cpp's "gemma3": norms stored as 1 + w, the sliding layers' RoPE
// base as rope.freq_base_swa, every sliding_window_pattern-th layer global)

extension Gemma3Config {
    /// Sizes for the memory estimate (`GemmaLayerSpec.layout`: the Gemma stack with its q/k norms).
    public var layout: ModelLayout { GemmaLayerSpec.layout(shape, attentionBias: attentionBias, qkNorm: true) }

    static let ggufKeys: [(gguf: String, hf: String)] = [
        ("block_count", "num_hidden_layers"), ("embedding_length", "hidden_size"),
        ("feed_forward_length", "intermediate_size"), ("attention.head_count", "num_attention_heads"),
        ("attention.head_count_kv", "num_key_value_heads"), ("attention.layer_norm_rms_epsilon", "rms_norm_eps"),
        ("context_length", "max_position_embeddings"), ("vocab_size", "vocab_size"),
        ("attention.key_length", "head_dim"), ("attention.sliding_window", "sliding_window"),
    ]

    /// llama.cpp's query scale as query_pre_attn_scalar (the 27B has 62 layers).
    static func llamaCppQueryScalar(layers: Int, hidden: Int, heads: Int, headDim: Int) -> Int {
        GGUFArchitecture.gemmaQueryScalar(layers: layers, layers27B: 62, hidden: hidden, heads: heads, headDim: headDim)
    }

    static let gguf = GGUFArchitecture(
        name: "gemma3", layerPrefix: "model.layers.",
        globals: ["token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                  "output.weight": "lm_head.weight"],
        blocks: ["attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                 "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
                 "attn_k_norm": "self_attn.k_norm", "post_attention_norm": "post_attention_layernorm",
                 "ffn_norm": "pre_feedforward_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                 "ffn_down": "mlp.down_proj", "post_ffw_norm": "post_feedforward_layernorm"],
        normsPlusOne: true) { file in
        let m = file.metadata
        var c = GGUFArchitecture.commonConfig(file, arch: "gemma3", keys: ggufKeys)
        c["model_type"] = "gemma3_text"
        let known: Set<String> = Set(ggufKeys.map(\.gguf)).union([
            "attention.value_length", "attention.sliding_window_pattern", "rope.dimension_count", "rope.freq_base",
            "rope.freq_base_swa", "rope.scaling.type", "rope.scaling.factor"])
        c.merge(GGUFArchitecture.unknownKeys(file, arch: "gemma3", known: known)) { a, _ in a }
        let layers = (c["num_hidden_layers"] as? Int) ?? 0
        let heads = (c["num_attention_heads"] as? Int) ?? 1, hidden = (c["hidden_size"] as? Int) ?? 0
        let headDim = (c["head_dim"] as? Int) ?? hidden / max(1, heads)
        c["head_dim"] = headDim
        c["query_pre_attn_scalar"] = llamaCppQueryScalar(layers: layers, hidden: hidden, heads: heads, headDim: headDim)
        if let dims = m["gemma3.rope.dimension_count"]?.int, dims != headDim { c["gemma3.rope.dimension_count"] = dims }
        // llama.cpp's default period is 6: layers 5, 11, ... are global.
        let period = m["gemma3.attention.sliding_window_pattern"]?.int ?? 6
        c["layer_types"] = (0..<layers).map { ($0 + 1) % max(1, period) == 0 ? "full_attention" : "sliding_attention" }
        var full: [String: Any] = ["rope_type": "default", "rope_theta": m["gemma3.rope.freq_base"]?.float ?? 1_000_000]
        switch m["gemma3.rope.scaling.type"]?.string {
        case nil, "none": break
        case "linear":
            full["rope_type"] = "linear"
            full["factor"] = m["gemma3.rope.scaling.factor"]?.float ?? 1
        case let other?: c["gemma3.rope.scaling.type"] = other
        }
        c["rope_parameters"] = ["full_attention": full,
                                "sliding_attention": ["rope_type": "default", "rope_theta": m["gemma3.rope.freq_base_swa"]?.float ?? 10000]]
        return c
    }

    /// The `gemma3.*` keys llama.cpp's converter writes; settings it has no key for are refused.
    func ggufExport() throws -> GGUFModelExport {
        let scalar = Self.llamaCppQueryScalar(layers: numLayers, hidden: hiddenSize, heads: numHeads, headDim: headDim)
        guard queryPreAttnScalar == Double(scalar) else {
            throw SFTError.unsupported("GGUF export of gemma3 with query_pre_attn_scalar \(queryPreAttnScalar) ≠ \(scalar) (llama.cpp scales queries by head_dim, or hidden / heads at 62 layers)")
        }
        guard !attentionBias else { throw SFTError.unsupported("GGUF export of gemma3 with attention_bias (llama.cpp's gemma3 has no biases)") }
        guard attnLogitSoftcapping == nil, finalLogitSoftcapping == nil else {
            throw SFTError.unsupported("GGUF export of gemma3 with attn_logit_softcapping or final_logit_softcapping (llama.cpp's gemma3 has no softcaps)")
        }
        guard ropeSliding.scaling == nil else {
            throw SFTError.unsupported("GGUF export of gemma3 with RoPE scaling on the sliding layers (llama.cpp scales the global layers only)")
        }
        // The sliding/global pattern as a period: every p-th layer global.
        guard let p = layerTypes.firstIndex(of: "full_attention").map({ $0 + 1 }) ?? (layerTypes.isEmpty ? nil : numLayers + 1),
              layerTypes.indices.allSatisfy({ (layerTypes[$0] == "full_attention") == (($0 + 1) % p == 0) }) else {
            throw SFTError.unsupported("GGUF export of gemma3 layer_types \(layerTypes) (llama.cpp knows every p-th layer global)")
        }
        var m: [(String, GGUFValue)] = [
            ("gemma3.vocab_size", .uint32(UInt32(vocabSize))), ("gemma3.context_length", .uint32(UInt32(maxPositionEmbeddings))),
            ("gemma3.embedding_length", .uint32(UInt32(hiddenSize))), ("gemma3.block_count", .uint32(UInt32(numLayers))),
            ("gemma3.feed_forward_length", .uint32(UInt32(intermediateSize))),
            ("gemma3.attention.head_count", .uint32(UInt32(numHeads))),
            ("gemma3.attention.head_count_kv", .uint32(UInt32(numKVHeads))),
            ("gemma3.attention.layer_norm_rms_epsilon", .float32(rmsNormEps)),
            ("gemma3.attention.key_length", .uint32(UInt32(headDim))), ("gemma3.attention.value_length", .uint32(UInt32(headDim))),
            ("gemma3.rope.dimension_count", .uint32(UInt32(headDim))),
            ("gemma3.rope.freq_base", .float32(Float(ropeFull.theta))), ("gemma3.rope.freq_base_swa", .float32(Float(ropeSliding.theta))),
            ("gemma3.attention.sliding_window", .uint32(UInt32(slidingWindow))),
            ("gemma3.attention.sliding_window_pattern", .uint32(UInt32(p))),
        ]
        if let s = ropeFull.scaling {
            guard s.ropeType == "linear", s.freqFactors == nil else {
                throw SFTError.unsupported("GGUF export of gemma3 with rope_type '\(s.ropeType)' (llama.cpp's gemma3 has linear scaling)")
            }
            m += [("gemma3.rope.scaling.type", .string("linear")), ("gemma3.rope.scaling.factor", .float32(Float(s.factor ?? 1)))]
        }
        return GGUFModelExport(architecture: Gemma3Config.gguf, metadata: m, heads: (numHeads, numKVHeads))
    }
}
