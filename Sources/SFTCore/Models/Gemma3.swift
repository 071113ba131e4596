// Gemma 3, text part (Gemma Team 2025), as HF's modeling_gemma3.py (`gemma3_text`,
// Gemma3ForCausalLM): embeddings scaled by √C; pre-norm decoder layers with four (1 + w)
// RMSNorms — input → GQA attention with per-head (1 + w) RMSNorm of q and k, RoPE, softmax scale
// query_pre_attn_scalar^-½ → post-attention norm → residual; pre-feedforward norm → GeGLU MLP
// (gelu_pytorch_tanh(gate) · up) → post-feedforward norm → residual; final (1 + w) RMSNorm; LM
// head tied to the embedding. Layers alternate sliding-window ("sliding_attention", local RoPE
// θ) and global ("full_attention", global RoPE θ and scaling) attention as `layer_types` says.
//
// Shapes: N = B·T rows, C hidden, H heads, KV kv heads, D head dim, F intermediate, V vocab.

import Foundation
import SFTKernels

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
        for key in [CodingKeys.attnLogitSoftcapping, .finalLogitSoftcapping] {
            if let v = try c.decodeIfPresent(Double.self, forKey: key) {
                throw SFTError.config(field: key.rawValue, message: "\(v): logit softcapping is not implemented for gemma3_text")
            }
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

    public init(hf c: [String: JSONValue]) throws {
        self = try HFConfig.decode(Gemma3Config.self, from: c, family: "gemma3_text", understood: CodingKeys.allCases.map(\.rawValue))
    }

    public var hf: [String: JSONValue] { hfValues.mapValues(JSONValue.init(foundation:)) }

    var hfValues: [String: Any] {
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
        return c
    }
}

/// Gemma's RMSNorm: x / rms(x) · (1 + w), w stored as in the checkpoint (zero-centred).
final class GemmaRMSNorm: Module {
    let weight: Parameter
    let eps: Float
    private let one: Tensor

    init(dim: Int, eps: Float, on be: Backend) throws {
        weight = Parameter(try Tensor.zeros([dim], on: be))
        one = try Tensor([Float](repeating: 1, count: dim), shape: [dim], on: be)
        self.eps = eps
    }
    override var localParameters: [(String, Parameter)] { [("weight", weight)] }
    func callAsFunction(_ x: Tensor) throws -> Tensor {
        try Ops.rmsNorm(x, weight: try Ops.add(weight.value, one), eps: eps)
    }
}

final class Gemma3Attention: Module {
    let qProj, kProj, vProj, oProj: Linear
    let qNorm, kNorm: GemmaRMSNorm
    let H: Int, KV: Int, D: Int
    let window: Int?
    let sliding: Bool
    let softmaxScale: Float

    init(_ c: Gemma3Config, layer: Int, on be: Backend) throws {
        H = c.numHeads; KV = c.numKVHeads; D = c.headDim
        sliding = c.layerTypes[layer] == "sliding_attention"
        window = sliding ? c.slidingWindow : nil
        softmaxScale = Float(1 / c.queryPreAttnScalar.squareRoot())
        qProj = try Linear(inFeatures: c.hiddenSize, outFeatures: H * D, bias: c.attentionBias, on: be)
        kProj = try Linear(inFeatures: c.hiddenSize, outFeatures: KV * D, bias: c.attentionBias, on: be)
        vProj = try Linear(inFeatures: c.hiddenSize, outFeatures: KV * D, bias: c.attentionBias, on: be)
        oProj = try Linear(inFeatures: H * D, outFeatures: c.hiddenSize, bias: c.attentionBias, on: be)
        qNorm = try GemmaRMSNorm(dim: D, eps: c.rmsNormEps, on: be)
        kNorm = try GemmaRMSNorm(dim: D, eps: c.rmsNormEps, on: be)
    }

    override var children: [(String, Module)] {
        [("q_proj", qProj), ("k_proj", kProj), ("v_proj", vProj), ("o_proj", oProj), ("q_norm", qNorm), ("k_norm", kNorm)]
    }

    private func qkv(_ x: Tensor, positions: Tensor, rope: LayerRope) throws -> (Tensor, Tensor, Tensor) {
        let N = x.shape[0]
        var q = try qNorm(try qProj(x).reshaped([N * H, D])).reshaped([N, H * D])   // (N·H, D) rows normed
        var k = try kNorm(try kProj(x).reshaped([N * KV, D])).reshaped([N, KV * D])
        let v = try vProj(x)                                                           // (N, KV·D)
        q = try Ops.rope(q, positions: positions, invFreq: rope.invFreq, heads: H)
        k = try Ops.rope(k, positions: positions, invFreq: rope.invFreq, heads: KV)
        return (q, k, v)
    }

    func callAsFunction(_ x: Tensor, _ input: ModelInput, rope: LayerRope) throws -> Tensor {
        let (q, k, v) = try qkv(x, positions: input.positions, rope: rope)
        let o = try Ops.attention(q: q, k: k, v: v, docIds: input.docIds, alibi: nil,
                                  shape: AttentionShape(B: input.B, T: input.T, H: H, KV: KV, D: D,
                                                        scale: rope.scale(softmaxScale), window: window))
        return try oProj(o)
    }

    func decode(_ x: Tensor, positions: Tensor, rope: LayerRope, cache: KVCache, layer: Int) throws -> Tensor {
        let (q, k, v) = try qkv(x, positions: positions, rope: rope)
        let o = try cache.attend(q: q, k: k, v: v, layer: layer, H: H, KV: KV, D: D, scale: rope.scale(softmaxScale),
                                 window: window)
        return try oProj(o)
    }
}

final class Gemma3MLP: Module {
    let gateProj, upProj, downProj: Linear

    init(_ c: Gemma3Config, on be: Backend) throws {
        gateProj = try Linear(inFeatures: c.hiddenSize, outFeatures: c.intermediateSize, bias: false, on: be)
        upProj = try Linear(inFeatures: c.hiddenSize, outFeatures: c.intermediateSize, bias: false, on: be)
        downProj = try Linear(inFeatures: c.intermediateSize, outFeatures: c.hiddenSize, bias: false, on: be)
    }
    override var children: [(String, Module)] { [("gate_proj", gateProj), ("up_proj", upProj), ("down_proj", downProj)] }

    func callAsFunction(_ x: Tensor) throws -> Tensor {
        try downProj(try Ops.gelu(try gateProj(x), up: try upProj(x), approximate: true))   // (N, F) → (N, C)
    }
}

final class Gemma3DecoderLayer: Module {
    let selfAttn: Gemma3Attention
    let mlp: Gemma3MLP
    let inputLayernorm, postAttentionLayernorm, preFeedforwardLayernorm, postFeedforwardLayernorm: GemmaRMSNorm

    init(_ c: Gemma3Config, layer: Int, on be: Backend) throws {
        selfAttn = try Gemma3Attention(c, layer: layer, on: be)
        mlp = try Gemma3MLP(c, on: be)
        inputLayernorm = try GemmaRMSNorm(dim: c.hiddenSize, eps: c.rmsNormEps, on: be)
        postAttentionLayernorm = try GemmaRMSNorm(dim: c.hiddenSize, eps: c.rmsNormEps, on: be)
        preFeedforwardLayernorm = try GemmaRMSNorm(dim: c.hiddenSize, eps: c.rmsNormEps, on: be)
        postFeedforwardLayernorm = try GemmaRMSNorm(dim: c.hiddenSize, eps: c.rmsNormEps, on: be)
    }

    override var children: [(String, Module)] {
        [("self_attn", selfAttn), ("mlp", mlp), ("input_layernorm", inputLayernorm),
         ("post_attention_layernorm", postAttentionLayernorm), ("pre_feedforward_layernorm", preFeedforwardLayernorm),
         ("post_feedforward_layernorm", postFeedforwardLayernorm)]
    }

    func callAsFunction(_ x: Tensor, attention: (Tensor) throws -> Tensor) throws -> Tensor {
        let h = try Ops.add(x, try postAttentionLayernorm(try attention(try inputLayernorm(x))))
        return try Ops.add(h, try postFeedforwardLayernorm(try mlp(try preFeedforwardLayernorm(h))))
    }
}

final class Gemma3Body: Module {
    let embedTokens: Embedding
    let layers: [Gemma3DecoderLayer]
    let norm: GemmaRMSNorm

    init(_ c: Gemma3Config, on be: Backend) throws {
        embedTokens = try Embedding(vocab: c.vocabSize, dim: c.hiddenSize, on: be)
        layers = try (0..<c.numLayers).map { try Gemma3DecoderLayer(c, layer: $0, on: be) }
        norm = try GemmaRMSNorm(dim: c.hiddenSize, eps: c.rmsNormEps, on: be)
    }

    override var children: [(String, Module)] {
        [("embed_tokens", embedTokens)] + layers.enumerated().map { ("layers.\($0.offset)", $0.element) } + [("norm", norm)]
    }
}

public final class Gemma3Model: Module, CausalLM {
    public let config: Gemma3Config
    let model: Gemma3Body
    let lmHead: Linear?
    let ropeFull, ropeSliding: RotaryEmbedding
    /// √C in f32, as transformers scales the embedding.
    let embedScale: Float

    public init(config c: Gemma3Config, on be: Backend) throws {
        config = c
        model = try Gemma3Body(c, on: be)
        lmHead = c.tieWordEmbeddings ? nil : try Linear(inFeatures: c.hiddenSize, outFeatures: c.vocabSize, bias: false, on: be)
        ropeFull = try RotaryEmbedding(c.ropeFull, headDim: c.headDim, maxPositionEmbeddings: c.maxPositionEmbeddings, on: be)
        ropeSliding = try RotaryEmbedding(c.ropeSliding, headDim: c.headDim, maxPositionEmbeddings: c.maxPositionEmbeddings, on: be)
        embedScale = Float(Double(c.hiddenSize).squareRoot())
    }

    override public var children: [(String, Module)] {
        var c: [(String, Module)] = [("model", model)]
        if let lmHead { c.append(("lm_head", lmHead)) }
        return c
    }

    public var modelType: String { "gemma3_text" }
    public var vocabSize: Int { config.vocabSize }
    public var hiddenSize: Int { config.hiddenSize }
    public var numLayers: Int { config.numLayers }
    public var tiedEmbeddings: Bool { lmHead == nil }
    public var lmHeadWeight: Parameter { lmHead?.weight ?? model.embedTokens.weight }
    public var hfConfig: [String: JSONValue] { config.hf }
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
        var x = try Ops.scale(try model.embedTokens(input.ids, rowLength: input.T), embedScale)          // (N, C)
        for layer in model.layers {
            let rope = layer.selfAttn.sliding ? r.sliding : r.full
            let body: ([Tensor]) throws -> Tensor = { xs in
                try layer(xs[0]) { try layer.selfAttn($0, input, rope: rope) }
            }
            x = checkpointing ? try Autograd.checkpoint([x], body) : try body([x])
        }
        return try model.norm(x)
    }

    public func makeCache(capacity: Int) throws -> KVCache {
        try KVCache(layers: config.numLayers, capacity: capacity, kvDim: config.numKVHeads * config.headDim,
                    on: ropeFull.invFreq.backend)
    }

    public func decode(_ ids: [Int32], cache: KVCache) throws -> [Float] {
        try cache.checkRoom(for: ids.count)
        return try Autograd.withNoGrad {
            let be = ropeFull.invFreq.backend
            let positions = try Tensor(ints: (0..<ids.count).map { Int32(cache.count + $0) }, shape: [ids.count], on: be)
            let r = try ropes(maxPosition: cache.count + ids.count - 1)
            var x = try Ops.scale(try model.embedTokens(try Tensor(ints: ids, shape: [ids.count], on: be)), embedScale)
            for (i, layer) in model.layers.enumerated() {
                let rope = layer.selfAttn.sliding ? r.sliding : r.full
                x = try layer(x) { try layer.selfAttn.decode($0, positions: positions, rope: rope, cache: cache, layer: i) }
            }
            cache.count += ids.count
            let last = try model.norm(try x.rows(ids.count - 1, 1))
            return try Ops.linear(last, lmHeadWeight.value).floats()
        }
    }
}
