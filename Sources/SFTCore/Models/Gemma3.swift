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

public struct Gemma3Config: Equatable, Decodable {
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numLayers: Int
    public var numHeads: Int
    public var numKVHeads: Int
    public var headDim: Int
    public var vocabSize: Int
    public var rmsNormEps: Float
    public var maxPositionEmbeddings: Int
    public var tieWordEmbeddings: Bool
    public var attentionBias: Bool
    public var queryPreAttnScalar: Double
    public var slidingWindow: Int
    public var layerTypes: [String]
    /// Attention-logit and final-logit softcapping; nil = none.
    public var attnLogitSoftcapping: Double?
    public var finalLogitSoftcapping: Double?
    /// RoPE of the global and the sliding layers.
    public var ropeFull: RopeParameters
    public var ropeSliding: RopeParameters
    public var bosTokenId: Int?
    public var eosTokenId: Int?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size", numLayers = "num_hidden_layers"
        case numHeads = "num_attention_heads", numKVHeads = "num_key_value_heads", headDim = "head_dim"
        case vocabSize = "vocab_size", rmsNormEps = "rms_norm_eps", maxPositionEmbeddings = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings", attentionBias = "attention_bias"
        case attentionDropout = "attention_dropout", hiddenActivation = "hidden_activation", hiddenAct = "hidden_act"
        case queryPreAttnScalar = "query_pre_attn_scalar", slidingWindow = "sliding_window", layerTypes = "layer_types"
        case slidingWindowPattern = "sliding_window_pattern", slidingWindowPatternPrivate = "_sliding_window_pattern"
        case ropeParameters = "rope_parameters", ropeTheta = "rope_theta", ropeScaling = "rope_scaling"
        case ropeLocalBaseFreq = "rope_local_base_freq"
        case attnLogitSoftcapping = "attn_logit_softcapping", finalLogitSoftcapping = "final_logit_softcapping"
        case useBidirectionalAttention = "use_bidirectional_attention"
        case modelType = "model_type", bosTokenId = "bos_token_id", eosTokenId = "eos_token_id"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let all = try [String: JSONValue](from: decoder)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        numLayers = try c.decode(Int.self, forKey: .numLayers)
        numHeads = try c.decode(Int.self, forKey: .numHeads)
        numKVHeads = try c.decodeIfPresent(Int.self, forKey: .numKVHeads) ?? numHeads
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim) ?? 256
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        rmsNormEps = Float(try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6)
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 131072
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? true
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        queryPreAttnScalar = try c.decodeIfPresent(Double.self, forKey: .queryPreAttnScalar) ?? 256
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow) ?? 4096
        bosTokenId = try? c.decodeIfPresent(Int.self, forKey: .bosTokenId)
        eosTokenId = try? c.decodeIfPresent(Int.self, forKey: .eosTokenId)
        try HFConfig.requireZero(try c.decodeIfPresent(Double.self, forKey: .attentionDropout), "attention_dropout")
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
            layerTypes = (0..<numLayers).map { ($0 + 1) % pattern == 0 ? "full_attention" : "sliding_attention" }
        }
        guard layerTypes.count == numLayers else {
            throw SFTError.config(field: "layer_types", message: "\(layerTypes.count) entries for \(numLayers) layers")
        }
        if let bad = layerTypes.first(where: { $0 != "full_attention" && $0 != "sliding_attention" }) {
            throw SFTError.config(field: "layer_types", message: "'\(bad)' is not implemented (full_attention, sliding_attention)")
        }
        if case .object(let p)? = all["rope_parameters"], p.contains(where: { $0.0 == "full_attention" }) {
            ropeFull = try RopeParameters.fromHF(all, layerType: "full_attention")
            ropeSliding = try RopeParameters.fromHF(all, layerType: "sliding_attention")
        } else {
            // transformers 4: rope_theta / rope_scaling are the global RoPE, the local one is
            // plain with rope_local_base_freq.
            ropeFull = try RopeParameters.fromHF(all, defaultTheta: 1_000_000)
            ropeSliding = RopeParameters(theta: try c.decodeIfPresent(Double.self, forKey: .ropeLocalBaseFreq) ?? 10000, scaling: nil)
        }
        guard hiddenSize > 0, numLayers > 0, numHeads > 0, numKVHeads > 0, numHeads % numKVHeads == 0, vocabSize > 0,
              headDim % 2 == 0, slidingWindow > 0 else {
            throw SFTError.config(field: "num_key_value_heads", message: "inconsistent shape: hidden \(hiddenSize), heads \(numHeads), kv heads \(numKVHeads), head_dim \(headDim)")
        }
    }

    public init(hf c: [String: Any]) throws {
        self = try HFConfig.decode(Gemma3Config.self, from: c, family: "gemma3_text", understood: CodingKeys.allCases.map(\.rawValue))
    }

    public var hf: [String: Any] {
        func rope(_ p: RopeParameters) -> [String: Any] {
            var d: [String: Any] = ["rope_type": p.kind, "rope_theta": p.theta]
            if let s = p.scaling, let data = try? JSONEncoder().encode(s),
               let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any] { d.merge(o) { a, _ in a } }
            return d
        }
        var c: [String: Any] = [
            "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": hiddenSize,
            "intermediate_size": intermediateSize, "num_hidden_layers": numLayers, "num_attention_heads": numHeads,
            "num_key_value_heads": numKVHeads, "head_dim": headDim, "vocab_size": vocabSize, "rms_norm_eps": Double(rmsNormEps),
            "max_position_embeddings": maxPositionEmbeddings, "tie_word_embeddings": tieWordEmbeddings,
            "attention_bias": attentionBias, "hidden_activation": "gelu_pytorch_tanh",
            "query_pre_attn_scalar": queryPreAttnScalar, "sliding_window": slidingWindow, "layer_types": layerTypes,
            "rope_parameters": ["full_attention": rope(ropeFull), "sliding_attention": rope(ropeSliding)],
            "torch_dtype": "float32",
        ]
        if let bosTokenId { c["bos_token_id"] = bosTokenId }
        if let eosTokenId { c["eos_token_id"] = eosTokenId }
        if let attnLogitSoftcapping { c["attn_logit_softcapping"] = attnLogitSoftcapping }
        if let finalLogitSoftcapping { c["final_logit_softcapping"] = finalLogitSoftcapping }
        return c
    }

    /// Layer i of the shared Gemma stack.
    func layerSpec(_ i: Int) -> GemmaLayerSpec {
        GemmaLayerSpec(hiddenSize: hiddenSize, intermediateSize: intermediateSize, numHeads: numHeads, numKVHeads: numKVHeads,
                       headDim: headDim, rmsNormEps: rmsNormEps, attentionBias: attentionBias,
                       queryPreAttnScalar: queryPreAttnScalar,
                       window: layerTypes[i] == "sliding_attention" ? slidingWindow : nil, qkNorm: true,
                       attnSoftcap: Float(attnLogitSoftcapping ?? 0))
    }
}



public final class Gemma3Model: Module, CausalLM {
    public let config: Gemma3Config
    let model: GemmaBody
    let lmHead: Linear?
    let ropeFull, ropeSliding: RotaryEmbedding

    public init(config c: Gemma3Config, on be: Backend) throws {
        config = c
        model = try GemmaBody(vocabSize: c.vocabSize, layers: (0..<c.numLayers).map(c.layerSpec), on: be)
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
    public var hfConfig: [String: Any] { config.hf }
    /// PEFT's default for gemma3_text.
    public var peftDefaultLoRATargets: [String] { ["q_proj", "v_proj"] }
    public func memoryEstimate(quantization: QuantizationConfig?, lora: LoRAConfig?, batch: Int, sequence: Int,
                               checkpointing: Bool, optimizerShards: Int) -> MemoryEstimate? { nil }

    /// Both RoPEs for a forward whose longest position is `maxPosition`.
    private func ropes(maxPosition: Int) throws -> (full: LayerRope, sliding: LayerRope) {
        (LayerRope(invFreq: try ropeFull.invFreq(maxPosition: maxPosition), attentionFactor: ropeFull.attentionFactor),
         LayerRope(invFreq: try ropeSliding.invFreq(maxPosition: maxPosition), attentionFactor: ropeSliding.attentionFactor))
    }

    public func hiddenStates(_ input: ModelInput, checkpointing: Bool) throws -> Tensor {
        let needsLength = ropeFull.parameters.dependsOnLength || ropeSliding.parameters.dependsOnLength
        let r = try ropes(maxPosition: needsLength ? Int(try input.positions.ints().max() ?? 0) : 0)
        return try model.hiddenStates(input, rope: { self.model.layers[$0].selfAttn.window == nil ? r.full : r.sliding },
                                      checkpointing: checkpointing)
    }

    public func makeCache(capacity: Int) throws -> KVCache {
        try KVCache(layers: config.numLayers, capacity: capacity, kvDim: config.numKVHeads * config.headDim,
                    on: ropeFull.invFreq.backend)
    }

    public func decode(_ ids: [Int32], cache: KVCache) throws -> [Float] {
        try cache.checkRoom(for: ids.count)
        return try Autograd.withNoGrad {
            let r = try ropes(maxPosition: cache.count + ids.count - 1)
            let last = try model.decode(ids, cache: cache) { self.model.layers[$0].selfAttn.window == nil ? r.full : r.sliding }
            return try softcappedLogits(last).floats()
        }
    }
}
