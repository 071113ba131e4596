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

/// Writes a model as GGUF the way llama.cpp's HF converter does (llama.cpp tensor names, q/k rows
/// permuted for Llama, `<arch>.*` hyper-parameters, `tokenizer.ggml.*` keys), so llama.cpp, the
/// Python `gguf` reader, transformers and ``GGUFWeights`` read it back.
public enum GGUFExport {
    /// How the weights are stored.
    public enum DType: String, CaseIterable, Sendable {
        /// 32-bit floats everywhere (llama.cpp's ALL_F32).
        case f32
        /// IEEE half precision for 2-D weights, 1-D tensors f32 (MOSTLY_F16).
        case f16
        /// bfloat16 for 2-D weights, 1-D tensors f32 (MOSTLY_BF16).
        case bf16
        /// 8-bit blocks of 32 values with one f16 scale for 2-D weights, 1-D tensors f32 (MOSTLY_Q8_0).
        case q8_0

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

    /// Writes `lm` (LoRA adapters must be merged first) as a GGUF v3 file.
    ///
    /// ```swift
    /// let lm = try LanguageModel.load(folder, adapter: adapterDir)
    /// try lm.mergeAdapters()
    /// try GGUFExport.save(lm, to: URL(fileURLWithPath: "model.gguf"), dtype: .f16)
    /// ```
    public static func save(_ lm: LanguageModel, to url: URL, dtype: DType = .f32) throws {
        let export = try lm.model.ggufExport()
        if lm.model.namedModules().contains(where: { ($0.1 as? Linear)?.lora != nil }) {
            throw SFTError.config(field: "merge", message: "the model still has LoRA adapters; merge them before exporting")
        }

        var w = try GGUFWriter()
        let arch = export.architecture
        let sourceMeta = (lm.source as? GGUFWeights)?.file.metadata ?? [:]
        let name = sourceMeta["general.name"]?.string ?? lm.url.deletingPathExtension().lastPathComponent
        try w.set("general.architecture", .string(arch.name))
        try w.set("general.type", .string("model"))
        try w.set("general.name", .string(name))
        try w.set("general.file_type", .uint32(dtype.fileType))
        if dtype == .q8_0 { try w.set("general.quantization_version", .uint32(2)) }
        for (key, value) in export.metadata { try w.set(key, value) }
        let template = lm.chatTemplate?.source ?? lm.tokenizer.chatTemplate
        for (key, value) in try lm.tokenizer.spec.ggufMetadata(chatTemplate: template) { try w.set(key, value) }

        for (hf, p) in lm.model.namedParameters() {
            guard let g = arch.ggufName(forHF: hf) else {
                throw SFTError.weights(key: hf, message: "no GGUF name for this tensor in llama.cpp's '\(arch.name)' architecture")
            }
            let shape = p.value.shape
            let heads: Int? = arch.permutesQK && (g.hasPrefix("blk.") && (g.contains(".attn_q.") || g.contains(".attn_k.")))
                ? (g.contains(".attn_q.") ? export.heads.q : export.heads.kv) : nil
            let plusOne = arch.storesPlusOne(hf: hf)
            var type = shape.count >= 2 ? dtype.matrixType : .f32
            // Q8_0 needs rows of whole blocks; llama.cpp falls back to f16 for the others.
            if type == .q8_0 && shape.last! % 32 != 0 { type = .f16 }
            let tensor = p.value
            try w.addTensor(name: g, shape: shape, type: type) {
                let values = try tensor.floats()
                if plusOne { return values.map { $0 + 1 } }
                guard let heads else { return values }
                return permuteRows(values, rows: shape[0], heads: heads)
            }
        }
        for (g, values) in export.derivedTensors {
            try w.addTensor(name: g, shape: [values.count], type: .f32) { values }
        }
        try w.write(to: url)
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

    /// The GGUF tensor name for an HF parameter name of a Llama-architecture model
    /// (`model.layers.3.mlp.up_proj.weight` → `blk.3.ffn_up.weight`), or nil when llama.cpp has none.
    public static func ggufName(forHF name: String) -> String? { LlamaConfig.gguf("llama").ggufName(forHF: name) }
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
