// Tokenizer: text ↔ token ids for byte-level BPE (GPT-2, Llama-3, SmolLM, Qwen2) and
// SentencePiece-style BPE with byte fallback (Llama-2, Mistral), matching HF tokenizers (and
// sentencepiece / llama.cpp for GGUF "llama" vocabularies) id for id.
//
// Encoding: special/added tokens are cut out of the text first (longest match at the leftmost
// position); each remaining segment is pre-tokenized (byte-level) or turned into "▁" text
// (SentencePiece), then merged by BPE. Byte-level words are cached (word bytes → ids).
// Offsets are UTF-8 byte ranges into the input text.
import Foundation
import SFTKernels

/// A BPE tokenizer loaded from tokenizer.json or GGUF metadata.
///
/// ```swift
/// let tok = try Tokenizer(url: Assets.smolLM2)          // a .gguf file or an HF folder
/// let ids = tok.encode("<|im_start|>user\nHi<|im_end|>")
/// let text = tok.decode(ids)
/// ```
///
/// Thread-safe: calls may come from several threads; encodes share one word cache under a lock.
public final class Tokenizer: @unchecked Sendable {
    /// The spec this tokenizer was built from.
    public let spec: TokenizerSpec
    /// The number of token ids (ids run from 0 to vocabSize - 1), added and special tokens
    /// included.
    public var vocabSize: Int { spec.tokens.count }
    /// The beginning-of-sequence token (`<s>`, `<|begin_of_text|>`), nil when the vocabulary has
    /// none.
    public var bosTokenId: Int32? { spec.bosTokenId }
    /// The end-of-sequence token, nil when the vocabulary has none; see also `eosTokenIds`.
    public var eosTokenId: Int32? { spec.eosTokenId }
    /// The padding token, nil when the tokenizer files set none.
    public var padTokenId: Int32? { spec.padTokenId }
    /// The unknown token that stands for text the vocabulary cannot spell, nil when the tokenizer
    /// files set none.
    public var unkTokenId: Int32? { spec.unkTokenId }
    /// EOS plus the end-of-turn tokens (<|im_end|>, <|eot_id|>, ...) known for this vocabulary:
    /// generation stops at any of them.
    public let eosTokenIds: [Int32]
    /// Whether `encode(addSpecialTokens: true)` puts BOS first.
    public var addBosToken: Bool { spec.addBosToken }
    /// Whether `encode(addSpecialTokens: true)` puts EOS last.
    public var addEosToken: Bool { spec.addEosToken }
    /// The Jinja chat template, when the tokenizer files carry one.
    public var chatTemplate: String? { spec.chatTemplate }

    private let isByteLevel: Bool
    private let scanner: PreTokenizerScanner
    private let merges: PairMap
    /// Byte-level: raw bytes of normal tokens → id (for ignore_merges). SentencePiece: token
    /// string → id for every token but byte tokens (characters and merge results).
    private let pieceMap: ByteKeyMap
    /// Stored token string (UTF-8) → id, for `id(of:)`.
    private let stringMap: ByteKeyMap
    /// byte → its byte-level token / its <0xXX> token (-1 when absent).
    private let byteToken: [Int32]
    /// Decoded bytes of each token: arena + starts (count + 1 entries).
    private let decodeArena: [UInt8]
    private let decodeStart: [Int32]
    /// Dropped by decode(skipSpecialTokens: true).
    private let skippable: [Bool]
    /// SentencePiece decoding drops the space the encoder prepended.
    private let stripsLeadingSpace: Bool
    private let specials: SpecialTokenMatcher

    private let lock = NSLock()
    private var state = EncoderState()

    /// Builds the tokenizer's tables. Throws when the spec is inconsistent (a merge naming an
    /// unknown token, ids outside the vocabulary).
    public init(spec: TokenizerSpec) throws {
        self.spec = spec
        let n = spec.tokens.count
        func bad(_ field: String, _ m: String) -> SFTError { SFTError.config(field: field, message: m) }
        guard n <= TokenizerSpec.maxVocabularySize else {
            throw bad("tokenizer.tokens", "\(n) tokens, more than the \(TokenizerSpec.maxVocabularySize) sft accepts")
        }
        guard n > 0, spec.tokenTypes.count == n else {
            throw bad("tokenizer.tokens", "\(n) tokens but \(spec.tokenTypes.count) token types")
        }
        for (name, id) in [("bos", spec.bosTokenId), ("eos", spec.eosTokenId), ("pad", spec.padTokenId), ("unk", spec.unkTokenId)] {
            if let id, id < 0 || Int(id) >= n { throw bad("tokenizer.\(name)_token_id", "id \(id) outside the vocabulary of \(n)") }
        }
        if spec.addBosToken && spec.bosTokenId == nil { throw bad("tokenizer.add_bos_token", "set, but no BOS token") }
        if spec.addEosToken && spec.eosTokenId == nil { throw bad("tokenizer.add_eos_token", "set, but no EOS token") }
        isByteLevel = spec.model == .byteLevelBPE
        scanner = PreTokenizerScanner(kind: isByteLevel ? spec.preTokenizer : .none)

        var stringMap = ByteKeyMap(capacity: n)
        var pieceMap = ByteKeyMap(capacity: isByteLevel ? (spec.ignoreMerges ? n : 1) : n)
        var byteToken = [Int32](repeating: -1, count: 256)
        var arena: [UInt8] = []
        var starts: [Int32] = [0]
        var skippable = [Bool](repeating: false, count: n)
        arena.reserveCapacity(n * 6)
        for (i, token) in spec.tokens.enumerated() {
            let type = spec.tokenTypes[i]
            let id = Int32(i)
            stringMap.insert(Array(token.utf8), value: id)
            skippable[i] = type == .control || type == .unknown
            var out: [UInt8]
            let literal = type == .control || type == .userDefined || type == .unused
            if isByteLevel {
                let raw = literal ? nil : ByteLevelMap.bytes(of: token)
                out = raw ?? Array(token.utf8)
                if let raw {
                    if raw.count == 1, byteToken[Int(raw[0])] < 0 { byteToken[Int(raw[0])] = id }
                    if spec.ignoreMerges && type == .normal { pieceMap.insert(raw, value: id) }
                }
            } else if type == .byte, let b = TokenizerSpec.byteTokenValue(token) {
                out = [b]
                if byteToken[Int(b)] < 0 { byteToken[Int(b)] = id }
            } else {
                pieceMap.insert(Array(token.utf8), value: id)
                out = literal || type == .unknown ? Array(token.utf8) : Self.metaToSpace(token)
            }
            arena += out
            starts.append(Int32(arena.count))
        }
        if !isByteLevel && spec.byteFallback && byteToken.contains(-1) {
            throw bad("tokenizer.tokens", "byte fallback is on but some <0xXX> byte tokens are missing")
        }

        // Merges → (left id, right id) → (rank, merged id).
        var pairs = PairMap(capacity: max(spec.merges.count, 16))
        if let scores = spec.scores, spec.merges.isEmpty {
            guard scores.count == n else { throw bad("tokenizer.ggml.scores", "\(scores.count) scores for \(n) tokens") }
            pairs = Self.mergesFromScores(spec: spec, scores: scores, pieceMap: pieceMap)
        } else {
            for (rank, (a, b)) in spec.merges.enumerated() {
                guard let l = stringMap.get(Array(a.utf8)), let r = stringMap.get(Array(b.utf8)) else {
                    throw bad("tokenizer.merges", "merge \(rank) '\(a) \(b)' names a token not in the vocabulary")
                }
                guard let m = stringMap.get(Array((a + b).utf8)) else {
                    throw bad("tokenizer.merges", "merge \(rank) '\(a) \(b)': '\(a + b)' is not in the vocabulary")
                }
                pairs.insert(left: l, right: r, rank: Int32(rank), result: m)
            }
        }
        merges = pairs
        self.stringMap = stringMap
        self.pieceMap = pieceMap
        self.byteToken = byteToken
        decodeArena = arena
        decodeStart = starts
        self.skippable = skippable
        stripsLeadingSpace = !isByteLevel && spec.spacePrefix != .never
        specials = SpecialTokenMatcher(spec: spec)
        var stops: [Int32] = []
        if let e = spec.eosTokenId { stops.append(e) }
        for t in spec.endOfTurnTokenIds where !stops.contains(t) { stops.append(t) }
        eosTokenIds = stops
    }

    /// Loads the tokenizer of a GGUF file or an HF model folder (tokenizer.json and
    /// tokenizer_config.json), or a tokenizer.json file.
    public convenience init(url: URL) throws {
        if url.pathExtension.lowercased() == "gguf" {
            try self.init(spec: TokenizerSpec(gguf: GGUFFile(url: url)))
        } else {
            try self.init(spec: TokenizerSpec(huggingFace: url))
        }
    }

    private static func metaToSpace(_ token: String) -> [UInt8] {
        var out: [UInt8] = []
        let u = Array(token.utf8)
        var i = 0
        while i < u.count {
            if i + 2 < u.count && u[i] == 0xE2 && u[i + 1] == 0x96 && u[i + 2] == 0x81 { out.append(0x20); i += 3 } else {
                out.append(u[i]); i += 1
            }
        }
        return out
    }

    /// SentencePiece scores → merges: a pair merges when its concatenation is a normal token;
    /// the rank orders merged tokens by score, highest first (equal scores share a rank, so the
    /// leftmost pair wins, as in sentencepiece).
    private static func mergesFromScores(spec: TokenizerSpec, scores: [Float], pieceMap: ByteKeyMap) -> PairMap {
        let n = spec.tokens.count
        let order = (0..<n).filter { spec.tokenTypes[$0] == .normal }.sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
        var rank = [Int32](repeating: 0, count: n)
        var r: Int32 = -1
        var last = Float.nan
        for id in order {
            if scores[id] != last { r += 1; last = scores[id] }
            rank[id] = r
        }
        var pairs = PairMap(capacity: n * 2)
        for id in order {
            let u = Array(spec.tokens[id].utf8)
            guard u.count > 1 else { continue }
            u.withUnsafeBufferPointer { b in
                let p = b.baseAddress!
                var k = 1
                while k < u.count {
                    if (u[k] & 0xC0) != 0x80,  // split only at character boundaries
                       let l = pieceMap.get(p, k), spec.tokenTypes[Int(l)] == .normal,
                       let rr = pieceMap.get(p + k, u.count - k), spec.tokenTypes[Int(rr)] == .normal {
                        pairs.insert(left: l, right: rr, rank: rank[id], result: Int32(id))
                    }
                    k += 1
                }
            }
        }
        return pairs
    }

    // MARK: - Lookup

    /// The token's string as stored in the vocabulary ("Ġthe", "▁the", "<|im_end|>").
    public func tokenString(_ id: Int32) -> String? {
        id >= 0 && Int(id) < spec.tokens.count ? spec.tokens[Int(id)] : nil
    }

    /// The id of a token string as stored in the vocabulary.
    public func id(of token: String) -> Int32? { stringMap.get(Array(token.utf8)) }

    /// Whether the id is a special (control) token, dropped by `decode(skipSpecialTokens: true)`.
    public func isSpecial(_ id: Int32) -> Bool { id >= 0 && Int(id) < skippable.count && skippable[Int(id)] }

    // MARK: - Encoding

    /// Token ids of `text`. Special-token strings in the text (`<|im_start|>`) become their
    /// tokens unless `parseSpecialTokens` is false; `addSpecialTokens` adds BOS/EOS as the
    /// tokenizer is configured to.
    public func encode(_ text: String, addSpecialTokens: Bool = true, parseSpecialTokens: Bool = true) -> [Int32] {
        withUTF8(text) { p, n in
            var ids: [Int32] = []
            ids.reserveCapacity(n / 3 + 4)
            var none: [Range<Int>] = []
            encode(p, n, addSpecial: addSpecialTokens, parseSpecial: parseSpecialTokens, ids: &ids, offsets: &none, wantOffsets: false)
            return ids
        }
    }

    /// Token ids with the UTF-8 byte range of `text` each came from. Tokens the tokenizer adds
    /// (BOS, EOS) get empty ranges at the start / end. A token holding part of a character (a
    /// byte token) gets that part's bytes; for byte-level models the ranges tile the text.
    public func encodeWithOffsets(_ text: String, addSpecialTokens: Bool, parseSpecialTokens: Bool = true)
        -> (ids: [Int32], offsets: [Range<Int>]) {
        withUTF8(text) { p, n in
            var ids: [Int32] = []
            var offsets: [Range<Int>] = []
            encode(p, n, addSpecial: addSpecialTokens, parseSpecial: parseSpecialTokens, ids: &ids, offsets: &offsets, wantOffsets: true)
            return (ids, offsets)
        }
    }

    private func withUTF8<R>(_ text: String, _ body: (UnsafePointer<UInt8>, Int) -> R) -> R {
        if let r = text.utf8.withContiguousStorageIfAvailable({ b in
            b.baseAddress.map { body($0, b.count) }
        }), let r { return r }
        return withBytes(Array(text.utf8), body)
    }

    private func encode(_ p: UnsafePointer<UInt8>, _ n: Int, addSpecial: Bool, parseSpecial: Bool,
                        ids: inout [Int32], offsets: inout [Range<Int>], wantOffsets: Bool) {
        lock.lock()
        defer { lock.unlock() }
        if addSpecial && spec.addBosToken, let bos = spec.bosTokenId {
            ids.append(bos)
            if wantOffsets { offsets.append(0..<0) }
        }
        var segStart = 0
        if parseSpecial && !specials.isEmpty {
            var i = 0
            while i < n {
                guard let (id, len) = specials.match(p, i, n) else { i += 1; continue }
                var s = i, e = i + len
                if let o = spec.addedTokenOptions[id] {
                    if o.lstrip { s = specials.whitespaceStart(p, s, floor: segStart) }
                    if o.rstrip { e = specials.whitespaceEnd(p, e, n) }
                }
                encodeSegment(p, segStart, s, ids: &ids, offsets: &offsets, wantOffsets: wantOffsets)
                ids.append(id)
                if wantOffsets { offsets.append(s..<e) }
                segStart = e
                i = e
            }
        }
        encodeSegment(p, segStart, n, ids: &ids, offsets: &offsets, wantOffsets: wantOffsets)
        if addSpecial && spec.addEosToken, let eos = spec.eosTokenId {
            ids.append(eos)
            if wantOffsets { offsets.append(n..<n) }
        }
        if state.cacheEntries > 500_000 { state.clearCache() }
    }

    private func encodeSegment(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int,
                               ids: inout [Int32], offsets: inout [Range<Int>], wantOffsets: Bool) {
        guard start < end else { return }
        if isByteLevel {
            if spec.addPrefixSpace && p[start] != 0x20 {
                // HF ByteLevel(add_prefix_space): the text is split as if it began with a space.
                var buf = [UInt8](repeating: 0x20, count: end - start + 1)
                for k in start..<end { buf[k - start + 1] = p[k] }
                withBytes(buf) { b, m in
                    encodeByteLevel(b, 0, m, shift: start - 1, floor: start, ids: &ids, offsets: &offsets, wantOffsets: wantOffsets)
                }
            } else {
                encodeByteLevel(p, start, end, shift: 0, floor: start, ids: &ids, offsets: &offsets, wantOffsets: wantOffsets)
            }
        } else {
            encodeSentencePiece(p, start, end, ids: &ids, offsets: &offsets, wantOffsets: wantOffsets)
        }
    }

    /// Byte-level: pre-tokenize, then each piece via the word cache or BPE. `shift` maps buffer
    /// positions to text positions (they differ when a prefix space was added); `floor` is the
    /// segment start, which no offset may precede.
    private func encodeByteLevel(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int, shift: Int, floor: Int,
                                 ids: inout [Int32], offsets: inout [Range<Int>], wantOffsets: Bool) {
        var i = start
        while i < end {
            let j = scanner.next(p, i, end)
            encodeWord(p + i, j - i, at: i + shift, floor: floor, ids: &ids, offsets: &offsets, wantOffsets: wantOffsets)
            i = j
        }
    }

    /// One pre-tokenized piece. A byte missing from the vocabulary (SmolLM2 lacks 21 of them,
    /// bytes that valid UTF-8 never holds) is dropped, as HF tokenizers (no unk token) and
    /// llama.cpp do; such words are not cached, so cached words tile exactly.
    @inline(__always)
    private func encodeWord(_ w: UnsafePointer<UInt8>, _ n: Int, at base: Int, floor: Int,
                            ids: inout [Int32], offsets: inout [Range<Int>], wantOffsets: Bool) {
        if n == 1 {
            let id = byteToken[Int(w[0])]
            guard id >= 0 else { return }
            ids.append(id)
            if wantOffsets { offsets.append(max(base, floor)..<(base + 1)) }
            return
        }
        let first = ids.count
        if let e = state.cache.get(w, n) {
            let s = Int(state.cacheStart[Int(e)]), c = Int(state.cacheCount[Int(e)])
            state.cacheIds.withUnsafeBufferPointer { ids.append(contentsOf: $0[s..<(s + c)]) }
        } else if spec.ignoreMerges, let id = pieceMap.get(w, n) {
            ids.append(id)
            state.remember(w, n, ids[first...])
        } else {
            state.merger.reset()
            var complete = true
            for k in 0..<n {
                let id = byteToken[Int(w[k])]
                if id >= 0 { state.merger.append(id: id, start: k) } else { complete = false }
            }
            state.merger.merge(merges)
            ids.append(contentsOf: state.merger.ids)
            if complete {
                state.remember(w, n, ids[first...])
            } else {
                if wantOffsets {
                    for (k, s) in state.merger.starts.enumerated() {
                        let len = tokenByteCount(state.merger.ids[k])
                        offsets.append(max(base + Int(s), floor)..<(base + Int(s) + len))
                    }
                }
                return
            }
        }
        if wantOffsets {
            var pos = base
            for k in first..<ids.count {
                let len = tokenByteCount(ids[k])
                offsets.append(max(pos, floor)..<max(pos + len, floor))
                pos += len
            }
        }
    }

    @inline(__always)
    private func tokenByteCount(_ id: Int32) -> Int { Int(decodeStart[Int(id) + 1] - decodeStart[Int(id)]) }

    /// SentencePiece: spaces → "▁", the "▁" prefix, characters (or their bytes) → BPE.
    private func encodeSentencePiece(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int,
                                     ids: inout [Int32], offsets: inout [Range<Int>], wantOffsets: Bool) {
        let meta: [UInt8] = [0xE2, 0x96, 0x81]
        var text: [UInt8] = []
        var origin: [Int32] = []  // text position of each normalized byte; -1 for the prefix
        text.reserveCapacity((end - start) + 8)
        let prefix: Bool
        switch spec.spacePrefix {
        case .never: prefix = false
        case .always: prefix = true
        case .alwaysUnlessSpace: prefix = p[start] != 0x20
        case .firstUnlessSpace: prefix = start == 0 && p[start] != 0x20
        }
        if prefix { text += meta; origin += [-1, -1, -1] }
        for k in start..<end {
            if p[k] == 0x20 { text += meta; origin += [Int32(k), Int32(k), Int32(k)] } else {
                text.append(p[k]); origin.append(Int32(k))
            }
        }
        // Words: the whole text, or (Metaspace split) a new word before every "▁".
        var wordStart = 0
        text.withUnsafeBufferPointer { tb in
            let t = tb.baseAddress!
            let m = tb.count
            var k = 0
            while k <= m {
                let boundary = k == m || (spec.splitOnSpace && k > wordStart && k + 2 < m && t[k] == 0xE2 && t[k + 1] == 0x96 && t[k + 2] == 0x81)
                if boundary {
                    encodeSentencePieceWord(t, wordStart, k, origin: origin, segmentStart: start,
                                            ids: &ids, offsets: &offsets, wantOffsets: wantOffsets)
                    wordStart = k
                }
                k += 1
            }
        }
    }

    private func encodeSentencePieceWord(_ t: UnsafePointer<UInt8>, _ start: Int, _ end: Int, origin: [Int32], segmentStart: Int,
                                         ids: inout [Int32], offsets: inout [Range<Int>], wantOffsets: Bool) {
        guard start < end else { return }
        state.merger.reset()
        var k = start
        var lastWasUnknown = false
        while k < end {
            let (_, len) = decodeUTF8(t, k)
            if let id = pieceMap.get(t + k, len), spec.tokenTypes[Int(id)] != .unknown {
                state.merger.append(id: id, start: k)
                lastWasUnknown = false
            } else if spec.byteFallback {
                for b in 0..<len { state.merger.append(id: byteToken[Int(t[k + b])], start: k + b) }
                lastWasUnknown = false
            } else if let unk = spec.unkTokenId {
                if !(spec.fuseUnknown && lastWasUnknown) { state.merger.append(id: unk, start: k) }
                lastWasUnknown = true
            }
            k += len
        }
        state.merger.merge(merges)
        ids.append(contentsOf: state.merger.ids)
        guard wantOffsets else { return }
        let starts = state.merger.starts
        for (j, s) in starts.enumerated() {
            let e = j + 1 < starts.count ? Int(starts[j + 1]) : end
            var lo = Int.max, hi = Int.min
            for q in Int(s)..<e where origin[q] >= 0 { lo = min(lo, Int(origin[q])); hi = max(hi, Int(origin[q]) + 1) }
            offsets.append(lo <= hi ? lo..<hi : segmentStart..<segmentStart)
        }
    }

    // MARK: - Decoding

    /// The text of `ids`. Bytes that do not form valid UTF-8 become U+FFFD; ids outside the
    /// vocabulary are ignored. SentencePiece models drop the space their encoder prepended.
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = false) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        var first = true
        for id in ids {
            guard id >= 0, Int(id) < skippable.count else { continue }
            if skipSpecialTokens && skippable[Int(id)] { continue }
            appendBytes(of: id, to: &bytes, first: first)
            first = false
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The decoded bytes of one token (the whole token; no prefix-space handling).
    public func bytes(of id: Int32) -> [UInt8] {
        guard id >= 0, Int(id) < skippable.count else { return [] }
        return Array(decodeArena[Int(decodeStart[Int(id)])..<Int(decodeStart[Int(id) + 1])])
    }

    /// Appends a token's bytes; `first` marks the first token of a decoded text, whose leading
    /// space a SentencePiece model added itself.
    fileprivate func appendBytes(of id: Int32, to out: inout [UInt8], first: Bool) {
        var s = Int(decodeStart[Int(id)])
        let e = Int(decodeStart[Int(id) + 1])
        if first && stripsLeadingSpace && spec.tokenTypes[Int(id)] == .normal && s < e && decodeArena[s] == 0x20 { s += 1 }
        out.append(contentsOf: decodeArena[s..<e])
    }

    fileprivate func isValidId(_ id: Int32) -> Bool { id >= 0 && Int(id) < skippable.count }

    /// A decoder for streaming generation: feed ids one at a time, get text as soon as it is
    /// complete UTF-8.
    public func streamingDecoder(skipSpecialTokens: Bool = false) -> StreamingDecoder {
        StreamingDecoder(tokenizer: self, skipSpecialTokens: skipSpecialTokens)
    }
}

/// Turns a stream of token ids into text pieces. A character whose bytes are split across
/// tokens (byte tokens, emoji in byte-level vocabularies) is held back until complete.
///
/// ```swift
/// var d = tokenizer.streamingDecoder()
/// for id in generated { print(d.push(id), terminator: "") }
/// print(d.finish())
/// ```
public struct StreamingDecoder {
    private let tokenizer: Tokenizer
    private let skipSpecialTokens: Bool
    private var pending: [UInt8] = []
    private var first = true

    /// A decoder with nothing pending.
    /// - Parameters:
    ///   - tokenizer: the tokenizer whose ids will be pushed.
    ///   - skipSpecialTokens: leave control tokens out of the text, as `decode(_:skipSpecialTokens:)` does.
    public init(tokenizer: Tokenizer, skipSpecialTokens: Bool = false) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
    }

    /// Adds one token; returns the text completed by it (often "", or several characters).
    public mutating func push(_ id: Int32) -> String {
        guard tokenizer.isValidId(id), !(skipSpecialTokens && tokenizer.isSpecial(id)) else { return "" }
        tokenizer.appendBytes(of: id, to: &pending, first: first)
        first = false
        let cut = Self.completePrefix(pending)
        guard cut > 0 else { return "" }
        let text = String(decoding: pending[..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return text
    }

    /// The held-back bytes, if any, as text (an incomplete character becomes U+FFFD).
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return pending.isEmpty ? "" : String(decoding: pending, as: UTF8.self)
    }

    /// Length of the longest prefix that does not end inside a possibly incomplete UTF-8
    /// sequence. Invalid bytes count as complete (they decode to U+FFFD right away).
    static func completePrefix(_ b: [UInt8]) -> Int {
        let n = b.count
        var k = n - 1
        // Find the last lead byte within the last 4 bytes.
        while k >= 0 && k >= n - 4 && (b[k] & 0xC0) == 0x80 { k -= 1 }
        guard k >= 0 && k >= n - 4 else { return n }
        let lead = b[k]
        let need: Int
        if lead < 0x80 { need = 1 } else if lead >= 0xC2 && lead < 0xE0 { need = 2 } else if lead >= 0xE0 && lead < 0xF0 { need = 3 } else if lead >= 0xF0 && lead < 0xF5 { need = 4 } else { return n }
        return n - k < need ? k : n
    }
}

/// Finds special/added tokens in text: the longest token starting at a position.
struct SpecialTokenMatcher {
    /// Candidate (bytes, id) lists by first byte, longest first.
    private var byFirstByte: [[(bytes: [UInt8], id: Int32)]] = Array(repeating: [], count: 256)
    private(set) var isEmpty = true

    init(spec: TokenizerSpec) {
        for (i, t) in spec.tokens.enumerated() {
            let type = spec.tokenTypes[i]
            guard type == .control || type == .userDefined, !t.isEmpty else { continue }
            let u = Array(t.utf8)
            byFirstByte[Int(u[0])].append((u, Int32(i)))
            starts[Int(u[0])] = true
            isEmpty = false
        }
        for b in 0..<256 where byFirstByte[b].count > 1 {
            byFirstByte[b].sort { $0.bytes.count > $1.bytes.count || ($0.bytes.count == $1.bytes.count && $0.id < $1.id) }
        }
    }

    /// Whether any special token starts with the byte (the quick test run on every byte).
    private var starts = [Bool](repeating: false, count: 256)

    @inline(__always)
    func match(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int) -> (Int32, Int)? {
        guard starts[Int(p[i])] else { return nil }
        let list = byFirstByte[Int(p[i])]
        for c in list where c.bytes.count <= n - i {
            let ok = c.bytes.withUnsafeBufferPointer { memcmpBytes($0.baseAddress!, p + i, c.bytes.count) }
            if ok { return (c.id, c.bytes.count) }
        }
        return nil
    }

    /// Start of the whitespace run that ends at `i` (not before `floor`).
    func whitespaceStart(_ p: UnsafePointer<UInt8>, _ i: Int, floor: Int) -> Int {
        var s = i
        while s > floor {
            var q = s - 1
            while q > floor && (p[q] & 0xC0) == 0x80 { q -= 1 }
            let (c, _) = decodeUTF8(p, q)
            guard UnicodeClass.classify(c) == UnicodeClass.space else { break }
            s = q
        }
        return s
    }

    /// End of the whitespace run that starts at `i`.
    func whitespaceEnd(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int) -> Int {
        var e = i
        while e < n {
            let (c, len) = decodeUTF8(p, e)
            guard UnicodeClass.classify(c) == UnicodeClass.space else { break }
            e += len
        }
        return e
    }
}

/// Mutable per-tokenizer encoding state, used under the tokenizer's lock.
struct EncoderState {
    var merger = BPEMerger()
    /// Word cache: word bytes → entry; entry → a run in cacheIds.
    var cache = ByteKeyMap(capacity: 1 << 14)
    var cacheStart: [Int32] = []
    var cacheCount: [Int32] = []
    var cacheIds: [Int32] = []
    var cacheEntries: Int { cacheStart.count }

    mutating func remember(_ w: UnsafePointer<UInt8>, _ n: Int, _ ids: ArraySlice<Int32>) {
        let entry = Int32(cacheStart.count)
        cacheStart.append(Int32(cacheIds.count))
        cacheCount.append(Int32(ids.count))
        cacheIds.append(contentsOf: ids)
        cache.insert(w, n, value: entry)
    }

    mutating func clearCache() {
        cache.removeAll()
        cacheStart.removeAll(keepingCapacity: true)
        cacheCount.removeAll(keepingCapacity: true)
        cacheIds.removeAll(keepingCapacity: true)
    }
}
