// tokenizer.json / tokenizer_config.json written by sft tokenize exactly like the tokenizer they
// were written from: SmolLM2's GGUF vocabulary (against the golden ids from HF tokenizers), and
// every tokenizer fixture (byte-level GPT-2 / Llama-3, SentencePiece legacy / Metaspace, and
// a sentencepiece model stored as GGUF, whose score ranking becomes an explicit merge list).
// tools/check_tokenizer_export.py loads the written SmolLM2 files in HF tokenizers and
// transformers; its recorded result is checked in testPythonCheckRecordedAPass.
import XCTest
import SFTCore
import SFTKernels

final class TokenizerExportTests: XCTestCase {
    /// Writes `spec` to a scratch folder and reads it back.
    func roundTrip(_ spec: TokenizerSpec, folder: String) throws -> (Tokenizer, URL) {
        let dir = try Scratch.folder(folder)
        try spec.writeHuggingFace(to: dir)
        // HF tokenizers keeps an added token's id only when the model vocabulary has it too.
        let json = try JSONValue(parsing: Data(contentsOf: dir.appendingPathComponent("tokenizer.json")))
        var vocab: [String: Int] = [:]
        for (t, id) in json["model"]?["vocab"]?.objectValue ?? [] { vocab[t] = id.intValue }
        for added in json["added_tokens"]?.arrayValue ?? [] {
            let content = added["content"]?.stringValue ?? ""
            XCTAssertEqual(vocab[content], added["id"]?.intValue, "\(folder): added token \(content) not in the vocabulary under its id")
        }
        return (try Tokenizer(spec: TokenizerSpec(huggingFace: dir)), dir)
    }

    func assertSameIds(_ a: Tokenizer, _ b: Tokenizer, _ cases: [GoldenCase], _ name: String,
                       file: StaticString = #filePath, line: UInt = #line) {
        var failures = 0
        for c in cases where failures < 5 {
            for special in [true, false] {
                let want = special ? c.ids : c.idsNoSpecial
                let got = b.encode(c.text, addSpecialTokens: special)
                if got != want || a.encode(c.text, addSpecialTokens: special) != want {
                    failures += 1
                    let k = zip(got, want).prefix { $0 == $1 }.count
                    XCTFail("\(name): ids differ for \(c.text.debugDescription) (special \(special)) at \(k): "
                            + "\(got.dropFirst(k).prefix(5)) vs golden \(want.dropFirst(k).prefix(5))", file: file, line: line)
                }
            }
            if let d = c.decoded { XCTAssertEqual(b.decode(c.ids), d, "\(name): decode", file: file, line: line) }
        }
    }

    func assertSameSpecials(_ a: Tokenizer, _ b: Tokenizer, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.vocabSize, b.vocabSize, file: file, line: line)
        XCTAssertEqual(a.spec.tokens, b.spec.tokens, "token strings", file: file, line: line)
        XCTAssertEqual(a.spec.tokenTypes, b.spec.tokenTypes, "token types", file: file, line: line)
        XCTAssertEqual(a.bosTokenId, b.bosTokenId, "bos", file: file, line: line)
        XCTAssertEqual(a.eosTokenId, b.eosTokenId, "eos", file: file, line: line)
        XCTAssertEqual(a.padTokenId, b.padTokenId, "pad", file: file, line: line)
        XCTAssertEqual(a.unkTokenId, b.unkTokenId, "unk", file: file, line: line)
        XCTAssertEqual(a.addBosToken, b.addBosToken, "add_bos_token", file: file, line: line)
        XCTAssertEqual(a.addEosToken, b.addEosToken, "add_eos_token", file: file, line: line)
        XCTAssertEqual(a.eosTokenIds, b.eosTokenIds, "end-of-turn ids", file: file, line: line)
        XCTAssertEqual(a.chatTemplate, b.chatTemplate, "chat template", file: file, line: line)
    }

    func testSmolLM2TokenizerWrittenFromGGUFTokenizesLikeHFTokenizers() throws {
        let gguf = try smolLM2Tokenizer()
        let (written, dir) = try roundTrip(gguf.spec, folder: "tokenizer_smollm2")
        defer { Scratch.cleanUp(dir) }
        assertSameSpecials(gguf, written)
        assertSameIds(gguf, written, try loadGolden("smollm2"), "smollm2")
        XCTAssertEqual(written.encode(" 12345", addSpecialTokens: false).map { written.tokenString($0)! }, ["Ġ", "1", "2", "3", "4", "5"])

        // The file says what SmolLM2's original tokenizer.json says.
        let json = try JSONValue(parsing: Data(contentsOf: dir.appendingPathComponent("tokenizer.json")))
        let steps = json["pre_tokenizer"]?["pretokenizers"]?.arrayValue ?? []
        XCTAssertEqual(steps.map { $0["type"]?.stringValue ?? "" }, ["Digits", "ByteLevel"])
        XCTAssertEqual(steps.first?["individual_digits"], .bool(true))
        XCTAssertEqual(steps.last?["add_prefix_space"], .bool(false))
        XCTAssertEqual(json["model"]?["merges"]?.arrayValue?.count, gguf.spec.merges.count)
        let config = try JSONValue(parsing: Data(contentsOf: dir.appendingPathComponent("tokenizer_config.json")))
        XCTAssertEqual(config["bos_token"], "<|im_start|>")
        XCTAssertEqual(config["eos_token"], "<|im_end|>")
        XCTAssertEqual(config["tokenizer_class"], "PreTrainedTokenizerFast")
        XCTAssertEqual(config["chat_template"]?.stringValue, gguf.chatTemplate)
        let specials = try JSONValue(parsing: Data(contentsOf: dir.appendingPathComponent("special_tokens_map.json")))
        XCTAssertEqual(specials["unk_token"]?["content"], "<|endoftext|>")
    }

    func testFixtureTokenizersSurviveTokenizerJSONRoundTrip() throws {
        for name in ["gpt2", "llama3", "sp_legacy", "sp_metaspace"] {
            let original = try Tokenizer(url: fixtureURL(name))
            let (written, dir) = try roundTrip(original.spec, folder: "tokenizer_\(name)")
            defer { Scratch.cleanUp(dir) }
            assertSameSpecials(original, written)
            XCTAssertEqual(written.spec.addedTokenOptions, original.spec.addedTokenOptions, name)
            assertSameIds(original, written, try loadGolden(name), name)
        }
    }

    /// A GGUF "llama" vocabulary ranks merges by score; tokenizer.json needs a merge list.
    func testSentencePieceScoresBecomeAMergeListWithTheSameIds() throws {
        let original = try Tokenizer(url: fixtureURL("sp_gguf/tokenizer.gguf"))
        XCTAssertNotNil(original.spec.scores)
        let (written, dir) = try roundTrip(original.spec, folder: "tokenizer_sp_gguf")
        defer { Scratch.cleanUp(dir) }
        XCTAssertFalse(written.spec.merges.isEmpty)
        XCTAssertEqual(written.bosTokenId, original.bosTokenId)
        XCTAssertEqual(written.addBosToken, original.addBosToken)
        assertSameIds(original, written, try loadGolden("sp_gguf"), "sp_gguf")
    }

    func testChatTemplateArgumentOverridesTheSpecs() throws {
        let original = try Tokenizer(url: fixtureURL("llama3"))
        let dir = try Scratch.folder("tokenizer_template")
        defer { Scratch.cleanUp(dir) }
        try original.spec.writeHuggingFace(to: dir, chatTemplate: "{{ messages[0]['content'] }}", modelMaxLength: 4096)
        let config = try JSONValue(parsing: Data(contentsOf: dir.appendingPathComponent("tokenizer_config.json")))
        XCTAssertEqual(config["chat_template"], "{{ messages[0]['content'] }}")
        XCTAssertEqual(config["model_max_length"], 4096)
    }

    /// tools/check_tokenizer_export.py's last recorded run: HF tokenizers and AutoTokenizer gave
    /// the golden ids on every text for every written tokenizer.
    func testPythonCheckRecordedAPass() throws {
        let r = try Fixtures.json("export/results/tokenizer_export.json")
        XCTAssertEqual(r["pass"] as? Bool, true)
        let per = try XCTUnwrap(r["tokenizers"] as? [String: [String: Any]])
        XCTAssertEqual(Set(per.keys), ["smollm2", "gpt2", "llama3", "sp_legacy", "sp_metaspace", "sp_gguf"])
        for (name, t) in per {
            XCTAssertEqual(t["tokenizers_mismatches"] as? Int, 0, name)
            XCTAssertEqual(t["auto_mismatches"] as? Int, 0, name)
            XCTAssertGreaterThan(t["texts"] as? Int ?? 0, 100, name)
        }
    }
}
