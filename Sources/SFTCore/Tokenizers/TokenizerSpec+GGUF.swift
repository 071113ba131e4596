// TokenizerSpec from GGUF metadata (the `tokenizer.ggml.*` keys llama.cpp's converter writes):
// model "gpt2" = byte-level BPE with merges, "llama" = SentencePiece BPE with scores;
// `tokenizer.ggml.pre` names the pre-tokenizer (llama.cpp's llama-vocab.cpp lists the regexes).
import Foundation
import SFTKernels

extension TokenizerSpec {
    /// llama.cpp pre-tokenizer names → the pre-tokenizer with the same regexes.
    static let ggufPreTokenizers: [String: PreTokenizer] = [
        // "default" is llama.cpp's fallback for BPE vocabularies converted without a known
        // pre-tokenizer; the GPT-2 pattern is what such (GPT-2 era) vocabularies were made with.
        "default": .gpt2, "gpt2": .gpt2, "gpt-2": .gpt2, "mpt": .gpt2, "olmo": .gpt2, "jais": .gpt2,
        "llama3": .llama3, "llama-v3": .llama3, "llama-bpe": .llama3, "dbrx": .llama3, "smaug-bpe": .llama3,
        "qwen2": .qwen2, "stablelm2": .qwen2, "deepseek-r1-qwen": .qwen2,
        "smollm": .smollm, "starcoder": .smollm, "refact": .smollm, "command-r": .smollm,
        "codeshell": .smollm, "exaone": .smollm, "minerva-7b": .smollm,
    ]

    /// Reads the tokenizer stored in a GGUF file's metadata.
    public init(gguf: GGUFFile) throws {
        let md = gguf.metadata
        let path = gguf.url.path
        func fail(_ key: String, _ m: String) -> SFTError { SFTError.format(path: path, offset: nil, message: "\(key): \(m)") }
        func id(_ key: String) throws -> Int32? {
            guard let v = md[key] else { return nil }
            guard let i = v.int, let i32 = Int32(exactly: i) else { throw fail(key, "not an integer id: \(v)") }
            return i32
        }
        guard let modelName = md["tokenizer.ggml.model"]?.string else {
            throw fail("tokenizer.ggml.model", "missing (the file has no tokenizer)")
        }
        guard let tokens = md["tokenizer.ggml.tokens"]?.strings, !tokens.isEmpty else {
            throw fail("tokenizer.ggml.tokens", "missing or not an array of strings")
        }
        var types = [TokenType](repeating: .normal, count: tokens.count)
        if let raw = md["tokenizer.ggml.token_type"] {
            guard let ints = raw.ints, ints.count == tokens.count else {
                throw fail("tokenizer.ggml.token_type", "expected \(tokens.count) integers")
            }
            for (i, t) in ints.enumerated() {
                guard let t32 = Int32(exactly: t), let tt = TokenType(rawValue: t32) else {
                    throw fail("tokenizer.ggml.token_type", "token \(i) has unknown type \(t)")
                }
                types[i] = tt
            }
        }

        switch modelName {
        case "gpt2":
            let preName = md["tokenizer.ggml.pre"]?.string ?? "default"
            guard let pre = Self.ggufPreTokenizers[preName] else {
                throw SFTError.unsupported("\(path): tokenizer.ggml.pre '\(preName)'")
            }
            guard let rawMerges = md["tokenizer.ggml.merges"]?.strings else {
                throw fail("tokenizer.ggml.merges", "missing or not an array of strings")
            }
            var merges: [(String, String)] = []
            merges.reserveCapacity(rawMerges.count)
            for (i, m) in rawMerges.enumerated() {
                let parts = m.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw fail("tokenizer.ggml.merges", "merge \(i) '\(m)' is not two tokens") }
                merges.append((String(parts[0]), String(parts[1])))
            }
            self.init(model: .byteLevelBPE, tokens: tokens, tokenTypes: types, merges: merges, preTokenizer: pre,
                      // Llama-3 vocabularies are matched whole before merging (llama.cpp does the same).
                      ignoreMerges: pre == .llama3,
                      addBosToken: md["tokenizer.ggml.add_bos_token"]?.bool ?? false)
        case "llama":
            guard let scores = md["tokenizer.ggml.scores"]?.floats, scores.count == tokens.count else {
                throw fail("tokenizer.ggml.scores", "expected \(tokens.count) numbers")
            }
            let hasBytes = types.contains(.byte)
            self.init(model: .sentencePieceBPE, tokens: tokens, tokenTypes: types, scores: scores,
                      spacePrefix: (md["tokenizer.ggml.add_space_prefix"]?.bool ?? true) ? .always : .never,
                      byteFallback: hasBytes, addBosToken: md["tokenizer.ggml.add_bos_token"]?.bool ?? true)
        default:
            throw SFTError.unsupported("\(path): tokenizer.ggml.model '\(modelName)' (gpt2 and llama are supported)")
        }
        bosTokenId = try id("tokenizer.ggml.bos_token_id")
        eosTokenId = try id("tokenizer.ggml.eos_token_id")
        padTokenId = try id("tokenizer.ggml.padding_token_id")
        unkTokenId = try id("tokenizer.ggml.unknown_token_id")
        addEosToken = md["tokenizer.ggml.add_eos_token"]?.bool ?? false
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            if let t = try id(key), t != eosTokenId { endOfTurnTokenIds.append(t) }
        }
        chatTemplate = md["tokenizer.chat_template"]?.string
        for (name, v) in [("bos", bosTokenId), ("eos", eosTokenId), ("padding", padTokenId), ("unknown", unkTokenId)] {
            if let v, v < 0 || Int(v) >= tokens.count {
                throw fail("tokenizer.ggml.\(name)_token_id", "id \(v) outside the vocabulary of \(tokens.count)")
            }
        }
        if let e = eosTokenId { endOfTurnTokenIds.removeAll { $0 == e } }
        addKnownEndOfTurnTokens()
        if let e = eosTokenId { endOfTurnTokenIds.removeAll { $0 == e } }
    }
}
