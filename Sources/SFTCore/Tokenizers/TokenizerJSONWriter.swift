// Writing a TokenizerSpec as HF tokenizer files — tokenizer.json, tokenizer_config.json and
// special_tokens_map.json — so a model loaded from GGUF can be exported as an HF folder that
// HF `tokenizers` / transformers' AutoTokenizer and sft's own reader tokenize id for id.
//
// The mapping is the inverse of `TokenizerSpec(tokenizerJSON:)` (field meanings from HF
// tokenizers' serialization of BPE, pre-tokenizers, normalizers and decoders):
//   byte-level: GPT-2 → ByteLevel(use_regex); SmolLM → Sequence[Digits(individual_digits),
//               ByteLevel(use_regex)]; Llama-3 / Qwen2 → Sequence[Split(regex, Isolated),
//               ByteLevel(use_regex false)]; decoder ByteLevel. No unk token in the model:
//               a byte missing from the vocabulary is dropped, as sft and llama.cpp do.
//   SentencePiece: space prefix "always" (sentencepiece, llama.cpp) → normalizer
//               Sequence[Prepend("▁"), Replace(" ", "▁")] (the form Llama-2 ships); the HF
//               Metaspace schemes → pre-tokenizer Metaspace; decoder Replace + ByteFallback +
//               Fuse (+ Strip of the prefix space). GGUF vocabularies that rank merges by score
//               get an explicit merge list ordered the way `Tokenizer` applies scores.
// Control tokens become special added tokens, user-defined ones non-special added tokens.
import Foundation
import SFTKernels

extension TokenizerSpec {
    /// Writes `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` into `dir`.
    ///
    /// - Parameters:
    ///   - dir: the folder to write into (created if missing).
    ///   - chatTemplate: the chat template to store; nil keeps the spec's own.
    ///   - modelMaxLength: `model_max_length` (usually the model's context length); nil writes
    ///     HF's "no limit" value.
    public func writeHuggingFace(to dir: URL, chatTemplate: String? = nil, modelMaxLength: Int? = nil) throws {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let files: [(String, JSONValue)] = [
            ("tokenizer.json", try huggingFaceTokenizerJSON()),
            ("tokenizer_config.json", huggingFaceTokenizerConfig(chatTemplate: chatTemplate, modelMaxLength: modelMaxLength)),
            ("special_tokens_map.json", huggingFaceSpecialTokensMap()),
        ]
        for (name, value) in files {
            let url = dir.appendingPathComponent(name)
            do {
                try Data(value.serialized(.python(indent: 2)).utf8).write(to: url, options: .atomic)
            } catch {
                throw SFTError.io(path: url.path, message: "cannot write: \(error.localizedDescription)")
            }
        }
    }

    /// The contents of `tokenizer.json` for this spec.
    public func huggingFaceTokenizerJSON() throws -> JSONValue {
        let isByteLevel = model == .byteLevelBPE
        // Vocabulary: every token but holes and repeated strings (a JSON map keeps one id per
        // string; keys compare as bytes, since Swift String equality is canonical equivalence).
        // Added tokens also sit in the model vocabulary: HF tokenizers keeps an added token's id
        // only when the model has it, and renumbers the others past the vocabulary's end.
        var seen = Set<[UInt8]>()
        var vocab: [(String, JSONValue)] = []
        var added: [JSONValue] = []
        vocab.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() {
            let type = tokenTypes[i]
            if type == .unused && t.isEmpty { continue }
            guard seen.insert(Array(t.utf8)).inserted else { continue }
            let isAdded = type == .control || type == .userDefined
            if isAdded {
                let o = addedTokenOptions[Int32(i)] ?? AddedTokenOptions()
                added.append([
                    "id": .int(i), "content": .string(t), "single_word": false, "lstrip": .bool(o.lstrip),
                    "rstrip": .bool(o.rstrip), "normalized": false, "special": .bool(type == .control),
                ])
            }
            vocab.append((t, .int(i)))
        }
        let mergeList = try merges.isEmpty && scores != nil ? mergesFromScores() : merges
        let unkName: JSONValue = !isByteLevel ? unkTokenId.flatMap { tokenString($0) }.map(JSONValue.string) ?? nil : nil
        let bpe: JSONValue = [
            "type": "BPE", "dropout": nil, "unk_token": unkName, "continuing_subword_prefix": nil,
            "end_of_word_suffix": nil, "fuse_unk": .bool(fuseUnknown), "byte_fallback": .bool(byteFallback),
            "ignore_merges": .bool(ignoreMerges), "vocab": .object(vocab),
            "merges": .array(mergeList.map { [.string($0.0), .string($0.1)] }),
        ]
        let (normalizer, pre) = try isByteLevel ? (nil, byteLevelPreTokenizer()) : sentencePieceNormalization()
        return [
            "version": "1.0", "truncation": nil, "padding": nil, "added_tokens": .array(added),
            "normalizer": normalizer, "pre_tokenizer": pre, "post_processor": postProcessor(),
            "decoder": decoder(), "model": bpe,
        ]
    }

    /// The contents of `tokenizer_config.json`: special token strings, add_bos/eos_token, the
    /// chat template, and the added tokens by id.
    public func huggingFaceTokenizerConfig(chatTemplate: String? = nil, modelMaxLength: Int? = nil) -> JSONValue {
        var decoderMap: [(String, JSONValue)] = []
        for (i, t) in tokens.enumerated() where tokenTypes[i] == .control || tokenTypes[i] == .userDefined {
            let o = addedTokenOptions[Int32(i)] ?? AddedTokenOptions()
            decoderMap.append((String(i), [
                "content": .string(t), "lstrip": .bool(o.lstrip), "normalized": false, "rstrip": .bool(o.rstrip),
                "single_word": false, "special": .bool(tokenTypes[i] == .control),
            ]))
        }
        var c: [(String, JSONValue)] = [
            ("add_bos_token", .bool(addBosToken)), ("add_eos_token", .bool(addEosToken)),
            ("added_tokens_decoder", .object(decoderMap)),
        ]
        for (key, id) in specialTokenIds { c.append((key, id.flatMap { tokenString($0) }.map(JSONValue.string) ?? nil)) }
        if let t = chatTemplate ?? self.chatTemplate { c.append(("chat_template", .string(t))) }
        c.append(("clean_up_tokenization_spaces", false))
        // 1e30 as an integer is what transformers writes for "no limit" (VERY_LARGE_INTEGER).
        c.append(("model_max_length", modelMaxLength.map(JSONValue.int) ?? .double(1e30)))
        c.append(("tokenizer_class", "PreTrainedTokenizerFast"))
        return .object(c)
    }

    /// The contents of `special_tokens_map.json`.
    public func huggingFaceSpecialTokensMap() -> JSONValue {
        var m: [(String, JSONValue)] = []
        for (key, id) in specialTokenIds {
            guard let id, let t = tokenString(id) else { continue }
            m.append((key, ["content": .string(t), "lstrip": false, "normalized": false, "rstrip": false, "single_word": false]))
        }
        return .object(m)
    }

    private var specialTokenIds: [(String, Int32?)] {
        [("bos_token", bosTokenId), ("eos_token", eosTokenId), ("pad_token", padTokenId), ("unk_token", unkTokenId)]
    }

    private func tokenString(_ id: Int32) -> String? { id >= 0 && Int(id) < tokens.count ? tokens[Int(id)] : nil }

    private func byteLevelPreTokenizer() -> JSONValue {
        func byteLevel(regex: Bool) -> JSONValue {
            ["type": "ByteLevel", "add_prefix_space": .bool(addPrefixSpace), "trim_offsets": true, "use_regex": .bool(regex)]
        }
        func split(_ pattern: String) -> JSONValue {
            ["type": "Split", "pattern": ["Regex": .string(pattern)], "behavior": "Isolated", "invert": false]
        }
        switch preTokenizer {
        case .none: return byteLevel(regex: false)
        case .gpt2: return byteLevel(regex: true)
        case .smollm:
            return ["type": "Sequence", "pretokenizers": [["type": "Digits", "individual_digits": true], byteLevel(regex: true)]]
        case .llama3: return ["type": "Sequence", "pretokenizers": [split(Self.llama3Pattern), byteLevel(regex: false)]]
        case .qwen2: return ["type": "Sequence", "pretokenizers": [split(Self.qwen2Pattern), byteLevel(regex: false)]]
        }
    }

    /// (normalizer, pre_tokenizer) of a SentencePiece-style spec.
    private func sentencePieceNormalization() throws -> (JSONValue, JSONValue) {
        let replace: JSONValue = ["type": "Replace", "pattern": ["String": " "], "content": "▁"]
        func metaspace(_ scheme: String) -> JSONValue {
            ["type": "Metaspace", "replacement": "▁", "prepend_scheme": .string(scheme), "split": .bool(splitOnSpace)]
        }
        switch (spacePrefix, splitOnSpace) {
        case (.always, false):
            return (["type": "Sequence", "normalizers": [["type": "Prepend", "prepend": "▁"], replace]], nil)
        case (.never, false): return (["type": "Sequence", "normalizers": [replace]], nil)
        case (.never, true): return (nil, metaspace("never"))
        case (.alwaysUnlessSpace, _): return (nil, metaspace("always"))
        case (.firstUnlessSpace, _): return (nil, metaspace("first"))
        case (.always, true):
            throw SFTError.unsupported("tokenizer.json cannot express a '▁' before every segment together with a split at every space")
        }
    }

    private func postProcessor() -> JSONValue {
        let bos = addBosToken ? bosTokenId.flatMap { tokenString($0) } : nil
        let eos = addEosToken ? eosTokenId.flatMap { tokenString($0) } : nil
        guard bos != nil || eos != nil else {
            return model == .byteLevelBPE ? ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true] : nil
        }
        func special(_ t: String, _ typeId: Int) -> JSONValue { ["SpecialToken": ["id": .string(t), "type_id": .int(typeId)]] }
        func sequence(_ name: String, _ typeId: Int) -> JSONValue { ["Sequence": ["id": .string(name), "type_id": .int(typeId)]] }
        func around(_ name: String, _ typeId: Int) -> [JSONValue] {
            (bos.map { [special($0, typeId)] } ?? []) + [sequence(name, typeId)] + (eos.map { [special($0, typeId)] } ?? [])
        }
        var specials: [(String, JSONValue)] = []
        for (t, id) in [(bos, bosTokenId), (eos, eosTokenId)] {
            guard let t, let id, !specials.contains(where: { $0.0 == t }) else { continue }
            specials.append((t, ["id": .string(t), "ids": [.int(Int(id))], "tokens": [.string(t)]]))
        }
        return ["type": "TemplateProcessing", "single": .array(around("A", 0)), "pair": .array(around("A", 0) + around("B", 1)),
                "special_tokens": .object(specials)]
    }

    private func decoder() -> JSONValue {
        if model == .byteLevelBPE {
            return ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true]
        }
        var steps: [JSONValue] = [["type": "Replace", "pattern": ["String": "▁"], "content": " "], ["type": "ByteFallback"], ["type": "Fuse"]]
        if spacePrefix != .never { steps.append(["type": "Strip", "content": " ", "start": 1, "stop": 0]) }
        return ["type": "Sequence", "decoders": .array(steps)]
    }

    /// An explicit merge list equivalent to ranking by score (`Tokenizer`'s rule for GGUF
    /// "llama" vocabularies): every split of a normal token into two normal tokens is a merge,
    /// ordered by the merged token's score (highest first), then its id, then the split point.
    func mergesFromScores() throws -> [(String, String)] {
        guard let scores, scores.count == tokens.count else {
            throw SFTError.config(field: "tokenizer.ggml.scores", message: "\(scores?.count ?? 0) scores for \(tokens.count) tokens")
        }
        var normal: [[UInt8]: Int] = [:]
        for (i, t) in tokens.enumerated() where tokenTypes[i] == .normal { normal[Array(t.utf8), default: i] = i }
        let order = (0..<tokens.count).filter { tokenTypes[$0] == .normal }
            .sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
        var out: [(String, String)] = []
        for id in order {
            let u = Array(tokens[id].utf8)
            guard u.count > 1 else { continue }
            for k in 1..<u.count where (u[k] & 0xC0) != 0x80 {
                let l = Array(u[..<k]), r = Array(u[k...])
                guard normal[l] != nil, normal[r] != nil else { continue }
                out.append((String(decoding: l, as: UTF8.self), String(decoding: r, as: UTF8.self)))
            }
        }
        return out
    }
}
