// MPT (MosaicML 2023; mpt-7b), as HF's modeling_mpt.py: no positional embedding but ALiBi
// (Press et al. 2022) slopes on the attention scores; pre-norm blocks of bias-free LayerNorm →
// multi-head attention over a fused `Wqkv` → residual → LayerNorm → GELU (exact) MLP of 4·C →
// residual; final LayerNorm; LM head tied to `wte`. Every Linear is bias-free, as transformers
// builds them whatever `no_bias` says. `learned_pos_emb`, `norm_type`, `embedding_fraction` and
// `attn_impl` do not change what transformers computes and are accepted; `clip_qkv` clamps the
// fused projection; settings transformers implements and sft does not (`qk_ln`, `prefix_lm`,
// `logit_scale`) are errors naming them.
//
// Shapes: N = B·T rows, C hidden (d_model), H heads, D = C / H, V vocab.

import Foundation
import SFTKernels

/// The config of MPT (`model_type` mpt) as read from an HF config.json (with its nested
/// `attn_config`) or a GGUF's `mpt.*` keys; settings sft does not implement (`qk_ln`,
/// `prefix_lm`, `logit_scale`, nonzero dropouts, `expansion_ratio` ≠ 4) are errors naming them.
public struct MPTConfig: Equatable, Decodable {
    /// C, the width of the residual stream (HF `d_model`).
    public var dModel: Int
    /// H, the number of attention heads (HF `n_heads`); D = C / H.
    public var nHeads: Int
    /// Number of blocks (HF `n_layers`).
    public var nLayers: Int
    /// V, the number of token ids (HF `vocab_size`).
    public var vocabSize: Int
    /// The pretraining context length (HF `max_seq_len`, default 2048).
    public var maxSeqLen: Int
    /// The epsilon of every LayerNorm (HF `layer_norm_epsilon`, default 1e-5).
    public var layerNormEpsilon: Float
    /// ALiBi's largest bias: with H a power of two, head h (1-based) gets slope 2^(−h·max/H)
    /// (other H: MPT's interleaving of the next power of two's slopes; HF
    /// `attn_config.alibi_bias_max`, default 8).
    public var alibiBiasMax: Double
    /// Scale of the attention scores (HF `attn_config.softmax_scale`); nil: D^-½.
    public var softmaxScale: Double?
    /// Clamp of the fused q/k/v projection to [−clip_qkv, clip_qkv].
    public var clipQKV: Double?
    /// Whether the LM head is `wte` (HF `tie_word_embeddings`, default true).
    public var tieWordEmbeddings: Bool
    /// HF `bos_token_id`, when the config names one (written back to a saved config.json;
    /// tokenization and generation use the tokenizer's).
    public var bosTokenId: Int?
    /// HF `eos_token_id`, when the config names a single one (written back to a saved
    /// config.json; tokenization and generation use the tokenizer's).
    public var eosTokenId: Int?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case dModel = "d_model", nHeads = "n_heads", nLayers = "n_layers", vocabSize = "vocab_size"
        case maxSeqLen = "max_seq_len", layerNormEpsilon = "layer_norm_epsilon", expansionRatio = "expansion_ratio"
        case attnConfig = "attn_config", embPdrop = "emb_pdrop", residPdrop = "resid_pdrop", logitScale = "logit_scale"
        case learnedPosEmb = "learned_pos_emb", noBias = "no_bias", normType = "norm_type"
        case embeddingFraction = "embedding_fraction", initDevice = "init_device", initConfig = "init_config", verbose
        case tieWordEmbeddings = "tie_word_embeddings", modelType = "model_type", bosTokenId = "bos_token_id"
        case eosTokenId = "eos_token_id"
    }

    /// Keys of `attn_config` that sft reads.
    static let attnKeys: Set<String> = ["alibi", "alibi_bias_max", "attn_pdrop", "attn_type", "clip_qkv", "prefix_lm",
                                        "qk_ln", "softmax_scale", "attn_impl", "attn_uses_sequence_id"]

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        dModel = try c.decode(Int.self, forKey: .dModel)
        nHeads = try c.decode(Int.self, forKey: .nHeads)
        nLayers = try c.decode(Int.self, forKey: .nLayers)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        maxSeqLen = try c.decodeIfPresent(Int.self, forKey: .maxSeqLen) ?? 2048
        layerNormEpsilon = Float(try c.decodeIfPresent(Double.self, forKey: .layerNormEpsilon) ?? 1e-5)
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? true
        bosTokenId = try? c.decodeIfPresent(Int.self, forKey: .bosTokenId)
        eosTokenId = try? c.decodeIfPresent(Int.self, forKey: .eosTokenId)
        if let r = try c.decodeIfPresent(Int.self, forKey: .expansionRatio), r != 4 {
            throw SFTError.config(field: "expansion_ratio", message: "\(r): transformers' MPT has a 4·d_model MLP")
        }
        try HFConfig.requireZero(try c.decodeIfPresent(Double.self, forKey: .embPdrop), "emb_pdrop")
        try HFConfig.requireZero(try c.decodeIfPresent(Double.self, forKey: .residPdrop), "resid_pdrop")
        if let s = try c.decodeIfPresent(Double.self, forKey: .logitScale) {
            throw SFTError.config(field: "logit_scale", message: "\(s): logit scaling is not implemented")
        }
        let attn = try c.decodeIfPresent([String: JSONValue].self, forKey: .attnConfig) ?? [:]
        for key in attn.keys.sorted() where !MPTConfig.attnKeys.contains(key) && !HFConfig.harmless.contains(key) {
            throw SFTError.config(field: "attn_config.\(key)", message: "not implemented for mpt")
        }
        if case .bool(false)? = attn["alibi"] {
            throw SFTError.config(field: "attn_config.alibi", message: "false (learned positions) is not implemented: transformers' MPT always uses ALiBi")
        }
        if let t = attn["attn_type"]?.stringValue, t != "multihead_attention" {
            throw SFTError.config(field: "attn_config.attn_type", message: "'\(t)' is not implemented (multihead_attention)")
        }
        try HFConfig.requireZero(attn["attn_pdrop"]?.doubleValue, "attn_config.attn_pdrop")
        clipQKV = attn["clip_qkv"]?.doubleValue
        if let c = clipQKV, c <= 0 { throw SFTError.config(field: "attn_config.clip_qkv", message: "\(c) must be positive") }
        for key in ["qk_ln", "prefix_lm"] {
            guard let v = attn[key], !v.isNull else { continue }
            if case .bool(false) = v { continue }
            throw SFTError.config(field: "attn_config.\(key)", message: "\(v.serialized()) is not implemented")
        }
        alibiBiasMax = attn["alibi_bias_max"]?.doubleValue ?? 8
        softmaxScale = attn["softmax_scale"]?.doubleValue
        guard dModel > 0, nLayers > 0, nHeads > 0, dModel % nHeads == 0, vocabSize > 0 else {
            throw SFTError.config(field: "n_heads", message: "d_model \(dModel) does not split into \(nHeads) heads")
        }
    }

    /// From an HF config.json object. Keys that are neither read nor harmless
    /// (`HFConfig.harmless`) are errors naming them.
    /// - Parameter c: The config.json contents.
    /// - Throws: `SFTError.config` naming the first key that is missing, inconsistent or not implemented.
    public init(hf c: [String: JSONValue]) throws {
        self = try HFConfig.decode(MPTConfig.self, from: c, family: "mpt", understood: CodingKeys.allCases.map(\.rawValue))
    }

    /// The config as an HF config.json object (what a merged model's config.json contains).
    public var hf: [String: JSONValue] {
        let attn: JSONValue = [
            "alibi": true, "alibi_bias_max": .double(alibiBiasMax), "attn_pdrop": 0, "attn_type": "multihead_attention",
            "clip_qkv": clipQKV.map(JSONValue.double) ?? .null, "prefix_lm": false, "qk_ln": false,
            "softmax_scale": softmaxScale.map(JSONValue.double) ?? .null,
        ]
        var c: [String: JSONValue] = [
            "architectures": ["MptForCausalLM"], "model_type": "mpt", "d_model": .int(dModel), "n_heads": .int(nHeads),
            "n_layers": .int(nLayers), "vocab_size": .int(vocabSize), "max_seq_len": .int(maxSeqLen), "expansion_ratio": 4,
            "layer_norm_epsilon": .double(Double(layerNormEpsilon)), "no_bias": true, "attn_config": attn,
            "tie_word_embeddings": .bool(tieWordEmbeddings), "torch_dtype": "float32",
        ]
        c["bos_token_id"] = bosTokenId.map(JSONValue.int)
        c["eos_token_id"] = eosTokenId.map(JSONValue.int)
        return c
    }

    /// ALiBi slopes as MPT computes them: 2^(−alibi_bias_max·i/H') for i = 1...H' with H' the
    /// next power of two, then (when H' > H) the odd-indexed ones before the even ones.
    public var alibiSlopes: [Float] {
        let p = 1 << Int(Foundation.ceil(Foundation.log2(Double(nHeads))))
        let slopes = (1...p).map { Float(1 / Foundation.pow(2, Double($0) * alibiBiasMax / Double(p))) }
        guard p != nHeads else { return slopes }
        let odd = stride(from: 1, to: p, by: 2).map { slopes[$0] }, even = stride(from: 0, to: p, by: 2).map { slopes[$0] }
        return Array((odd + even).prefix(nHeads))
    }
}

final class MPTAttention: Module {
    let wqkv, outProj: Linear
    let H: Int, D: Int
    let scale: Float
    let clip: Float?

    init(_ c: MPTConfig, on be: Backend) throws {
        H = c.nHeads; D = c.dModel / c.nHeads
        clip = c.clipQKV.map(Float.init)
        scale = Float(c.softmaxScale ?? 1 / Double(D).squareRoot())
        wqkv = try Linear(inFeatures: c.dModel, outFeatures: 3 * c.dModel, bias: false, on: be)
        outProj = try Linear(inFeatures: c.dModel, outFeatures: c.dModel, bias: false, on: be)
    }

    override var children: [(String, Module)] { [("Wqkv", wqkv), ("out_proj", outProj)] }

    func qkv(_ x: Tensor) throws -> (Tensor, Tensor, Tensor) {
        var fused = try wqkv(x)                                                     // (N, 3C): q | k | v
        if let clip { fused = try Ops.clamp(fused, limit: clip) }
        let C = H * D
        return (try Ops.columns(fused, from: 0, count: C), try Ops.columns(fused, from: C, count: C),
                try Ops.columns(fused, from: 2 * C, count: C))
    }

    func callAsFunction(_ x: Tensor, _ input: ModelInput, alibi: Tensor) throws -> Tensor {
        let (q, k, v) = try qkv(x)
        let o = try Ops.attention(q: q, k: k, v: v, docIds: input.docIds, alibi: alibi,
                                  shape: AttentionShape(B: input.B, T: input.T, H: H, KV: H, D: D, scale: scale))
        return try outProj(o)
    }

    /// Cached step: the new queries against the KV cache with the ALiBi bias, linear in the
    /// cache length per token.
    func decode(_ x: Tensor, alibi: Tensor, cache: KVCache, layer: Int) throws -> Tensor {
        let (q, k, v) = try qkv(x)
        return try outProj(try cache.attend(q: q, k: k, v: v, layer: layer, H: H, KV: H, D: D, scale: scale, window: nil,
                                            alibi: alibi))
    }
}

final class MPTMLP: Module {
    let upProj, downProj: Linear

    init(_ c: MPTConfig, on be: Backend) throws {
        upProj = try Linear(inFeatures: c.dModel, outFeatures: 4 * c.dModel, bias: false, on: be)
        downProj = try Linear(inFeatures: 4 * c.dModel, outFeatures: c.dModel, bias: false, on: be)
    }
    override var children: [(String, Module)] { [("up_proj", upProj), ("down_proj", downProj)] }

    func callAsFunction(_ x: Tensor) throws -> Tensor {
        try downProj(try Ops.gelu(try upProj(x), approximate: false))               // (N, 4C) → (N, C)
    }
}

final class MPTBlock: Module {
    let norm1, norm2: LayerNorm
    let attn: MPTAttention
    let ffn: MPTMLP

    init(_ c: MPTConfig, on be: Backend) throws {
        norm1 = try LayerNorm(dim: c.dModel, eps: c.layerNormEpsilon, bias: false, on: be)
        attn = try MPTAttention(c, on: be)
        norm2 = try LayerNorm(dim: c.dModel, eps: c.layerNormEpsilon, bias: false, on: be)
        ffn = try MPTMLP(c, on: be)
    }

    override var children: [(String, Module)] { [("norm_1", norm1), ("attn", attn), ("norm_2", norm2), ("ffn", ffn)] }

    func callAsFunction(_ x: Tensor, attention: (Tensor) throws -> Tensor) throws -> Tensor {
        let h = try Ops.add(x, try attention(try norm1(x)))
        return try Ops.add(h, try ffn(try norm2(h)))
    }
}

/// MPT with parameter names as in HF's `MptForCausalLM` (`transformer.blocks.N.attn.Wqkv`, …).
public final class MPTModel: Module, CausalLM, PackedHeadModel {
    /// The config the model was built from.
    public let config: MPTConfig
    /// The `transformer.` sub-tree of HF's MptForCausalLM (wte, blocks, norm_f).
    let transformer: DecoderBody<MPTBlock, LayerNorm>
    let lmHead: Linear?
    /// (H) ALiBi slopes.
    let alibi: Tensor

    /// Allocates the model's parameters (not initialized: load weights before use) and its ALiBi
    /// slopes.
    /// - Parameters:
    ///   - c: The model's config.
    ///   - be: The device the parameters live on.
    /// - Throws: When allocation fails.
    public init(config c: MPTConfig, on be: Backend) throws {
        config = c
        transformer = DecoderBody(embedTokens: try Embedding(vocab: c.vocabSize, dim: c.dModel, on: be),
                                  layers: try (0..<c.nLayers).map { _ in try MPTBlock(c, on: be) },
                                  norm: try LayerNorm(dim: c.dModel, eps: c.layerNormEpsilon, bias: false, on: be),
                                  names: ("wte", "blocks", "norm_f"))
        lmHead = c.tieWordEmbeddings ? nil : try Linear(inFeatures: c.dModel, outFeatures: c.vocabSize, bias: false, on: be)
        alibi = try Tensor(c.alibiSlopes, shape: [c.nHeads], on: be)
    }

    override public var children: [(String, Module)] {
        var c: [(String, Module)] = [("transformer", transformer)]
        if let lmHead { c.append(("lm_head", lmHead)) }
        return c
    }

    public var modelType: String { "mpt" }
    public var vocabSize: Int { config.vocabSize }
    public var hiddenSize: Int { config.dModel }
    public var numLayers: Int { config.nLayers }
    public var tiedEmbeddings: Bool { lmHead == nil }
    public var lmHeadWeight: Parameter { lmHead?.weight ?? transformer.embedTokens.weight }
    public var hfConfig: [String: JSONValue] { config.hf }
    /// PEFT's default for mpt: the fused attention projection.
    public var peftDefaultLoRATargets: [String]? { ["Wqkv"] }
    public var layout: ModelLayout { config.layout }
    public func ggufExport() throws -> GGUFModelExport { try config.ggufExport() }
    var packedHead: PackedMatrix?

    public func hiddenStates(_ input: ModelInput, checkpointing: Bool) throws -> Tensor {
        try transformer(try transformer.embedTokens(input.ids, rowLength: input.T), checkpointing: checkpointing) { [alibi] block, x in
            try block(x) { try block.attn($0, input, alibi: alibi) }
        }
    }

    public func makeCache(capacity: Int) throws -> KVCache {
        try KVCache(layers: config.nLayers, capacity: capacity, kvDim: config.dModel, on: alibi.backend)
    }

    public func decode(_ ids: [Int32], cache: KVCache) throws -> [Float] {
        let last = try transformer.decode(ids, cache: cache, embed: { try transformer.embedTokens($0) }) { i, block, x, _ in
            try block(x) { try block.attn.decode($0, alibi: alibi, cache: cache, layer: i) }
        }
        return try Autograd.withNoGrad { try headLogits(last) }
    }
}

// MARK: - Sizes and GGUF (llama.cpp's "mpt": fused attn_qkv, ALiBi bias maximum and q/k/v clamp
// as attention.max_alibi_bias / attention.clamp_kqv)

extension MPTConfig {
    /// Sizes for the memory estimate. Activations per token and layer: the layer input, two
    /// LayerNorm outputs, two residual sums and the attention and MLP outputs (7C); the fused
    /// q|k|v, its clamp (with clip_qkv) and its three column copies (6C or 9C); the attention
    /// output (C) and softmax statistics (H); the up projection and its GELU (8C).
    public var layout: ModelLayout {
        let C = dModel
        return ModelLayout(
            layers: nLayers, hidden: C, vocab: vocabSize, tiedEmbeddings: tieWordEmbeddings,
            linears: [.init("Wqkv", C, 3 * C), .init("out_proj", C, C), .init("up_proj", C, 4 * C), .init("down_proj", 4 * C, C)],
            layerNormValues: 2 * C, finalNormValues: C,
            activationsPerToken: 7 * C + (clipQKV == nil ? 6 : 9) * C + C + nHeads + 8 * C,
            bf16ActivationsPerToken: 2 * C + 3 * C + (clipQKV == nil ? 4 * C : 0) + 8 * C)
    }

    static let gguf = GGUFArchitecture(
        name: "mpt", layerPrefix: "transformer.blocks.",
        globals: ["token_embd.weight": "transformer.wte.weight", "output_norm.weight": "transformer.norm_f.weight",
                  "output_norm.bias": "transformer.norm_f.bias", "output.weight": "lm_head.weight"],
        blocks: ["attn_norm": "norm_1", "attn_qkv": "attn.Wqkv", "attn_output": "attn.out_proj", "ffn_norm": "norm_2",
                 "ffn_up": "ffn.up_proj", "ffn_down": "ffn.down_proj"]) { file in
        let m = file.metadata
        var c = GGUFArchitecture.commonConfig(file, arch: "mpt", keys: [
            ("block_count", "n_layers"), ("embedding_length", "d_model"), ("attention.head_count", "n_heads"),
            ("attention.layer_norm_epsilon", "layer_norm_epsilon"), ("context_length", "max_seq_len"), ("vocab_size", "vocab_size"),
        ])
        c["model_type"] = "mpt"
        c.merge(GGUFArchitecture.unknownKeys(file, arch: "mpt", known: [
            "block_count", "embedding_length", "attention.head_count", "attention.head_count_kv", "attention.layer_norm_epsilon",
            "context_length", "vocab_size", "feed_forward_length", "attention.clamp_kqv", "attention.max_alibi_bias"])) { a, _ in a }
        if let ff = m["mpt.feed_forward_length"]?.int, let d = c["d_model"] as? Int, d > 0 {
            c["expansion_ratio"] = ff % d == 0 ? ff / d : -1
        }
        var attn: [String: Any] = ["alibi": true]
        // llama.cpp's MPT without ALiBi writes a maximum bias of 0.
        if let b = m["mpt.attention.max_alibi_bias"]?.float { if b > 0 { attn["alibi_bias_max"] = b } else { attn["alibi"] = false } }
        if let clip = m["mpt.attention.clamp_kqv"]?.float, clip > 0 { attn["clip_qkv"] = clip }
        if let kv = m["mpt.attention.head_count_kv"]?.int, kv != (c["n_heads"] as? Int) { attn["kv_n_heads"] = kv }
        c["attn_config"] = attn
        return c
    }

    /// The `mpt.*` keys llama.cpp's converter writes; settings it has no key for are refused.
    func ggufExport() throws -> GGUFModelExport {
        if let s = softmaxScale, Float(s) != Float(1 / Double(dModel / nHeads).squareRoot()) {
            throw SFTError.unsupported("GGUF export of mpt with attn_config.softmax_scale \(s) (llama.cpp scales by head_dim^-½)")
        }
        var m: [(String, GGUFValue)] = [
            ("mpt.vocab_size", .uint32(UInt32(vocabSize))), ("mpt.context_length", .uint32(UInt32(maxSeqLen))),
            ("mpt.embedding_length", .uint32(UInt32(dModel))), ("mpt.block_count", .uint32(UInt32(nLayers))),
            ("mpt.feed_forward_length", .uint32(UInt32(4 * dModel))), ("mpt.attention.head_count", .uint32(UInt32(nHeads))),
            ("mpt.attention.layer_norm_epsilon", .float32(layerNormEpsilon)),
            ("mpt.attention.max_alibi_bias", .float32(Float(alibiBiasMax))),
        ]
        if let clipQKV { m.append(("mpt.attention.clamp_kqv", .float32(Float(clipQKV)))) }
        return GGUFModelExport(architecture: MPTConfig.gguf, metadata: m, heads: (nHeads, nHeads))
    }
}
