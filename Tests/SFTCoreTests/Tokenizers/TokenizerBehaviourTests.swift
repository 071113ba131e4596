// Behaviour the golden ids do not show: offsets that map tokens back to text bytes, decode
// round trips, the streaming decoder on characters split across tokens, invalid UTF-8, special
// token matching, special-token metadata, and clear errors for malformed tokenizer files.
import Synchronization
import XCTest
import SFTCore
import SFTKernels

final class TokenizerBehaviourTests: XCTestCase {
    let byteLevelFixtures = ["gpt2", "llama3"]
    let sentencePieceFixtures = ["sp_legacy", "sp_metaspace", "sp_gguf/tokenizer.gguf"]

    func fixtureTokenizer(_ name: String) throws -> Tokenizer { try Tokenizer(url: fixtureURL(name)) }

    func goldenTexts(_ name: String) throws -> [String] {
        try loadGolden(String(name.split(separator: "/")[0])).map(\.text)
    }

    /// Checks that the non-empty ranges tile the text in order and that empty ranges are only
    /// for tokens the tokenizer added (BOS/EOS) or a prepended "▁".
    func assertTiles(_ tok: Tokenizer, _ text: String, _ ids: [Int32], _ offsets: [Range<Int>],
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(ids.count, offsets.count, file: file, line: line)
        var pos = 0
        for (id, r) in zip(ids, offsets) {
            if r.isEmpty {
                let added = (id == tok.bosTokenId && r.lowerBound == 0) || tok.tokenString(id) == "▁"
                XCTAssertTrue(added, "empty range for token \(tok.tokenString(id) ?? "?") in \(text.debugDescription)",
                              file: file, line: line)
                continue
            }
            XCTAssertEqual(r.lowerBound, pos, "gap/overlap before \(tok.tokenString(id) ?? "?") in \(text.debugDescription)",
                           file: file, line: line)
            pos = r.upperBound
        }
        XCTAssertEqual(pos, text.utf8.count, "ranges do not reach the end of \(text.debugDescription)", file: file, line: line)
    }

    func testByteLevelOffsetsTileTheTextAndHoldEachTokensBytes() throws {
        var tokenizers = try byteLevelFixtures.map { ($0, try fixtureTokenizer($0)) }
        if FileManager.default.fileExists(atPath: Assets.smolLM2.path) { tokenizers.append(("smollm2", try smolLM2Tokenizer())) }
        for (name, tok) in tokenizers {
            for text in try goldenTexts(name) {
                let (ids, offsets) = tok.encodeWithOffsets(text, addSpecialTokens: true)
                XCTAssertEqual(ids, tok.encode(text), "offsets path gives other ids: \(name)")
                assertTiles(tok, text, ids, offsets)
                let bytes = Array(text.utf8)
                for (id, r) in zip(ids, offsets) where !r.isEmpty {
                    var covered = Array(bytes[r])
                    if tok.isSpecial(id) {  // lstrip/rstrip tokens also cover the whitespace they swallow
                        covered = Array(String(decoding: covered, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines).utf8)
                    }
                    XCTAssertEqual(covered, tok.bytes(of: id), "\(name): token \(tok.tokenString(id) ?? "?") range \(r)")
                }
            }
        }
    }

    func testSentencePieceOffsetsTileTheText() throws {
        for name in sentencePieceFixtures {
            let tok = try fixtureTokenizer(name)
            for text in try goldenTexts(name) {
                let (ids, offsets) = tok.encodeWithOffsets(text, addSpecialTokens: true)
                XCTAssertEqual(ids, tok.encode(text), "offsets path gives other ids: \(name)")
                assertTiles(tok, text, ids, offsets)
            }
        }
    }

    /// SmolLM2's vocabulary lacks 21 byte tokens (bytes valid UTF-8 never holds, and a few
    /// control characters); like HF tokenizers and llama.cpp, the tokenizer drops them.
    func testSmolLM2DropsBytesMissingFromItsVocabulary() throws {
        let tok = try smolLM2Tokenizer()
        let (ids, offsets) = tok.encodeWithOffsets("a\u{04}b\u{05}", addSpecialTokens: false)
        XCTAssertEqual(ids, [81, 82, 194])  // HF tokenizers 0.23.3 on the same vocabulary
        XCTAssertEqual(offsets, [0..<1, 2..<3, 3..<4])
    }

    func testDecodeInvertsEncode() throws {
        var tokenizers = try (byteLevelFixtures + ["sp_legacy", "sp_gguf/tokenizer.gguf"]).map { ($0, try fixtureTokenizer($0)) }
        if FileManager.default.fileExists(atPath: Assets.smolLM2.path) { tokenizers.append(("smollm2", try smolLM2Tokenizer())) }
        for (name, tok) in tokenizers {
            // <mask> and <sep> swallow the whitespace beside them (lstrip / rstrip): lossy by design.
            for text in try goldenTexts(name) where !text.contains("<mask>") && !text.contains("<sep>") {
                XCTAssertEqual(tok.decode(tok.encode(text, addSpecialTokens: false)), text, "\(name)")
            }
        }
    }

    func testStreamingDecoderHoldsBackCharactersSplitAcrossTokens() throws {
        var heldBack = 0
        for name in ["sp_legacy", "gpt2", "sp_gguf/tokenizer.gguf"] {
            let tok = try fixtureTokenizer(name)
            for text in try goldenTexts(name) {
                let ids = tok.encode(text)
                var d = tok.streamingDecoder()
                var streamed = ""
                for id in ids {
                    let piece = d.push(id)
                    XCTAssertFalse(piece.unicodeScalars.contains("\u{FFFD}"), "\(name): partial character emitted for \(text.debugDescription)")
                    if piece.isEmpty && !tok.bytes(of: id).isEmpty { heldBack += 1 }
                    streamed += piece
                }
                streamed += d.finish()
                XCTAssertEqual(streamed, tok.decode(ids), "\(name): streamed text differs for \(text.debugDescription)")
            }
        }
        XCTAssertGreaterThan(heldBack, 20, "the texts should split many characters across byte tokens")

        // One character, three byte tokens: nothing until the third.
        let tok = try fixtureTokenizer("sp_legacy")
        let bytes = Array("語".utf8).map { tok.id(of: "<0x" + String($0, radix: 16, uppercase: true) + ">")! }
        var d = tok.streamingDecoder()
        XCTAssertEqual(d.push(bytes[0]), "")
        XCTAssertEqual(d.push(bytes[1]), "")
        XCTAssertEqual(d.push(bytes[2]), "語")
        XCTAssertEqual(d.finish(), "")
    }

    func testInvalidUTF8DecodesToReplacementCharacters() throws {
        let sp = try fixtureTokenizer("sp_legacy")
        let e6 = try XCTUnwrap(sp.id(of: "<0xE6>"))
        let ff = try XCTUnwrap(sp.id(of: "<0xFF>"))
        let a = try XCTUnwrap(sp.id(of: "a"))
        XCTAssertEqual(sp.decode([e6]), "\u{FFFD}")
        XCTAssertEqual(sp.decode([a, e6, a]), "a\u{FFFD}a")
        XCTAssertEqual(sp.decode([ff, a]), "\u{FFFD}a")
        XCTAssertEqual(sp.decode([-1, 1_000_000, a]), "a", "ids outside the vocabulary are ignored")
        var d = sp.streamingDecoder()
        XCTAssertEqual(d.push(e6), "")
        XCTAssertEqual(d.push(a), "\u{FFFD}a", "an interrupted sequence is emitted as U+FFFD once the next byte shows it")
        XCTAssertEqual(d.push(ff), "\u{FFFD}", "an impossible byte is emitted at once")
        XCTAssertEqual(d.push(e6), "")
        XCTAssertEqual(d.finish(), "\u{FFFD}", "finish flushes an incomplete character")

        let bl = try fixtureTokenizer("gpt2")
        let lone = try XCTUnwrap(bl.id(of: "æ"))  // byte 0xE6 in the byte-level map
        XCTAssertEqual(bl.decode([lone]), "\u{FFFD}")
    }

    func testSpecialTokensMatchLongestFirstAndCanBeTreatedAsText() throws {
        // 256 byte tokens, no merges, two specials where one is a prefix of the other.
        var tokens = (0..<256).map { String(Character(Unicode.Scalar(byteLevelScalar(UInt8($0)))!)) }
        tokens += ["<|a|>", "<|a|>b"]
        var types = [TokenizerSpec.TokenType](repeating: .normal, count: 256)
        types += [.control, .control]
        let tok = try Tokenizer(spec: TokenizerSpec(model: .byteLevelBPE, tokens: tokens, tokenTypes: types, preTokenizer: .gpt2))
        XCTAssertEqual(tok.encode("x<|a|>by"), [120, 257, 121])
        XCTAssertEqual(tok.encode("x<|a|>y"), [120, 256, 121])
        XCTAssertEqual(tok.encode("<|a|", addSpecialTokens: false), [60, 124, 97, 124])
        XCTAssertEqual(tok.encode("x<|a|>y", parseSpecialTokens: false).count, 7)
        XCTAssertEqual(tok.decode([120, 257, 121]), "x<|a|>by")
        XCTAssertEqual(tok.decode([120, 257, 121], skipSpecialTokens: true), "xy")
    }

    /// GPT-2's byte → character map (printable Latin-1 maps to itself).
    func byteLevelScalar(_ b: UInt8) -> UInt32 {
        var extra: UInt32 = 256
        for x in 0..<256 {
            let printable = (0x21...0x7E).contains(x) || (0xA1...0xAC).contains(x) || (0xAE...0xFF).contains(x)
            if x == Int(b) { return printable ? UInt32(x) : extra }
            if !printable { extra += 1 }
        }
        return 0
    }

    /// Encodes from several threads at once (the word cache is shared under a lock) and gets
    /// the same ids as one thread.
    func testConcurrentEncodesAgree() throws {
        let tok = try fixtureTokenizer("gpt2")
        let texts = try goldenTexts("gpt2")
        let expected = try fixtureTokenizer("gpt2")
        let want = texts.map { expected.encode($0) }
        let results = Mutex([[[Int32]]](repeating: [], count: 4))
        DispatchQueue.concurrentPerform(iterations: 4) { k in
            let order = k % 2 == 0 ? Array(texts.indices) : texts.indices.reversed()
            var out = [[Int32]](repeating: [], count: texts.count)
            for i in order { out[i] = tok.encode(texts[i]) }
            results.withLock { $0[k] = out }
        }
        let got = results.withLock { $0 }
        for k in 0..<4 { XCTAssertEqual(got[k], want, "thread \(k)") }
    }

    func testSmolLM2SpecialTokensAndTemplate() throws {
        let tok = try smolLM2Tokenizer()
        XCTAssertEqual(tok.vocabSize, 49152)
        XCTAssertEqual(tok.bosTokenId, 1)
        XCTAssertEqual(tok.eosTokenId, 2)
        XCTAssertEqual(tok.padTokenId, 2)
        XCTAssertFalse(tok.addBosToken)
        XCTAssertEqual(tok.eosTokenIds.first, 2)
        XCTAssertTrue(tok.eosTokenIds.contains(0), "<|endoftext|> also ends a generation")
        XCTAssertEqual(tok.id(of: "<|im_end|>"), 2)
        XCTAssertEqual(tok.tokenString(1), "<|im_start|>")
        XCTAssertEqual(tok.id(of: "Ġthe"), 260)
        XCTAssertTrue(tok.chatTemplate?.contains("<|im_start|>") ?? false)
        XCTAssertTrue(tok.isSpecial(1))
        XCTAssertFalse(tok.isSpecial(260))
        // Special strings are special tokens by default, plain text on request.
        XCTAssertEqual(tok.encode("<|im_start|>user"), [1, 4093])
        let asText = tok.encode("<|im_start|>user", parseSpecialTokens: false)
        XCTAssertFalse(asText.contains(1))
        XCTAssertEqual(tok.decode(asText), "<|im_start|>user")
    }

    func testLlama3StyleTokenizerAddsBosAndKnowsEndOfTurn() throws {
        let tok = try fixtureTokenizer("llama3")
        let bos = try XCTUnwrap(tok.id(of: "<|begin_of_text|>"))
        XCTAssertEqual(tok.bosTokenId, bos)
        XCTAssertTrue(tok.addBosToken)
        XCTAssertEqual(tok.encode("hi").first, bos)
        XCTAssertEqual(tok.eosTokenId, tok.id(of: "<|end_of_text|>"))
        XCTAssertTrue(tok.eosTokenIds.contains(try XCTUnwrap(tok.id(of: "<|eot_id|>"))))
        XCTAssertNotNil(tok.chatTemplate)
    }

    func testSentencePieceSpacePrefixRules() throws {
        let legacy = try fixtureTokenizer("sp_legacy")
        let meta = try fixtureTokenizer("sp_metaspace")
        let strings = { (t: Tokenizer, s: String) in t.encode(s, addSpecialTokens: false).map { t.tokenString($0)! } }
        // Legacy (Prepend normalizer, like sentencepiece and llama.cpp): "▁" before every segment.
        XCTAssertEqual(strings(legacy, "<s>hello"), ["<s>", "▁he", "ll", "o"])
        XCTAssertEqual(strings(legacy, " hello"), ["▁", "▁he", "ll", "o"])
        // Metaspace "first": only at the start of the text, and not before an existing space.
        XCTAssertEqual(strings(meta, "<s>hello"), ["<s>", "he", "ll", "o"])
        XCTAssertEqual(strings(meta, " hello"), ["▁he", "ll", "o"])
        XCTAssertEqual(strings(meta, "hello<s>world"), ["▁he", "ll", "o", "<s>", "w", "or", "ld"])
        // Characters outside the vocabulary fall back to bytes.
        XCTAssertEqual(strings(legacy, "語"), ["▁", "<0xE8>", "<0xAA>", "<0x9E>"])
        XCTAssertEqual(legacy.encode("語").first, legacy.bosTokenId)
    }

    // MARK: - Malformed input

    func temporaryFolder() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-tok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    func modifiedGPT2(_ change: (inout [String: Any]) -> Void) throws -> URL {
        let data = try Data(contentsOf: fixtureURL("gpt2/tokenizer.json"))
        var obj = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        change(&obj)
        let dir = try temporaryFolder()
        try JSONSerialization.data(withJSONObject: obj).write(to: dir.appendingPathComponent("tokenizer.json"))
        return dir
    }

    func testMalformedTokenizerFilesGiveClearErrors() throws {
        let dir = try temporaryFolder()
        XCTAssertThrowsError(try Tokenizer(url: dir.appendingPathComponent("missing"))) { e in
            guard case SFTError.io = e else { return XCTFail("\(e)") }
        }
        try Data("{\"model\": ".utf8).write(to: dir.appendingPathComponent("tokenizer.json"))
        XCTAssertThrowsError(try Tokenizer(url: dir)) { e in
            guard case SFTError.format(let path, _, _) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(path.hasSuffix("tokenizer.json"))
        }
        let badMerge = try modifiedGPT2 { obj in
            var model = obj["model"] as! [String: Any]
            model["merges"] = ["zzzq qqqz"]
            obj["model"] = model
        }
        XCTAssertThrowsError(try Tokenizer(url: badMerge)) { e in
            XCTAssertTrue("\(e)".contains("zzzq qqqz"), "\(e)")
        }
        let badRegex = try modifiedGPT2 { obj in
            obj["pre_tokenizer"] = ["type": "Split", "pattern": ["Regex": "\\w+"], "behavior": "Isolated", "invert": false]
        }
        XCTAssertThrowsError(try Tokenizer(url: badRegex)) { e in
            guard case SFTError.unsupported(let m) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(m.contains("\\w+"))
        }
        XCTAssertThrowsError(try Tokenizer(spec: TokenizerSpec(model: .byteLevelBPE, tokens: ["a"], bosTokenId: 5))) { e in
            XCTAssertTrue("\(e)".contains("bos"), "\(e)")
        }
    }

    func testGGUFWithoutTokenizerOrTruncatedGivesClearErrors() throws {
        // A valid GGUF v3 with one metadata key and no tensors.
        var b: [UInt8] = Array("GGUF".utf8)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func str(_ s: String) { u64(UInt64(s.utf8.count)); b += Array(s.utf8) }
        u32(3); u64(0); u64(1)
        str("general.architecture"); u32(8); str("llama")
        let dir = try temporaryFolder()
        let url = dir.appendingPathComponent("empty.gguf")
        try Data(b).write(to: url)
        XCTAssertThrowsError(try Tokenizer(url: url)) { e in
            XCTAssertTrue("\(e)".contains("tokenizer.ggml.model"), "\(e)")
            XCTAssertTrue("\(e)".contains("empty.gguf"), "\(e)")
        }
        let real = try Data(contentsOf: fixtureURL("sp_gguf/tokenizer.gguf"))
        let cut = dir.appendingPathComponent("cut.gguf")
        try real.prefix(real.count / 2).write(to: cut)
        XCTAssertThrowsError(try Tokenizer(url: cut))
    }
}
