// Golden token ids from the reference tokenizers (HF tokenizers, sentencepiece), made by
// tools/make_tokenizer_fixtures.py: SmolLM2 from the real GGUF, small SentencePiece-style,
// Llama-3-style and GPT-2-style vocabularies from tokenizer.json, and a sentencepiece model
// stored as GGUF. Every case compares ids with and without special tokens, and the decode.
import XCTest
import SFTCore
import SFTKernels

struct GoldenCase {
    let text: String
    let ids: [Int32]
    let idsNoSpecial: [Int32]
    let decoded: String?
    let decodedSkipSpecial: String?
}

func fixtureURL(_ path: String) throws -> URL {
    let base = try XCTUnwrap(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
    return base.appendingPathComponent("tokenizers").appendingPathComponent(path)
}

func loadGolden(_ folder: String) throws -> [GoldenCase] {
    let data = try Data(contentsOf: fixtureURL("\(folder)/golden.json"))
    let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    let cases = try XCTUnwrap(obj["cases"] as? [[String: Any]])
    return try cases.map { c in
        GoldenCase(text: try XCTUnwrap(c["text"] as? String),
                   ids: try XCTUnwrap(c["ids"] as? [NSNumber]).map(\.int32Value),
                   idsNoSpecial: try XCTUnwrap(c["ids_no_special"] as? [NSNumber]).map(\.int32Value),
                   decoded: c["decoded"] as? String,
                   decodedSkipSpecial: c["decoded_skip_special"] as? String)
    }
}

func smolLM2Tokenizer() throws -> Tokenizer {
    guard FileManager.default.fileExists(atPath: Assets.smolLM2.path) else {
        throw XCTSkip("SmolLM2 GGUF not fetched (run scripts/fetch-assets)")
    }
    return try Tokenizer(url: Assets.smolLM2)
}

final class TokenizerGoldenTests: XCTestCase {
    /// Compares every case; on failure prints the text and the first differing position with
    /// the token strings on both sides.
    func check(_ tok: Tokenizer, _ cases: [GoldenCase], checkDecode: Bool = true,
               file: StaticString = #filePath, line: UInt = #line) {
        var failures = 0
        for c in cases {
            let ids = tok.encode(c.text, addSpecialTokens: true)
            let plain = tok.encode(c.text, addSpecialTokens: false)
            for (name, got, want) in [("ids", ids, c.ids), ("ids_no_special", plain, c.idsNoSpecial)] where got != want {
                failures += 1
                let k = zip(got, want).prefix { $0 == $1 }.count
                let show = { (a: [Int32]) in a.dropFirst(k).prefix(6).map { "\($0):\(tok.tokenString($0) ?? "?")" } }
                XCTFail("\(name) differ for \(c.text.debugDescription) at \(k): got \(show(got)) want \(show(want))",
                        file: file, line: line)
            }
            if checkDecode {
                if let d = c.decoded { XCTAssertEqual(tok.decode(c.ids), d, "decode of \(c.text.debugDescription)", file: file, line: line) }
                if let d = c.decodedSkipSpecial {
                    XCTAssertEqual(tok.decode(c.ids, skipSpecialTokens: true), d,
                                   "decode(skip) of \(c.text.debugDescription)", file: file, line: line)
                }
            }
            if failures > 5 { return }
        }
    }

    func testSmolLM2FromGGUFMatchesHFTokenizersWithDigitSplit() throws {
        let tok = try smolLM2Tokenizer()
        let cases = try loadGolden("smollm2")
        XCTAssertGreaterThan(cases.count, 150)
        check(tok, cases)
        // The digit split is what transformers' GGUF conversion gets wrong: " 12345" is "Ġ" then
        // one token per digit.
        let ids = tok.encode(" 12345", addSpecialTokens: false)
        XCTAssertEqual(ids.map { tok.tokenString($0)! }, ["Ġ", "1", "2", "3", "4", "5"])
    }

    func testSentencePieceLegacyTokenizerJSONMatchesHF() throws {
        let tok = try Tokenizer(url: fixtureURL("sp_legacy"))
        check(tok, try loadGolden("sp_legacy"))
    }

    func testSentencePieceMetaspaceTokenizerJSONMatchesHF() throws {
        let tok = try Tokenizer(url: fixtureURL("sp_metaspace"))
        check(tok, try loadGolden("sp_metaspace"))
    }

    func testLlama3RegexByteLevelMatchesHF() throws {
        let tok = try Tokenizer(url: fixtureURL("llama3"))
        check(tok, try loadGolden("llama3"))
    }

    func testGPT2RegexByteLevelMatchesHF() throws {
        let tok = try Tokenizer(url: fixtureURL("gpt2"))
        check(tok, try loadGolden("gpt2"))
    }

    func testSentencePieceScoresFromGGUFMatchSentencepiece() throws {
        let tok = try Tokenizer(url: fixtureURL("sp_gguf/tokenizer.gguf"))
        check(tok, try loadGolden("sp_gguf"))
    }

    /// The word cache must not change results: a second tokenizer fed the texts in reverse
    /// order (other cache contents at each point) gives the same ids.
    func testWordCacheDoesNotChangeIds() throws {
        let cases = try loadGolden("gpt2")
        let a = try Tokenizer(url: fixtureURL("gpt2"))
        let b = try Tokenizer(url: fixtureURL("gpt2"))
        let forward = cases.map { a.encode($0.text) }
        let backward = cases.reversed().map { b.encode($0.text) }.reversed()
        XCTAssertEqual(forward, Array(backward))
        XCTAssertEqual(forward, cases.map { a.encode($0.text) })
    }
}
