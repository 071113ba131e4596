// Llama (Touvron et al. 2023) and the family that shares its block: Llama 1/2/3/3.1, Mistral,
// SmolLM, Qwen2 (q/k/v biases). Mirrors HF's modeling_llama.py: pre-norm decoder layers of
// RMSNorm → GQA self-attention with rotate-half RoPE → residual → RMSNorm → SwiGLU MLP →
// residual; final RMSNorm; LM head (tied to the embedding when the config says so).
//
// Shapes: B batch, T tokens, N = B·T rows, C hidden, H heads, KV kv heads, D head dim,
// F intermediate, V vocab. Activations are (N, C) row-major; q is (N, H·D) = (B, T, H, D).

import Foundation

public struct LlamaConfig: Equatable {
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

    public init(hiddenSize: Int, intermediateSize: Int, numLayers: Int, numHeads: Int, numKVHeads: Int,
                headDim: Int? = nil, vocabSize: Int, rmsNormEps: Float = 1e-5, ropeTheta: Double = 10000,
                ropeScaling: RopeScaling? = nil, tieWordEmbeddings: Bool = false, attentionBias: Bool = false,
                mlpBias: Bool = false, maxPositionEmbeddings: Int = 2048, modelType: String = "llama",
                bosTokenId: Int? = nil, eosTokenId: Int? = nil) {
        self.hiddenSize = hiddenSize; self.intermediateSize = intermediateSize; self.numLayers = numLayers
        self.numHeads = numHeads; self.numKVHeads = numKVHeads; self.headDim = headDim ?? hiddenSize / numHeads
        self.vocabSize = vocabSize; self.rmsNormEps = rmsNormEps; self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling; self.tieWordEmbeddings = tieWordEmbeddings
        self.attentionBias = attentionBias; self.mlpBias = mlpBias
        self.maxPositionEmbeddings = maxPositionEmbeddings; self.modelType = modelType
        self.bosTokenId = bosTokenId; self.eosTokenId = eosTokenId
    }

    /// From an HF config.json object (snake_case keys).
    public init(hf c: [String: Any], qkvBiasDefault: Bool = false) throws {
        func int(_ k: String) throws -> Int {
            guard let v = c[k] as? Int ?? (c[k] as? Double).map(Int.init) else {
                throw SFTError.config(field: k, message: "missing or not an integer")
            }
            return v
        }
        let heads = try int("num_attention_heads")
        var scaling: RopeScaling? = nil
        if let rs = c["rope_scaling"] as? [String: Any] {
            let data = try JSONSerialization.data(withJSONObject: rs)
            scaling = try JSONDecoder().decode(RopeScaling.self, from: data)
        }
        try self.init(hiddenSize: int("hidden_size"), intermediateSize: int("intermediate_size"),
                      numLayers: int("num_hidden_layers"), numHeads: heads,
                      numKVHeads: (c["num_key_value_heads"] as? Int) ?? heads,
                      headDim: c["head_dim"] as? Int, vocabSize: int("vocab_size"),
                      rmsNormEps: Float((c["rms_norm_eps"] as? Double) ?? 1e-6),
                      ropeTheta: (c["rope_theta"] as? Double) ?? 10000, ropeScaling: scaling,
                      tieWordEmbeddings: (c["tie_word_embeddings"] as? Bool) ?? false,
                      attentionBias: (c["attention_bias"] as? Bool) ?? qkvBiasDefault,
                      mlpBias: (c["mlp_bias"] as? Bool) ?? false,
                      maxPositionEmbeddings: (c["max_position_embeddings"] as? Int) ?? 2048,
                      modelType: (c["model_type"] as? String) ?? "llama",
                      bosTokenId: c["bos_token_id"] as? Int, eosTokenId: c["eos_token_id"] as? Int)
        guard hiddenSize > 0, numLayers > 0, numHeads > 0, numKVHeads > 0, numHeads % numKVHeads == 0,
              vocabSize > 0, headDim % 2 == 0 else {
            throw SFTError.config(field: "num_key_value_heads", message: "inconsistent shape: hidden \(hiddenSize), heads \(numHeads), kv heads \(numKVHeads), head_dim \(headDim)")
        }
    }

    public var hf: [String: Any] {
        var c: [String: Any] = [
            "architectures": [modelType == "llama" ? "LlamaForCausalLM" : modelType == "mistral" ? "MistralForCausalLM" : "Qwen2ForCausalLM"],
            "model_type": modelType, "hidden_size": hiddenSize, "intermediate_size": intermediateSize,
            "num_hidden_layers": numLayers, "num_attention_heads": numHeads, "num_key_value_heads": numKVHeads,
            "head_dim": headDim, "vocab_size": vocabSize, "rms_norm_eps": Double(rmsNormEps), "rope_theta": ropeTheta,
            "tie_word_embeddings": tieWordEmbeddings, "attention_bias": attentionBias, "mlp_bias": mlpBias,
            "max_position_embeddings": maxPositionEmbeddings, "hidden_act": "silu", "torch_dtype": "float32",
        ]
        if let bosTokenId { c["bos_token_id"] = bosTokenId }
        if let eosTokenId { c["eos_token_id"] = eosTokenId }
        if let s = ropeScaling, let d = try? JSONEncoder().encode(s),
           let o = try? JSONSerialization.jsonObject(with: d) { c["rope_scaling"] = o }
        return c
    }
}

final class LlamaAttention: Module {
    let qProj, kProj, vProj, oProj: Linear
    let H: Int, KV: Int, D: Int

    init(_ c: LlamaConfig, on be: Backend) throws {
        H = c.numHeads; KV = c.numKVHeads; D = c.headDim
        qProj = try Linear(inFeatures: c.hiddenSize, outFeatures: H * D, bias: c.attentionBias, on: be)
        kProj = try Linear(inFeatures: c.hiddenSize, outFeatures: KV * D, bias: c.attentionBias, on: be)
        vProj = try Linear(inFeatures: c.hiddenSize, outFeatures: KV * D, bias: c.attentionBias, on: be)
        oProj = try Linear(inFeatures: H * D, outFeatures: c.hiddenSize, bias: false, on: be)
    }

    override var children: [(String, Module)] { [("q_proj", qProj), ("k_proj", kProj), ("v_proj", vProj), ("o_proj", oProj)] }

    func callAsFunction(_ x: Tensor, _ input: ModelInput, invFreq: Tensor) throws -> Tensor {
        var q = try qProj(x)                                                    // (N, H·D)
        var k = try kProj(x)                                                    // (N, KV·D)
        let v = try vProj(x)                                                    // (N, KV·D)
        q = try Ops.rope(q, positions: input.positions, invFreq: invFreq, heads: H)
        k = try Ops.rope(k, positions: input.positions, invFreq: invFreq, heads: KV)
        let o = try Ops.attention(q: q, k: k, v: v, docIds: input.docIds, alibi: nil,
                                  shape: AttentionShape(B: input.B, T: input.T, H: H, KV: KV, D: D))  // (N, H·D)
        return try oProj(o)
    }

    /// Cached step: appends k/v of `x`'s tokens to `cache` layer `layer`.
    func decode(_ x: Tensor, positions: Tensor, invFreq: Tensor, cache: KVCache, layer: Int) throws -> Tensor {
        let Tq = x.shape[0], start = cache.count, be = x.backend
        var q = try qProj(x), k = try kProj(x)
        let v = try vProj(x)
        q = try Ops.rope(q, positions: positions, invFreq: invFreq, heads: H)
        k = try Ops.rope(k, positions: positions, invFreq: invFreq, heads: KV)
        let rowBytes = KV * D * 4
        try be.copy(k.storage, to: cache.keys[layer].storage.advanced(byBytes: start * rowBytes), bytes: Tq * rowBytes)
        try be.copy(v.storage, to: cache.values[layer].storage.advanced(byBytes: start * rowBytes), bytes: Tq * rowBytes)
        let o = try Tensor(empty: [Tq, H * D], on: be)
        try be.attentionCached(q: q.storage, kCache: cache.keys[layer].storage, vCache: cache.values[layer].storage,
                               o: o.storage, Tq: Tq, S: start + Tq, H: H, KV: KV, D: D, scale: 1 / Float(D).squareRoot())
        return try oProj(o)
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

    init(_ c: LlamaConfig, on be: Backend) throws {
        selfAttn = try LlamaAttention(c, on: be)
        mlp = try LlamaMLP(c, on: be)
        inputLayernorm = try RMSNorm(dim: c.hiddenSize, eps: c.rmsNormEps, on: be)
        postAttentionLayernorm = try RMSNorm(dim: c.hiddenSize, eps: c.rmsNormEps, on: be)
    }

    override var children: [(String, Module)] {
        [("self_attn", selfAttn), ("mlp", mlp), ("input_layernorm", inputLayernorm),
         ("post_attention_layernorm", postAttentionLayernorm)]
    }

    func callAsFunction(_ x: Tensor, _ input: ModelInput, invFreq: Tensor) throws -> Tensor {
        let h = try Ops.add(x, try selfAttn(try inputLayernorm(x), input, invFreq: invFreq))
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
                               o: s.o.storage, Tq: 1, S: p + 1, H: a.H, KV: a.KV, D: a.D, scale: 1 / Float(a.D).squareRoot())
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
        layers = try (0..<c.numLayers).map { _ in try LlamaDecoderLayer(c, on: be) }
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
    let invFreq: Tensor
    /// The LM head in GGUF block form for generation (the embedding's blocks when tied).
    public var packedLMHead: PackedMatrix?

    public init(config c: LlamaConfig, on be: Backend) throws {
        config = c
        model = try LlamaBody(c, on: be)
        lmHead = c.tieWordEmbeddings ? nil : try Linear(inFeatures: c.hiddenSize, outFeatures: c.vocabSize, bias: false, on: be)
        let inv = try Rope.inverseFrequencies(headDim: c.headDim, theta: c.ropeTheta, scaling: c.ropeScaling)
        invFreq = try Tensor(inv, shape: [inv.count], on: be)
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
    public var hfConfig: [String: Any] { config.hf }

    public func hiddenStates(_ input: ModelInput, checkpointing: Bool) throws -> Tensor {
        var x = try model.embedTokens(input.ids, rowLength: input.T)                                 // (N, C)
        for layer in model.layers {
            if checkpointing {
                x = try Autograd.checkpoint([x]) { [invFreq] in try layer($0[0], input, invFreq: invFreq) }
            } else {
                x = try layer(x, input, invFreq: invFreq)
            }
        }
        return try model.norm(x)
    }

    public func makeCache(capacity: Int) throws -> KVCache {
        try KVCache(layers: config.numLayers, capacity: capacity, kvDim: config.numKVHeads * config.headDim,
                    on: invFreq.backend)
    }

    public func decode(_ ids: [Int32], cache: KVCache) throws -> [Float] {
        guard !ids.isEmpty else { throw SFTError.shape(op: "decode", message: "no tokens to run") }
        guard cache.count + ids.count <= cache.capacity else {
            throw SFTError.shape(op: "decode", message: "KV cache full: \(cache.count) + \(ids.count) tokens > capacity \(cache.capacity)")
        }
        return try Autograd.withNoGrad {
            if ids.count == 1, let logits = try packedStep(ids[0], cache: cache) { return logits }
            let be = invFreq.backend
            let positions = try Tensor(ints: (0..<ids.count).map { Int32(cache.count + $0) }, shape: [ids.count], on: be)
            var x = try model.embedTokens(try Tensor(ints: ids, shape: [ids.count], on: be))
            for (i, layer) in model.layers.enumerated() {
                let a = try layer.selfAttn.decode(try layer.inputLayernorm(x), positions: positions, invFreq: invFreq,
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
        guard be.supports(.ggufBlocks) else { return nil }
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
