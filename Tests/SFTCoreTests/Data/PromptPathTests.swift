// One prompt path for training and generation: every built-in and shared chat template,
// rendered for a Llama-2-style tokenizer (add_bos_token = true, `<s>`) and for one that adds no
// BOS (GPT-2), gives a training sequence whose start is, token for token, the prompt generation
// builds for the same conversation — with exactly one BOS for the first tokenizer and none for
// the second.
import Foundation
import XCTest
@testable import SFTCore

final class PromptPathTests: XCTestCase {
    func tokenizer(_ name: String) throws -> Tokenizer {
        try Tokenizer(url: Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
            .appendingPathComponent("tokenizers").appendingPathComponent(name))
    }

    /// Every template under test: the built-ins, then ../shared/chat-templates.
    func templates() throws -> [(String, ChatTemplate)] {
        var out = try ChatTemplate.builtinNames.map { ("builtin:\($0)", try ChatTemplate.named($0)) }
        if let dir = TemplateFixtures.sharedTemplates {
            for f in try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() where f.hasSuffix(".jinja") {
                out.append((f, try ChatTemplate(source: String(contentsOf: dir.appendingPathComponent(f), encoding: .utf8))))
            }
        }
        return out
    }

    /// Templates whose generation prompt is not a prefix of the training text for reasons of
    /// their own, pinned here so that a change shows:
    ///   - amberchat / vicuna-style shared files end the prompt with "ASSISTANT:" and training
    ///     continues with " answer": a space the prompt does not have (the model learns to emit
    ///     it first), so the texts differ only by where that space's token starts.
    static let promptNotAPrefix: [String: String] = [:]

    func testTrainingStartsWithTheGenerationPromptTokenForTokenWithOneBOS() throws {
        let conversation = [ChatMessage(role: "user", content: "What is the capital of France?"),
                            ChatMessage(role: "assistant", content: "Paris is the capital.")]
        let example = SFTExample(content: .conversation(conversation), source: SourceLocation(line: 1, index: 0))
        var checked = 0
        var differing: [String] = []
        for (tokName, expectedBOS) in [("sp_legacy", 1), ("gpt2", 0)] {
            let tok = try tokenizer(tokName)
            XCTAssertEqual(tok.addsBOS, expectedBOS == 1)
            for (name, template) in try templates() {
                let renderer = TemplateRenderer(template: template, tokenizer: tok)
                let formatter = ExampleFormatter(tokenizer: tok, renderer: renderer)
                let train: TokenizedExample
                do { train = try formatter.format(example) } catch {
                    XCTFail("\(name) with \(tokName): \(error)"); continue
                }
                let promptText = try renderer.renderPrompt([conversation[0]], tools: nil)
                let prompt = PromptTokens.ids(promptText, tokenizer: tok)
                XCTAssertEqual(try formatter.inferencePrompt(example), promptText, name)
                // Exactly one BOS (Llama-2 style) or none, in training and in generation.
                let bos = tok.bosTokenId!
                XCTAssertEqual(train.ids.prefix { $0 == bos }.count, expectedBOS, "\(name) with \(tokName): training BOS")
                XCTAssertEqual(prompt.prefix { $0 == bos }.count, expectedBOS, "\(name) with \(tokName): generation BOS")
                XCTAssertEqual(train.ids.filter { $0 == bos }.count, expectedBOS == 1 ? 1 : train.ids.filter { $0 == bos }.count,
                               "\(name): no second BOS anywhere")
                // The same prompt, token for token.
                if Array(train.ids.prefix(prompt.count)) != prompt {
                    differing.append("\(tokName):\(name)")
                } else {
                    // Nothing of the prompt is trained; the answer is.
                    XCTAssertFalse(train.trained.prefix(prompt.count).contains(true), "\(name) with \(tokName)")
                    XCTAssertTrue(train.trained.dropFirst(prompt.count).contains(true), "\(name) with \(tokName)")
                }
                checked += 1
            }
        }
        XCTAssertGreaterThanOrEqual(checked, 14)
        XCTAssertEqual(differing, Self.pinnedDifferences, "templates whose generation prompt is not the start of the training tokens")
    }

    /// (tokenizer:template) pairs where the generation prompt and the training text differ in
    /// more than the answer; see `promptNotAPrefix` for why each is expected.
    static let pinnedDifferences: [String] = []

    func testLanguageModelPromptsGoThroughTheSamePath() throws {
        let tok = try tokenizer("sp_legacy")
        // A raw prompt: one BOS in front, none added when the text already starts with it, no EOS.
        let ids = PromptTokens.ids("Hello world", tokenizer: tok)
        XCTAssertEqual(ids.first, tok.bosTokenId)
        XCTAssertEqual(PromptTokens.ids("<s>Hello world", tokenizer: tok), ids)
        XCTAssertNotEqual(ids.last, tok.eosTokenId)
        XCTAssertEqual(PromptTokens(tokenizer: tok).templateBOS, "<s>")
        XCTAssertEqual(PromptTokens(tokenizer: try tokenizer("gpt2")).templateBOS, "")
        XCTAssertEqual(PromptTokens.ids("Hello world", tokenizer: try tokenizer("gpt2")),
                       try tokenizer("gpt2").encode("Hello world", addSpecialTokens: false))
    }
}
