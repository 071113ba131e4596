// Exporting a model as GGUF the way llama.cpp's HF converter writes it, so llama.cpp, the
// Python `gguf` reader, transformers and sft's own GGUFWeights read it back: llama.cpp tensor
// names (the inverse of GGUFWeights.hfName), the q/k row permutation re-applied for the Llama
// architecture (the inverse of GGUFWeights' un-permutation), `<arch>.*` hyper-parameters and
// the `tokenizer.ggml.*` keys (model, pre-tokenizer, tokens, types, merges or scores, special
// ids, chat template).
//
// Storage: f32 everywhere, or f16 / bf16 / q8_0 for 2-D weights with 1-D tensors (norms,
// biases) kept in f32, as llama.cpp does.
import Foundation
import SFTKernels

public enum GGUFExport {
    /// How the weights are stored.
    public enum DType: String, CaseIterable, Sendable {
        case f32, f16, bf16, q8_0

        /// The GGML type of a 2-D weight.
        var matrixType: GGMLType {
            switch self {
            case .f32: return .f32
            case .f16: return .f16
            case .bf16: return .bf16
            case .q8_0: return .q8_0
            }
        }

        /// llama.cpp's `general.file_type` (LLAMA_FTYPE_ALL_F32, MOSTLY_F16, MOSTLY_BF16, MOSTLY_Q8_0).
        var fileType: UInt32 {
            switch self {
            case .f32: return 0
            case .f16: return 1
            case .bf16: return 32
            case .q8_0: return 7
            }
        }
    }

    /// The GGUF architecture for an HF model_type, and whether its q/k rows are permuted.
    static func architecture(_ modelType: String) -> (name: String, permuted: Bool)? {
        switch modelType {
        // llama.cpp converts Mistral (v0.1-style) checkpoints as "llama".
        case "llama", "mistral": return ("llama", true)
        case "qwen2": return ("qwen2", false)
        case "qwen3": return ("qwen3", false)
        default: return nil
        }
    }

    /// Writes `lm` (LoRA adapters must be merged first) as a GGUF v3 file.
    ///
    /// ```swift
    /// let lm = try LanguageModel.load(folder, adapter: adapterDir)
    /// try lm.mergeAdapters()
    /// try GGUFExport.save(lm, to: URL(fileURLWithPath: "model.gguf"), dtype: .f16)
    /// ```
    public static func save(_ lm: LanguageModel, to url: URL, dtype: DType = .f32) throws {
        guard let llama = lm.model as? LlamaModel else {
            throw SFTError.unsupported("GGUF export of model type '\(lm.model.modelType)' (Llama-family models only)")
        }
        let c = llama.config
        guard let arch = architecture(c.modelType) else {
            throw SFTError.unsupported("GGUF export of model type '\(c.modelType)' (llama, mistral, qwen2, qwen3)")
        }
        let rope = try ropeMetadata(c, arch: arch.name)
        if lm.model.namedModules().contains(where: { ($0.1 as? Linear)?.lora != nil }) {
            throw SFTError.config(field: "merge", message: "the model still has LoRA adapters; merge them before exporting")
        }

        var w = try GGUFWriter()
        let a = arch.name
        let sourceMeta = (lm.source as? GGUFWeights)?.file.metadata ?? [:]
        let name = sourceMeta["general.name"]?.string ?? lm.url.deletingPathExtension().lastPathComponent
        try w.set("general.architecture", .string(a))
        try w.set("general.type", .string("model"))
        try w.set("general.name", .string(name))
        try w.set("general.file_type", .uint32(dtype.fileType))
        if dtype == .q8_0 { try w.set("general.quantization_version", .uint32(2)) }
        try w.set("\(a).vocab_size", .uint32(UInt32(c.vocabSize)))
        try w.set("\(a).context_length", .uint32(UInt32(c.maxPositionEmbeddings)))
        try w.set("\(a).embedding_length", .uint32(UInt32(c.hiddenSize)))
        try w.set("\(a).block_count", .uint32(UInt32(c.numLayers)))
        try w.set("\(a).feed_forward_length", .uint32(UInt32(c.intermediateSize)))
        try w.set("\(a).attention.head_count", .uint32(UInt32(c.numHeads)))
        try w.set("\(a).attention.head_count_kv", .uint32(UInt32(c.numKVHeads)))
        try w.set("\(a).rope.freq_base", .float32(Float(c.ropeTheta)))
        for (key, value) in rope.metadata { try w.set(key, value) }
        if let window = c.slidingWindow, c.layerTypes == nil {
            try w.set("\(a).attention.sliding_window", .uint32(UInt32(window)))
        } else if c.slidingWindow != nil {
            throw SFTError.unsupported("GGUF export of per-layer sliding windows (layer_types) for \(c.modelType)")
        }
        try w.set("\(a).attention.layer_norm_rms_epsilon", .float32(c.rmsNormEps))
        try w.set("\(a).rope.dimension_count", .uint32(UInt32(c.headDim)))
        if c.headDim * c.numHeads != c.hiddenSize {
            try w.set("\(a).attention.key_length", .uint32(UInt32(c.headDim)))
            try w.set("\(a).attention.value_length", .uint32(UInt32(c.headDim)))
        }
        let template = lm.chatTemplate?.source ?? lm.tokenizer.chatTemplate
        for (key, value) in try lm.tokenizer.spec.ggufMetadata(chatTemplate: template) { try w.set(key, value) }

        for (hf, p) in lm.model.namedParameters() {
            guard let g = ggufName(forHF: hf) else {
                throw SFTError.weights(key: hf, message: "no GGUF name for this tensor")
            }
            let shape = p.value.shape
            let heads: Int? = arch.permuted && (g.hasPrefix("blk.") && (g.contains(".attn_q.") || g.contains(".attn_k.")))
                ? (g.contains(".attn_q.") ? c.numHeads : c.numKVHeads) : nil
            var type = shape.count >= 2 ? dtype.matrixType : .f32
            // Q8_0 needs rows of whole blocks; llama.cpp falls back to f16 for the others.
            if type == .q8_0 && shape.last! % 32 != 0 { type = .f16 }
            let tensor = p.value
            try w.addTensor(name: g, shape: shape, type: type) {
                let values = try tensor.floats()
                guard let heads else { return values }
                return permuteRows(values, rows: shape[0], heads: heads)
            }
        }
        if let factors = rope.freqFactors {
            try w.addTensor(name: "rope_freqs.weight", shape: [factors.count], type: .f32) { factors }
        }
        try w.write(to: url)
    }

    /// RoPE scaling as llama.cpp stores it: llama3 (and factors read from a GGUF) as the
    /// `rope_freqs` tensor of per-frequency divisors, linear and yarn as `rope.scaling.*` keys;
    /// kinds llama.cpp has no key for are refused, naming the kind.
    static func ropeMetadata(_ c: LlamaConfig, arch a: String) throws -> (metadata: [(String, GGUFValue)], freqFactors: [Float]?) {
        guard let s = c.ropeScaling else { return ([], nil) }
        switch s.ropeType {
        case "default", "llama3":
            // Divisors of the plain frequencies that give the scaled ones.
            let plain = try RopeParameters(theta: c.ropeTheta, scaling: nil)
                .frequencies(headDim: c.headDim, maxPositionEmbeddings: c.maxPositionEmbeddings).invFreq
            let scaled = try c.rope.frequencies(headDim: c.headDim, maxPositionEmbeddings: c.maxPositionEmbeddings).invFreq
            return ([], zip(plain, scaled).map { Float(Double($0) / Double($1)) })
        case "linear" where s.freqFactors == nil:
            return ([("\(a).rope.scaling.type", .string("linear")), ("\(a).rope.scaling.factor", .float32(Float(s.factor ?? 1)))], nil)
        case "yarn" where s.freqFactors == nil && s.attentionFactor == nil && s.mscale == nil && s.betaFast == nil && s.betaSlow == nil:
            var m: [(String, GGUFValue)] = [("\(a).rope.scaling.type", .string("yarn")),
                                            ("\(a).rope.scaling.factor", .float32(Float(s.factor ?? 1)))]
            if let n = s.originalMaxPositionEmbeddings { m.append(("\(a).rope.scaling.original_context_length", .uint32(UInt32(n)))) }
            return (m, nil)
        default:
            throw SFTError.unsupported("GGUF export of rope_type '\(s.ropeType)' with these settings (llama.cpp has keys for llama3 as rope_freqs, linear and plain yarn)")
        }
    }

    /// llama.cpp's order of q/k rows: within each head of D rows, HF row s·D/2 + i goes to
    /// 2i + s (the inverse of GGUFWeights' un-permutation).
    public static func permuteRows(_ values: [Float], rows: Int, heads: Int) -> [Float] {
        let rowLen = values.count / rows
        var out = [Float](repeating: 0, count: values.count)
        values.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                GGUFWeights.unpermuteRows(rows: rows, heads: heads) { hfRow, ggufRow in
                    (dst.baseAddress! + ggufRow * rowLen).update(from: src.baseAddress! + hfRow * rowLen, count: rowLen)
                }
            }
        }
        return out
    }

    /// The GGUF tensor name for an HF parameter name (`model.layers.3.mlp.up_proj.weight` →
    /// `blk.3.ffn_up.weight`), or nil when llama.cpp has none.
    public static func ggufName(forHF name: String) -> String? {
        switch name {
        case "model.embed_tokens.weight": return "token_embd.weight"
        case "model.norm.weight": return "output_norm.weight"
        case "model.norm.bias": return "output_norm.bias"
        case "lm_head.weight": return "output.weight"
        case "lm_head.bias": return "output.bias"
        default: break
        }
        let prefix = "model.layers."
        guard name.hasPrefix(prefix) else { return nil }
        let rest = name.dropFirst(prefix.count)
        guard let dot = rest.firstIndex(of: "."), let n = Int(rest[..<dot]) else { return nil }
        let path = rest[rest.index(after: dot)...]
        guard let last = path.lastIndex(of: ".") else { return nil }
        let module = String(path[..<last]), leaf = path[path.index(after: last)...]
        guard let g = blockNames[module] else { return nil }
        return "blk.\(n).\(g).\(leaf)"
    }

    /// HF module path inside `model.layers.N` → GGUF block tensor name.
    static let blockNames: [String: String] = Dictionary(uniqueKeysWithValues: GGUFWeights.blockModules.map { ($0.value, $0.key) })
}

extension TokenizerSpec {
    /// llama.cpp pre-tokenizer names for the pre-tokenizers sft knows (read back by `init(gguf:)`).
    static let ggufPreTokenizerNames: [PreTokenizer: String] = [
        .gpt2: "gpt2", .llama3: "llama-bpe", .qwen2: "qwen2", .smollm: "smollm", .none: "default",
    ]

    /// The `tokenizer.ggml.*` keys (and `tokenizer.chat_template`) llama.cpp reads.
    ///
    /// Byte-level BPE is model "gpt2" with its merges and pre-tokenizer name; SentencePiece BPE
    /// is model "llama" with scores (the spec's own, or, for vocabularies that came with a merge
    /// list, −rank of the merge that makes each token, which ranks merges in the same order).
    /// Added-token lstrip/rstrip, HF Metaspace variants and ignore_merges (implied by the
    /// Llama-3 pre-tokenizer only) have no GGUF key and are not kept.
    public func ggufMetadata(chatTemplate: String? = nil) throws -> [(String, GGUFValue)] {
        var m: [(String, GGUFValue)] = []
        let isByteLevel = model == .byteLevelBPE
        m.append(("tokenizer.ggml.model", .string(isByteLevel ? "gpt2" : "llama")))
        if isByteLevel {
            m.append(("tokenizer.ggml.pre", .string(Self.ggufPreTokenizerNames[preTokenizer] ?? "default")))
        }
        m.append(("tokenizer.ggml.tokens", .array(elementType: 8, tokens.map { .string($0) })))
        if isByteLevel {
            m.append(("tokenizer.ggml.token_type", .array(elementType: 5, tokenTypes.map { .int32($0.rawValue) })))
            m.append(("tokenizer.ggml.merges", .array(elementType: 8, merges.map { .string($0.0 + " " + $0.1) })))
        } else {
            m.append(("tokenizer.ggml.scores", .array(elementType: 6, try ggufScores().map { .float32($0) })))
            m.append(("tokenizer.ggml.token_type", .array(elementType: 5, tokenTypes.map { .int32($0.rawValue) })))
        }
        for (key, id) in [("bos", bosTokenId), ("eos", eosTokenId), ("unknown", unkTokenId), ("padding", padTokenId)] {
            if let id { m.append(("tokenizer.ggml.\(key)_token_id", .uint32(UInt32(id)))) }
        }
        m.append(("tokenizer.ggml.add_bos_token", .bool(addBosToken)))
        m.append(("tokenizer.ggml.add_eos_token", .bool(addEosToken)))
        m.append(("tokenizer.ggml.add_space_prefix", .bool(isByteLevel ? addPrefixSpace : spacePrefix != .never)))
        if let t = chatTemplate ?? self.chatTemplate { m.append(("tokenizer.chat_template", .string(t))) }
        return m
    }

    /// SentencePiece scores: the spec's own, or derived from the merge list (the token a merge of
    /// rank r makes scores −r; tokens no merge makes score below every merge).
    func ggufScores() throws -> [Float] {
        if let scores { return scores }
        var index: [[UInt8]: Int] = [:]
        for (i, t) in tokens.enumerated() { index[Array(t.utf8), default: i] = i }
        var scores = [Float](repeating: -Float(merges.count + 1), count: tokens.count)
        var scored = Set<Int>()
        for (rank, (a, b)) in merges.enumerated() {
            guard let id = index[Array((a + b).utf8)] else {
                throw SFTError.config(field: "tokenizer.merges", message: "merge \(rank) '\(a) \(b)' makes no token in the vocabulary")
            }
            if scored.insert(id).inserted { scores[id] = -Float(rank) }
        }
        return scores
    }
}
