// Phi-3 / Phi-3.5 (Abdin et al. 2024), as HF's modeling_phi3.py: the Llama block with fused
// projections — `qkv_proj` (q, k, v stacked by rows) and `gate_up_proj` (gate, up) — LongRoPE
// (`longrope`: short factors up to the pretraining length, long ones beyond, and its attention
// factor) and a sliding window. Pre-norm RMSNorm layers → GQA attention → residual → RMSNorm →
// SwiGLU MLP → residual; final RMSNorm; untied LM head.
//
// Shapes: N = B·T rows, C hidden, H heads, KV kv heads, D head dim, F intermediate, V vocab.

import Foundation
import SFTKernels

public struct Phi3Config: Equatable, Decodable {
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numLayers: Int
    public var numHeads: Int
    public var numKVHeads: Int
    public var headDim: Int
    public var vocabSize: Int
    public var rmsNormEps: Float
    public var maxPositionEmbeddings: Int
    public var originalMaxPositionEmbeddings: Int?
    public var tieWordEmbeddings: Bool
    public var slidingWindow: Int?
    public var rope: RopeParameters
    public var bosTokenId: Int?
    public var eosTokenId: Int?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size", numLayers = "num_hidden_layers"
        case numHeads = "num_attention_heads", numKVHeads = "num_key_value_heads", headDim = "head_dim"
        case vocabSize = "vocab_size", rmsNormEps = "rms_norm_eps", maxPositionEmbeddings = "max_position_embeddings"
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings", slidingWindow = "sliding_window", hiddenAct = "hidden_act"
        case attentionDropout = "attention_dropout", residPdrop = "resid_pdrop", embdPdrop = "embd_pdrop"
        case partialRotaryFactor = "partial_rotary_factor"
        case ropeParameters = "rope_parameters", ropeTheta = "rope_theta", ropeScaling = "rope_scaling"
        case modelType = "model_type", bosTokenId = "bos_token_id", eosTokenId = "eos_token_id"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        var all = try [String: JSONValue](from: decoder)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        numLayers = try c.decode(Int.self, forKey: .numLayers)
        numHeads = try c.decode(Int.self, forKey: .numHeads)
        numKVHeads = try c.decodeIfPresent(Int.self, forKey: .numKVHeads) ?? numHeads
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim) ?? hiddenSize / max(1, numHeads)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        rmsNormEps = Float(try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5)
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 4096
        originalMaxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .originalMaxPositionEmbeddings)
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow)
        bosTokenId = try? c.decodeIfPresent(Int.self, forKey: .bosTokenId)
        eosTokenId = try? c.decodeIfPresent(Int.self, forKey: .eosTokenId)
        try HFConfig.requireActivation(try c.decodeIfPresent(String.self, forKey: .hiddenAct), "hidden_act", ["silu"])
        for key in [CodingKeys.attentionDropout, .residPdrop, .embdPdrop] {
            try HFConfig.requireZero(try c.decodeIfPresent(Double.self, forKey: key), key.rawValue)
        }
        if let p = try c.decodeIfPresent(Double.self, forKey: .partialRotaryFactor), p != 1 {
            throw SFTError.config(field: "partial_rotary_factor", message: "\(p): partial rotary embeddings are not implemented (only 1.0)")
        }
        all.removeValue(forKey: "partial_rotary_factor")
        rope = try RopeParameters.fromHF(all)
        if let w = slidingWindow, w <= 0 { throw SFTError.config(field: "sliding_window", message: "\(w) must be positive") }
        guard hiddenSize > 0, numLayers > 0, numHeads > 0, numKVHeads > 0, numHeads % numKVHeads == 0, vocabSize > 0,
              headDim % 2 == 0 else {
            throw SFTError.config(field: "num_key_value_heads", message: "inconsistent shape: hidden \(hiddenSize), heads \(numHeads), kv heads \(numKVHeads), head_dim \(headDim)")
        }
    }

    public init(hf c: [String: JSONValue]) throws {
        self = try HFConfig.decode(Phi3Config.self, from: c, family: "phi3", understood: CodingKeys.allCases.map(\.rawValue))
    }

    public var hf: [String: JSONValue] { hfValues.mapValues(JSONValue.init(foundation:)) }

    var hfValues: [String: Any] {
        var c: [String: Any] = [
            "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": hiddenSize,
            "intermediate_size": intermediateSize, "num_hidden_layers": numLayers, "num_attention_heads": numHeads,
            "num_key_value_heads": numKVHeads, "vocab_size": vocabSize, "rms_norm_eps": Double(rmsNormEps),
            "max_position_embeddings": maxPositionEmbeddings, "tie_word_embeddings": tieWordEmbeddings,
            "hidden_act": "silu", "rope_theta": rope.theta, "torch_dtype": "float32",
        ]
        if let originalMaxPositionEmbeddings { c["original_max_position_embeddings"] = originalMaxPositionEmbeddings }
        if let slidingWindow { c["sliding_window"] = slidingWindow }
        if let s = rope.scaling, let d = try? JSONEncoder().encode(s), let o = try? JSONSerialization.jsonObject(with: d) {
            c["rope_scaling"] = o
        }
        if let bosTokenId { c["bos_token_id"] = bosTokenId }
        if let eosTokenId { c["eos_token_id"] = eosTokenId }
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

final class Phi3Body: Module {
    let embedTokens: Embedding
    let layers: [Phi3DecoderLayer]
    let norm: RMSNorm

    init(_ c: Phi3Config, on be: Backend) throws {
        embedTokens = try Embedding(vocab: c.vocabSize, dim: c.hiddenSize, on: be)
        layers = try (0..<c.numLayers).map { _ in try Phi3DecoderLayer(c, on: be) }
        norm = try RMSNorm(dim: c.hiddenSize, eps: c.rmsNormEps, on: be)
    }

    override var children: [(String, Module)] {
        [("embed_tokens", embedTokens)] + layers.enumerated().map { ("layers.\($0.offset)", $0.element) } + [("norm", norm)]
    }
}

public final class Phi3Model: Module, CausalLM {
    public let config: Phi3Config
    let model: Phi3Body
    let lmHead: Linear?
    let rotary: RotaryEmbedding

    public init(config c: Phi3Config, on be: Backend) throws {
        config = c
        model = try Phi3Body(c, on: be)
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
    /// PEFT's default for phi3: the fused attention projection.
    public var peftDefaultLoRATargets: [String] { ["qkv_proj"] }
    public func memoryEstimate(quantization: QuantizationConfig?, lora: LoRAConfig?, batch: Int, sequence: Int,
                               checkpointing: Bool, optimizerShards: Int) -> MemoryEstimate? { nil }

    public func hiddenStates(_ input: ModelInput, checkpointing: Bool) throws -> Tensor {
        let rope = LayerRope(invFreq: try rotary.invFreq(for: input), attentionFactor: rotary.attentionFactor)
        var x = try model.embedTokens(input.ids, rowLength: input.T)                                   // (N, C)
        for layer in model.layers {
            let body: ([Tensor]) throws -> Tensor = { xs in try layer(xs[0]) { try layer.selfAttn($0, input, rope: rope) } }
            x = checkpointing ? try Autograd.checkpoint([x], body) : try body([x])
        }
        return try model.norm(x)
    }

    public func makeCache(capacity: Int) throws -> KVCache {
        try KVCache(layers: config.numLayers, capacity: capacity, kvDim: config.numKVHeads * config.headDim,
                    on: rotary.invFreq.backend)
    }

    public func decode(_ ids: [Int32], cache: KVCache) throws -> [Float] {
        try cache.checkRoom(for: ids.count)
        return try Autograd.withNoGrad {
            let be = rotary.invFreq.backend
            let positions = try Tensor(ints: (0..<ids.count).map { Int32(cache.count + $0) }, shape: [ids.count], on: be)
            let rope = LayerRope(invFreq: try rotary.invFreq(maxPosition: cache.count + ids.count - 1),
                                 attentionFactor: rotary.attentionFactor)
            var x = try model.embedTokens(try Tensor(ints: ids, shape: [ids.count], on: be))
            for (i, layer) in model.layers.enumerated() {
                x = try layer(x) { try layer.selfAttn.decode($0, positions: positions, rope: rope, cache: cache, layer: i) }
            }
            cache.count += ids.count
            let last = try model.norm(try x.rows(ids.count - 1, 1))
            return try Ops.linear(last, lmHeadWeight.value).floats()
        }
    }
}
