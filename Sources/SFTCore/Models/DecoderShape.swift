// The config.json keys the HF-style decoder families (Llama and its kin, Phi-3, Gemma 2 / 3)
// share — sizes, norm epsilon, positions, tied head, token ids, attention dropout — decoded and
// checked once. A family config stores one `DecoderShape` and reads its fields as its own
// (`config.hiddenSize`, through `DecoderShaped`); it decodes only the keys that differ.

import Foundation
import SFTKernels

/// The sizes and settings every HF-style decoder config shares.
public struct DecoderShape: Equatable, Sendable {
    /// C, the width of the residual stream (HF `hidden_size`).
    public var hiddenSize: Int
    /// F, the width of the MLP's gate and up projections (HF `intermediate_size`).
    public var intermediateSize: Int
    /// Number of decoder layers (HF `num_hidden_layers`).
    public var numLayers: Int
    /// H, the number of query heads (HF `num_attention_heads`).
    public var numHeads: Int
    /// KV, the number of key/value heads (HF `num_key_value_heads`, default H); H is a multiple of it (grouped-query attention).
    public var numKVHeads: Int
    /// D, the width of one head (HF `head_dim`, default C / H); even, for RoPE.
    public var headDim: Int
    /// V, the number of token ids (HF `vocab_size`).
    public var vocabSize: Int
    /// The epsilon added to the mean square in every RMSNorm (HF `rms_norm_eps`).
    public var rmsNormEps: Float
    /// The pretraining context length (HF `max_position_embeddings`); RoPE scalings that depend on it read it here.
    public var maxPositionEmbeddings: Int
    /// Whether the LM head reuses the embedding matrix (HF `tie_word_embeddings`).
    public var tieWordEmbeddings: Bool
    /// HF `bos_token_id` when the config names one (written back to a saved config.json; tokenization uses the tokenizer's).
    public var bosTokenId: Int?
    /// HF `eos_token_id` when the config names a single one (written back to a saved config.json; generation uses the tokenizer's).
    public var eosTokenId: Int?

    /// `headDim` nil: hidden / heads.
    public init(hiddenSize: Int, intermediateSize: Int, numLayers: Int, numHeads: Int, numKVHeads: Int, headDim: Int? = nil,
                vocabSize: Int, rmsNormEps: Float, maxPositionEmbeddings: Int, tieWordEmbeddings: Bool,
                bosTokenId: Int? = nil, eosTokenId: Int? = nil) {
        self.hiddenSize = hiddenSize; self.intermediateSize = intermediateSize; self.numLayers = numLayers
        self.numHeads = numHeads; self.numKVHeads = numKVHeads; self.headDim = headDim ?? hiddenSize / max(1, numHeads)
        self.vocabSize = vocabSize; self.rmsNormEps = rmsNormEps; self.maxPositionEmbeddings = maxPositionEmbeddings
        self.tieWordEmbeddings = tieWordEmbeddings; self.bosTokenId = bosTokenId; self.eosTokenId = eosTokenId
    }

    /// What a family assumes where config.json leaves a key out (transformers' defaults differ).
    struct Defaults {
        /// nil: hidden / heads.
        var headDim: Int?
        var rmsNormEps: Double
        var maxPositionEmbeddings: Int
        var tieWordEmbeddings: Bool
    }

    enum Keys: String, CodingKey, CaseIterable {
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size", numLayers = "num_hidden_layers"
        case numHeads = "num_attention_heads", numKVHeads = "num_key_value_heads", headDim = "head_dim"
        case vocabSize = "vocab_size", rmsNormEps = "rms_norm_eps", maxPositionEmbeddings = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings", bosTokenId = "bos_token_id", eosTokenId = "eos_token_id"
        case attentionDropout = "attention_dropout", modelType = "model_type"
    }

    /// The keys this reads, and the RoPE keys every such family reads through `RopeParameters.fromHF`
    /// (a family's `understood` list is these plus its own).
    static let keyNames = Keys.allCases.map(\.rawValue) + ["rope_parameters", "rope_theta", "rope_scaling"]

    /// Decodes the shared keys of the config object `decoder` reads; a non-zero
    /// `attention_dropout` is an error.
    init(from decoder: Decoder, defaults: Defaults) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        let hidden = try c.decode(Int.self, forKey: .hiddenSize), heads = try c.decode(Int.self, forKey: .numHeads)
        self.init(hiddenSize: hidden, intermediateSize: try c.decode(Int.self, forKey: .intermediateSize),
                  numLayers: try c.decode(Int.self, forKey: .numLayers), numHeads: heads,
                  numKVHeads: try c.decodeIfPresent(Int.self, forKey: .numKVHeads) ?? heads,
                  headDim: try c.decodeIfPresent(Int.self, forKey: .headDim) ?? defaults.headDim,
                  vocabSize: try c.decode(Int.self, forKey: .vocabSize),
                  rmsNormEps: Float(try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? defaults.rmsNormEps),
                  maxPositionEmbeddings: try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? defaults.maxPositionEmbeddings,
                  tieWordEmbeddings: try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? defaults.tieWordEmbeddings,
                  bosTokenId: try? c.decodeIfPresent(Int.self, forKey: .bosTokenId),
                  eosTokenId: try? c.decodeIfPresent(Int.self, forKey: .eosTokenId))
        try HFConfig.requireZero(try c.decodeIfPresent(Double.self, forKey: .attentionDropout), "attention_dropout")
    }

    /// Throws unless the sizes fit together: positive sizes, query heads in whole groups per kv
    /// head, an even head dim (RoPE rotates pairs).
    func checkSizes() throws {
        guard hiddenSize > 0, numLayers > 0, numHeads > 0, numKVHeads > 0, numHeads % numKVHeads == 0, vocabSize > 0,
              headDim > 0, headDim % 2 == 0 else {
            throw SFTError.config(field: "num_key_value_heads", message: "inconsistent shape: hidden \(hiddenSize), heads \(numHeads), kv heads \(numKVHeads), head_dim \(headDim)")
        }
    }

    /// The shared keys as transformers writes them, with the family's `model_type` and architecture.
    func hf(modelType: String, architecture: String, writesHeadDim: Bool = true) -> [String: JSONValue] {
        var c: [String: JSONValue] = [
            "architectures": [.string(architecture)], "model_type": .string(modelType), "hidden_size": .int(hiddenSize),
            "intermediate_size": .int(intermediateSize), "num_hidden_layers": .int(numLayers),
            "num_attention_heads": .int(numHeads), "num_key_value_heads": .int(numKVHeads), "vocab_size": .int(vocabSize),
            "rms_norm_eps": .double(Double(rmsNormEps)), "max_position_embeddings": .int(maxPositionEmbeddings),
            "tie_word_embeddings": .bool(tieWordEmbeddings), "torch_dtype": "float32",
        ]
        if writesHeadDim { c["head_dim"] = .int(headDim) }
        if let bosTokenId { c["bos_token_id"] = .int(bosTokenId) }
        if let eosTokenId { c["eos_token_id"] = .int(eosTokenId) }
        return c
    }
}

/// A family config that stores a `DecoderShape` and reads its fields as its own
/// (`config.hiddenSize` is `config.shape.hiddenSize`).
public protocol DecoderShaped {
    /// The sizes and settings every HF-style decoder config shares.
    var shape: DecoderShape { get set }
}

/// `shape`'s fields, read and written as the config's own.
extension DecoderShaped {
    /// C, the width of the residual stream (HF `hidden_size`) (`shape`'s field).
    public var hiddenSize: Int { get { shape.hiddenSize } set { shape.hiddenSize = newValue } }
    /// F, the width of the MLP's gate and up projections (HF `intermediate_size`) (`shape`'s field).
    public var intermediateSize: Int { get { shape.intermediateSize } set { shape.intermediateSize = newValue } }
    /// Number of decoder layers (HF `num_hidden_layers`) (`shape`'s field).
    public var numLayers: Int { get { shape.numLayers } set { shape.numLayers = newValue } }
    /// H, the number of query heads (HF `num_attention_heads`) (`shape`'s field).
    public var numHeads: Int { get { shape.numHeads } set { shape.numHeads = newValue } }
    /// KV, the number of key/value heads (HF `num_key_value_heads`, default H); H is a multiple of it (grouped-query attention) (`shape`'s field).
    public var numKVHeads: Int { get { shape.numKVHeads } set { shape.numKVHeads = newValue } }
    /// D, the width of one head (HF `head_dim`, default C / H); even, for RoPE (`shape`'s field).
    public var headDim: Int { get { shape.headDim } set { shape.headDim = newValue } }
    /// V, the number of token ids (HF `vocab_size`) (`shape`'s field).
    public var vocabSize: Int { get { shape.vocabSize } set { shape.vocabSize = newValue } }
    /// The epsilon added to the mean square in every RMSNorm (HF `rms_norm_eps`) (`shape`'s field).
    public var rmsNormEps: Float { get { shape.rmsNormEps } set { shape.rmsNormEps = newValue } }
    /// The pretraining context length (HF `max_position_embeddings`); RoPE scalings that depend on it read it here (`shape`'s field).
    public var maxPositionEmbeddings: Int { get { shape.maxPositionEmbeddings } set { shape.maxPositionEmbeddings = newValue } }
    /// Whether the LM head reuses the embedding matrix (HF `tie_word_embeddings`) (`shape`'s field).
    public var tieWordEmbeddings: Bool { get { shape.tieWordEmbeddings } set { shape.tieWordEmbeddings = newValue } }
    /// HF `bos_token_id` when the config names one (written back to a saved config.json; tokenization uses the tokenizer's) (`shape`'s field).
    public var bosTokenId: Int? { get { shape.bosTokenId } set { shape.bosTokenId = newValue } }
    /// HF `eos_token_id` when the config names a single one (written back to a saved config.json; generation uses the tokenizer's) (`shape`'s field).
    public var eosTokenId: Int? { get { shape.eosTokenId } set { shape.eosTokenId = newValue } }
}

extension HFConfig {
    /// Throws unless `layerTypes` has one entry per layer, each `full_attention` or `sliding_attention`.
    static func checkLayerTypes(_ layerTypes: [String], layers: Int) throws {
        guard layerTypes.count == layers else {
            throw SFTError.config(field: "layer_types", message: "\(layerTypes.count) entries for \(layers) layers")
        }
        if let bad = layerTypes.first(where: { $0 != "full_attention" && $0 != "sliding_attention" }) {
            throw SFTError.config(field: "layer_types", message: "'\(bad)' is not implemented (full_attention, sliding_attention)")
        }
    }
}

extension RopeParameters {
    /// `scaling` as the object transformers writes (`rope_scaling`; keys sorted), nil for default RoPE.
    var hfScaling: JSONValue? {
        guard let scaling, let data = try? JSONEncoder().encode(scaling),
              let object = try? JSONSerialization.jsonObject(with: data) else { return nil }
        return JSONValue(foundation: object)
    }

    /// The transformers 5 `rope_parameters` object: `rope_type`, `rope_theta` and the scaling's keys.
    var hfParameters: JSONValue {
        var pairs: [String: JSONValue] = ["rope_type": .string(kind), "rope_theta": .double(theta)]
        for (key, value) in hfScaling?.objectValue ?? [] where pairs[key] == nil { pairs[key] = value }
        return .sortedObject(pairs)
    }
}
