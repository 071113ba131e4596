// TokenizerSpec: everything a tokenizer needs, as plain data, whatever file it came from. The
// loaders (tokenizer.json + tokenizer_config.json here, GGUF metadata in TokenizerSpec+GGUF)
// fill it in; `Tokenizer(spec:)` builds the fast tables from it. Field meanings follow HF
// tokenizers' tokenizer.json and GGUF's `tokenizer.ggml.*` keys.
import Foundation
import SFTKernels

/// The description of a tokenizer: model kind, vocabulary, merges or scores, token types,
/// pre-tokenizer and special tokens.
public struct TokenizerSpec {
    /// The tokenization model.
    public enum Model: String, Sendable {
        /// GPT-2 style: text is split by a pre-tokenizer regex, each piece's UTF-8 bytes are
        /// merged by rank; tokens are stored with the byte↔unicode map (space = "Ġ").
        case byteLevelBPE
        /// SentencePiece style (Llama-2, Mistral): spaces become "▁", characters are merged by
        /// rank (or by score), unknown characters fall back to <0xXX> byte tokens.
        case sentencePieceBPE
    }

    /// How byte-level text is split before merging.
    public enum PreTokenizer: String, Sendable {
        /// `none`: the segment is one piece. `gpt2`: GPT-2's split (contractions, letter runs,
        /// digit runs, punctuation runs, each with one leading space; whitespace). `llama3`:
        /// Llama-3's split (digits in runs of at most three). `qwen2`: Llama-3's split with one
        /// digit per piece.
        case none, gpt2, llama3, qwen2
        /// Every digit on its own, then GPT-2 (SmolLM, StarCoder).
        case smollm
    }

    /// Token types, with GGUF's numbering (also SentencePiece's).
    public enum TokenType: Int32, Sendable {
        /// `normal`: an ordinary piece, merged from text. `unknown`: the unknown token. `control`:
        /// a special token (BOS, EOS, chat markers), matched in text and dropped when skipping
        /// special tokens. `userDefined`: an added token matched in text and kept when decoding.
        /// `unused`: never produced. `byte`: a `<0xXX>` byte-fallback token.
        case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    /// Where SentencePiece models put the "▁" that makes the first word look like a later one.
    public enum SpacePrefix: String, Sendable {
        /// No "▁" is prepended (HF Metaspace "never").
        case never
        /// Before every text segment (between special tokens): sentencepiece, llama.cpp, and HF's
        /// legacy normalizer `Prepend("▁")`.
        case always
        /// HF Metaspace "always": before every segment that does not already start with a space.
        case alwaysUnlessSpace
        /// HF Metaspace "first": only before the text's first segment when it starts the text and
        /// does not start with a space.
        case firstUnlessSpace
    }

    /// Matching options of a special/added token (HF AddedToken).
    public struct AddedTokenOptions: Sendable, Equatable {
        /// Swallow whitespace on the left / right of the match.
        public var lstrip: Bool
        /// Swallow whitespace on the right of the match.
        public var rstrip: Bool
        /// Options with the given strip flags (both off by default, as HF AddedToken).
        public init(lstrip: Bool = false, rstrip: Bool = false) { self.lstrip = lstrip; self.rstrip = rstrip }
    }

    /// Byte-level BPE or SentencePiece-style BPE.
    public var model: Model
    /// Token strings by id, as stored (byte-level mapped for `byteLevelBPE`: "Ġthe").
    public var tokens: [String]
    /// One per token. `control` and `userDefined` tokens are matched inside text; `control`
    /// tokens are dropped by `decode(skipSpecialTokens: true)`.
    public var tokenTypes: [TokenType]
    /// Merges by rank (first merges first), as token-string pairs. Empty when `scores` is used.
    public var merges: [(String, String)]
    /// SentencePiece scores (GGUF "llama" models without merges): a pair merges when its
    /// concatenation is a token; higher score merges first.
    public var scores: [Float]?
    /// Byte-level: how text is split into pieces before merging (HF `pre_tokenizer`, GGUF
    /// `tokenizer.ggml.pre`); `none` for SentencePiece.
    public var preTokenizer: PreTokenizer
    /// Byte-level: add a space before text that does not start with one (HF ByteLevel add_prefix_space).
    public var addPrefixSpace: Bool
    /// SentencePiece: where a "▁" is prepended.
    public var spacePrefix: SpacePrefix
    /// SentencePiece: split the text before each "▁" (HF Metaspace split=true) instead of
    /// merging across words.
    public var splitOnSpace: Bool
    /// Characters missing from the vocabulary become <0xXX> byte tokens.
    public var byteFallback: Bool
    /// Consecutive unknown characters become one unknown token.
    public var fuseUnknown: Bool
    /// A piece that is itself a token is emitted without merging (HF ignore_merges; Llama-3).
    public var ignoreMerges: Bool
    /// The BOS token (tokenizer_config's `bos_token`, GGUF `tokenizer.ggml.bos_token_id`).
    public var bosTokenId: Int32?
    /// The EOS token (`eos_token`, GGUF `tokenizer.ggml.eos_token_id`).
    public var eosTokenId: Int32?
    /// The padding token (`pad_token`, GGUF `tokenizer.ggml.padding_token_id`).
    public var padTokenId: Int32?
    /// The unknown token (`unk_token`, GGUF `tokenizer.ggml.unknown_token_id`).
    public var unkTokenId: Int32?
    /// Further tokens that end a generation (end of turn, end of message), besides EOS.
    public var endOfTurnTokenIds: [Int32]
    /// Encoding with special tokens puts BOS first (`add_bos_token`, GGUF
    /// `tokenizer.ggml.add_bos_token`).
    public var addBosToken: Bool
    /// Encoding with special tokens puts EOS last (`add_eos_token`, GGUF
    /// `tokenizer.ggml.add_eos_token`).
    public var addEosToken: Bool
    /// The Jinja chat template (tokenizer_config's `chat_template`, GGUF
    /// `tokenizer.chat_template`), nil when the model has none.
    public var chatTemplate: String?
    /// lstrip/rstrip for added tokens that have them (by id).
    public var addedTokenOptions: [Int32: AddedTokenOptions]

    /// A spec from its fields; each argument sets the property of the same name. `tokenTypes` nil
    /// makes every token `normal`. No consistency check here: `Tokenizer(spec:)` validates (ids in
    /// range, BOS set when `addBosToken` asks for it) and throws naming the field.
    public init(model: Model, tokens: [String], tokenTypes: [TokenType]? = nil, merges: [(String, String)] = [],
                scores: [Float]? = nil, preTokenizer: PreTokenizer = .none, addPrefixSpace: Bool = false,
                spacePrefix: SpacePrefix = .never, splitOnSpace: Bool = false, byteFallback: Bool = false,
                fuseUnknown: Bool = false, ignoreMerges: Bool = false, bosTokenId: Int32? = nil,
                eosTokenId: Int32? = nil, padTokenId: Int32? = nil, unkTokenId: Int32? = nil,
                endOfTurnTokenIds: [Int32] = [], addBosToken: Bool = false, addEosToken: Bool = false,
                chatTemplate: String? = nil, addedTokenOptions: [Int32: AddedTokenOptions] = [:]) {
        self.model = model
        self.tokens = tokens
        self.tokenTypes = tokenTypes ?? [TokenType](repeating: .normal, count: tokens.count)
        self.merges = merges
        self.scores = scores
        self.preTokenizer = preTokenizer
        self.addPrefixSpace = addPrefixSpace
        self.spacePrefix = spacePrefix
        self.splitOnSpace = splitOnSpace
        self.byteFallback = byteFallback
        self.fuseUnknown = fuseUnknown
        self.ignoreMerges = ignoreMerges
        self.bosTokenId = bosTokenId
        self.eosTokenId = eosTokenId
        self.padTokenId = padTokenId
        self.unkTokenId = unkTokenId
        self.endOfTurnTokenIds = endOfTurnTokenIds
        self.addBosToken = addBosToken
        self.addEosToken = addEosToken
        self.chatTemplate = chatTemplate
        self.addedTokenOptions = addedTokenOptions
    }

    /// The largest vocabulary sft reads: 4,194,304 ids (published vocabularies stop near 262k).
    /// An id at or past it in a file is an error before anything is allocated for it, so a
    /// hostile id (2^31, Int.max) cannot ask for gigabytes.
    public static let maxVocabularySize = 1 << 22

    /// An id read from a file: an integral JSON number in 0..<maxVocabularySize, or nil.
    static func checkedId(_ v: Any?) -> Int? {
        guard let v else { return nil }
        if let i = v as? Int { return i >= 0 && i < maxVocabularySize ? i : nil }
        let d: Double
        if let n = v as? NSNumber { d = n.doubleValue } else if let x = v as? Double { d = x } else { return nil }
        guard d.isFinite, d == d.rounded(), d >= 0, d < Double(maxVocabularySize) else { return nil }
        return Int(d)
    }

    /// Token strings that end a turn in common chat formats; found in the vocabulary, they join
    /// `endOfTurnTokenIds`.
    static let knownEndOfTurnTokens = ["<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>",
                                       "<|endoftext|>", "<|end_of_text|>", "</s>"]

    /// Adds the known end-of-turn tokens that exist (as special tokens) to `endOfTurnTokenIds`.
    mutating func addKnownEndOfTurnTokens() {
        var index: [String: Int] = [:]
        for (i, t) in tokens.enumerated() where tokenTypes[i] == .control || tokenTypes[i] == .userDefined {
            index[t] = i
        }
        for name in Self.knownEndOfTurnTokens {
            if let i = index[name], !endOfTurnTokenIds.contains(Int32(i)) { endOfTurnTokenIds.append(Int32(i)) }
        }
    }
}

// MARK: - tokenizer.json (HF tokenizers) + tokenizer_config.json

extension TokenizerSpec {
    /// Reads an HF tokenizer: `tokenizer.json`, and beside it (when present)
    /// `tokenizer_config.json` (add_bos_token, special tokens, chat_template) and
    /// `generation_config.json` (extra eos ids).
    ///
    /// `url` is the tokenizer.json file or the folder holding it.
    public init(huggingFace url: URL) throws {
        var isDir: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir)
        let folder = isDir.boolValue ? url : url.deletingLastPathComponent()
        let file = isDir.boolValue ? url.appendingPathComponent("tokenizer.json") : url
        guard exists else { throw SFTError.io(path: url.path, message: "no such file or folder") }
        guard FileManager.default.fileExists(atPath: file.path) else {
            throw SFTError.io(path: file.path, message: "no tokenizer.json in the model folder")
        }
        let json = try Self.readJSONObject(file)
        let configURL = folder.appendingPathComponent("tokenizer_config.json")
        let config = FileManager.default.fileExists(atPath: configURL.path) ? try Self.readJSONObject(configURL) : [:]
        let genURL = folder.appendingPathComponent("generation_config.json")
        let generation = FileManager.default.fileExists(atPath: genURL.path) ? try Self.readJSONObject(genURL) : [:]
        try self.init(tokenizerJSON: json, config: config, generationConfig: generation, path: file.path)
    }

    static func readJSONObject(_ url: URL) throws -> [String: Any] {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw SFTError.io(path: url.path, message: "cannot read: \(error.localizedDescription)")
        }
        do {
            guard let obj = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw SFTError.format(path: url.path, offset: nil, message: "top level is not a JSON object")
            }
            return obj
        } catch let e as SFTError { throw e } catch {
            throw SFTError.format(path: url.path, offset: nil, message: "invalid JSON: \(error.localizedDescription)")
        }
    }

    /// Builds the spec from parsed tokenizer.json / tokenizer_config.json / generation_config.json
    /// documents (each a JSON object). `path` names the file in errors.
    public init(tokenizerJSON json: JSONValue, config: JSONValue = [:], generationConfig: JSONValue = [:],
                path: String = "tokenizer.json") throws {
        func object(_ v: JSONValue, _ name: String) throws -> [String: Any] {
            guard case .object = v, let o = v.foundationValue as? [String: Any] else {
                throw SFTError.format(path: path, offset: nil, message: "\(name) is not a JSON object")
            }
            return o
        }
        try self.init(tokenizerJSON: try object(json, "tokenizer.json"), config: try object(config, "tokenizer_config.json"),
                      generationConfig: try object(generationConfig, "generation_config.json"), path: path)
    }

    /// The same from JSONSerialization's objects (what `init(huggingFace:)` reads).
    init(tokenizerJSON json: [String: Any], config: [String: Any] = [:],
         generationConfig: [String: Any] = [:], path: String = "tokenizer.json") throws {
        func fail(_ m: String) -> SFTError { SFTError.format(path: path, offset: nil, message: m) }
        guard let model = json["model"] as? [String: Any] else { throw fail("no \"model\" object") }
        guard (model["type"] as? String ?? "BPE") == "BPE" else {
            throw SFTError.unsupported("\(path): tokenizer model type '\(model["type"] ?? "?")' (only BPE)")
        }
        guard let vocab = model["vocab"] as? [String: Any] else { throw fail("model.vocab is not an object") }
        if let prefix = model["continuing_subword_prefix"] as? String, !prefix.isEmpty {
            throw SFTError.unsupported("\(path): BPE continuing_subword_prefix")
        }
        if let suffix = model["end_of_word_suffix"] as? String, !suffix.isEmpty {
            throw SFTError.unsupported("\(path): BPE end_of_word_suffix")
        }

        // Vocabulary: model.vocab plus added_tokens (ids may lie past the model's vocabulary).
        var byId: [Int: String] = [:]
        for (tok, v) in vocab {
            guard let id = Self.checkedId(v) else {
                throw fail("model.vocab entry '\(tok)': id \(v) is not an integer in 0..<\(Self.maxVocabularySize)")
            }
            byId[id] = tok
        }
        var special: [Int: Bool] = [:]
        var options: [Int32: AddedTokenOptions] = [:]
        for entry in json["added_tokens"] as? [[String: Any]] ?? [] {
            guard let content = entry["content"] as? String, let rawId = entry["id"] else {
                throw fail("added_tokens entry without id/content")
            }
            guard let id = Self.checkedId(rawId) else {
                throw fail("added_tokens entry '\(content)': id \(rawId) is not an integer in 0..<\(Self.maxVocabularySize)")
            }
            byId[id] = content
            special[id] = entry["special"] as? Bool ?? false
            let o = AddedTokenOptions(lstrip: entry["lstrip"] as? Bool ?? false, rstrip: entry["rstrip"] as? Bool ?? false)
            if o != AddedTokenOptions() { options[Int32(id)] = o }
        }
        let count = (byId.keys.max() ?? -1) + 1
        guard count > 0 else { throw fail("empty vocabulary") }
        var tokens = [String](repeating: "", count: count)
        var types = [TokenType](repeating: .unused, count: count)
        for (id, t) in byId { tokens[id] = t; types[id] = .normal }
        for (id, isSpecial) in special { types[id] = isSpecial ? .control : .userDefined }

        // Merges: "a b" strings (older files) or ["a", "b"] pairs.
        var merges: [(String, String)] = []
        let rawMerges = model["merges"] as? [Any] ?? []
        merges.reserveCapacity(rawMerges.count)
        for (i, m) in rawMerges.enumerated() {
            if let s = m as? String {
                let parts = s.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw fail("merge \(i) '\(s)' is not two tokens") }
                merges.append((String(parts[0]), String(parts[1])))
            } else if let a = m as? [String], a.count == 2 {
                merges.append((a[0], a[1]))
            } else {
                throw fail("merge \(i) is neither \"a b\" nor [a, b]")
            }
        }

        let byteFallback = model["byte_fallback"] as? Bool ?? false
        var unk: Int32?
        if let u = model["unk_token"] as? String, let id = byId.first(where: { $0.value == u })?.key { unk = Int32(id) }
        if let u = unk, types[Int(u)] == .normal { types[Int(u)] = .unknown }
        if byteFallback {
            for (id, t) in byId where types[id] == .normal && Self.byteTokenValue(t) != nil { types[id] = .byte }
        }

        // Pre-tokenizer, normalizer and decoder decide between byte-level and SentencePiece.
        let pre = try Self.parsePreTokenizer(json["pre_tokenizer"], path: path)
        let norm = try Self.parseNormalizer(json["normalizer"], path: path)
        let kind: Model
        var spacePrefix = SpacePrefix.never
        var splitOnSpace = false
        if let meta = pre.metaspace {
            kind = .sentencePieceBPE
            spacePrefix = meta.prefix
            splitOnSpace = meta.split
        } else if norm.spaceToMeta {
            kind = .sentencePieceBPE
            spacePrefix = norm.prepend ? .always : .never
        } else if pre.byteLevel {
            kind = .byteLevelBPE
        } else if let dec = json["decoder"] as? [String: Any], Self.mentions(dec, type: "ByteLevel") {
            kind = .byteLevelBPE
        } else {
            throw SFTError.unsupported("\(path): neither a byte-level nor a SentencePiece-style BPE tokenizer")
        }

        self.init(model: kind, tokens: tokens, tokenTypes: types, merges: merges, scores: nil,
                  preTokenizer: kind == .byteLevelBPE ? pre.split : .none, addPrefixSpace: pre.addPrefixSpace,
                  spacePrefix: spacePrefix, splitOnSpace: splitOnSpace, byteFallback: byteFallback,
                  fuseUnknown: model["fuse_unk"] as? Bool ?? false, ignoreMerges: model["ignore_merges"] as? Bool ?? false,
                  unkTokenId: unk, addedTokenOptions: options)

        // Special tokens: tokenizer_config.json names them; the post-processor says whether BOS/EOS are added.
        func tokenId(_ key: String) -> Int32? {
            var name: String?
            if let s = config[key] as? String { name = s }
            if let d = config[key] as? [String: Any] { name = d["content"] as? String }
            guard let n = name else { return nil }
            return byId.first(where: { $0.value == n }).map { Int32($0.key) }
        }
        let template = Self.templateSpecials(json["post_processor"], byId: byId)
        bosTokenId = tokenId("bos_token") ?? template.first
        eosTokenId = tokenId("eos_token") ?? template.last
        padTokenId = tokenId("pad_token")
        if let u = tokenId("unk_token") { unkTokenId = u }
        addBosToken = config["add_bos_token"] as? Bool ?? (template.first != nil)
        addEosToken = config["add_eos_token"] as? Bool ?? (template.last != nil)
        if let t = config["chat_template"] as? String {
            chatTemplate = t
        } else if let list = config["chat_template"] as? [[String: Any]] {
            chatTemplate = (list.first { $0["name"] as? String == "default" } ?? list.first)?["template"] as? String
        }
        if let e = generationConfig["eos_token_id"], !(e is NSNull) {
            for item in (e as? [Any]) ?? [e] {
                guard let id = Self.checkedId(item), id < count else {
                    throw SFTError.format(path: path, offset: nil, message: "generation_config.json eos_token_id \(item) is not an id in the vocabulary of \(count)")
                }
                endOfTurnTokenIds.append(Int32(id))
            }
        }
        addKnownEndOfTurnTokens()
        if let e = eosTokenId { endOfTurnTokenIds.removeAll { $0 == e } }
        for t in endOfTurnTokenIds where Int(t) >= count || t < 0 { throw fail("eos token id \(t) outside the vocabulary") }
    }

    /// "<0x41>" → 0x41 (SentencePiece byte tokens).
    static func byteTokenValue(_ t: String) -> UInt8? {
        let u = Array(t.utf8)
        guard u.count == 6, u[0] == 0x3C, u[1] == 0x30, u[2] == 0x78, u[5] == 0x3E else { return nil }
        return UInt8(String(decoding: u[3...4], as: UTF8.self), radix: 16)
    }

    private static func mentions(_ obj: [String: Any], type: String) -> Bool {
        if obj["type"] as? String == type { return true }
        for key in ["pretokenizers", "normalizers", "decoders", "processors"] {
            for sub in obj[key] as? [[String: Any]] ?? [] where mentions(sub, type: type) { return true }
        }
        return false
    }

    private struct PreTokenizerInfo {
        var split = PreTokenizer.none
        var byteLevel = false
        var addPrefixSpace = false
        var metaspace: (prefix: SpacePrefix, split: Bool)?
    }

    /// The known regexes, as tokenizer.json spells them.
    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    private static func parsePreTokenizer(_ value: Any?, path: String) throws -> PreTokenizerInfo {
        var info = PreTokenizerInfo()
        guard let obj = value as? [String: Any] else { return info }
        let steps = obj["type"] as? String == "Sequence" ? (obj["pretokenizers"] as? [[String: Any]] ?? []) : [obj]
        var digits = false
        for step in steps {
            switch step["type"] as? String ?? "" {
            case "ByteLevel":
                info.byteLevel = true
                info.addPrefixSpace = step["add_prefix_space"] as? Bool ?? false
                if step["use_regex"] as? Bool ?? true {
                    guard info.split == .none else {
                        throw SFTError.unsupported("\(path): ByteLevel regex after another split")
                    }
                    info.split = .gpt2
                }
            case "Digits":
                guard step["individual_digits"] as? Bool ?? false else {
                    throw SFTError.unsupported("\(path): Digits pre-tokenizer without individual_digits")
                }
                digits = true
            case "Split":
                let pattern = (step["pattern"] as? [String: Any])?["Regex"] as? String
                    ?? (step["pattern"] as? [String: Any])?["String"] as? String ?? ""
                let behavior = step["behavior"] as? String ?? "Isolated"
                guard behavior == "Isolated", !(step["invert"] as? Bool ?? false) else {
                    throw SFTError.unsupported("\(path): Split pre-tokenizer with behavior \(behavior)")
                }
                switch pattern {
                case gpt2Pattern: info.split = .gpt2
                case llama3Pattern: info.split = .llama3
                case qwen2Pattern: info.split = .qwen2
                default: throw SFTError.unsupported("\(path): Split pre-tokenizer regex \(pattern)")
                }
            case "Metaspace":
                let scheme = step["prepend_scheme"] as? String
                    ?? ((step["add_prefix_space"] as? Bool ?? true) ? "always" : "never")
                let prefix: SpacePrefix = scheme == "first" ? .firstUnlessSpace : scheme == "never" ? .never : .alwaysUnlessSpace
                info.metaspace = (prefix, step["split"] as? Bool ?? true)
            default:
                throw SFTError.unsupported("\(path): pre-tokenizer \(step["type"] ?? "?")")
            }
        }
        if digits {
            guard info.split == .gpt2 else { throw SFTError.unsupported("\(path): Digits before a non-GPT-2 split") }
            info.split = .smollm
        }
        return info
    }

    private static func parseNormalizer(_ value: Any?, path: String) throws -> (prepend: Bool, spaceToMeta: Bool) {
        guard let obj = value as? [String: Any] else { return (false, false) }
        let steps = obj["type"] as? String == "Sequence" ? (obj["normalizers"] as? [[String: Any]] ?? []) : [obj]
        var prepend = false, replace = false
        for step in steps {
            switch step["type"] as? String ?? "" {
            case "Prepend":
                guard step["prepend"] as? String == "▁" else { throw SFTError.unsupported("\(path): Prepend normalizer other than ▁") }
                prepend = true
            case "Replace":
                let from = (step["pattern"] as? [String: Any])?["String"] as? String
                guard from == " ", step["content"] as? String == "▁" else {
                    throw SFTError.unsupported("\(path): Replace normalizer other than \" \" → ▁")
                }
                replace = true
            default:
                throw SFTError.unsupported("\(path): normalizer \(step["type"] ?? "?")")
            }
        }
        return (prepend, replace)
    }

    /// The special tokens a TemplateProcessing post-processor puts before and after a single text.
    private static func templateSpecials(_ value: Any?, byId: [Int: String]) -> (first: Int32?, last: Int32?) {
        guard let obj = value as? [String: Any] else { return (nil, nil) }
        if obj["type"] as? String == "Sequence" {
            for p in obj["processors"] as? [[String: Any]] ?? [] {
                let r = templateSpecials(p, byId: byId)
                if r.first != nil || r.last != nil { return r }
            }
            return (nil, nil)
        }
        guard obj["type"] as? String == "TemplateProcessing", let single = obj["single"] as? [[String: Any]] else {
            return (nil, nil)
        }
        func specialId(_ item: [String: Any]) -> Int32? {
            guard let s = item["SpecialToken"] as? [String: Any], let name = s["id"] as? String else { return nil }
            if let entry = (obj["special_tokens"] as? [String: Any])?[name] as? [String: Any],
               let ids = entry["ids"] as? [Any], let first = ids.first {
                // Out-of-range ids become -1, which the vocabulary check refuses by name.
                return Self.checkedId(first).map { Int32($0) } ?? -1
            }
            return byId.first(where: { $0.value == name }).map { Int32($0.key) }
        }
        let first = single.first.flatMap(specialId)
        let last = single.count > 1 ? single.last.flatMap(specialId) : nil
        return (first, last)
    }
}
