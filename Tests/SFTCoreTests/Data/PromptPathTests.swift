// One prompt path for training and generation: every built-in and shared chat template,
// rendered for a Llama-2-style tokenizer (add_bos_token = true, `<s>`) and for one that adds no
// BOS (GPT-2), gives a training sequence whose start is, token for token, the prompt generation
// builds for the same conversation — with exactly one BOS for the first tokenizer and none for
// the second.
import Foundation
import XCTest
@testable import SFTCore
import SFTKernels

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

    /// Templates whose generation prompt is not, token for token, the start of the training
    /// tokens — all from ../shared/chat-templates, which keep their sources' newlines and
    /// indentation (no whitespace control): the generation-prompt branch sits at another
    /// indentation, or adds a newline, that the assistant turn does not have. transformers
    /// renders them the same way, so the difference is the templates' own; the test checks it
    /// is whitespace only. The built-in templates are all exact.
    static let pinnedDifferences: Set<String> = [
        "alpaca.jinja", "amberchat.jinja", "chatml.jinja", "chatqa.jinja", "falcon-instruct.jinja", "gemma-it.jinja",
        "llama-2-chat.jinja", "llama-3-instruct.jinja", "mistral-instruct.jinja", "openchat-3.5.jinja", "phi-3-small.jinja",
        "phi-3.jinja", "saiga.jinja", "solar-instruct.jinja", "vicuna.jinja", "zephyr.jinja",
    ]

    /// Saiga's format opens every message with `bos_token` (`<s>system … </s><s>user …`), so
    /// its text holds one BOS per message by design.
    static let bosPerMessage: Set<String> = ["saiga.jinja"]

    func testTrainingStartsWithTheGenerationPromptTokenForTokenWithOneBOS() throws {
        let conversation = [ChatMessage(role: "user", content: "What is the capital of France?"),
                            ChatMessage(role: "assistant", content: "Paris is the capital.")]
        let example = SFTExample(content: .conversation(conversation), source: SourceLocation(line: 1, index: 0))
        var checked = 0
        var differing = Set<String>(), names = Set<String>()
        for (tokName, llama2Style) in [("sp_legacy", true), ("gpt2", false)] {
            let tok = try tokenizer(tokName)
            XCTAssertEqual(tok.addsBOS, llama2Style)
            let bos = tok.bosTokenId!
            for (name, template) in try templates() {
                names.insert(name)
                let renderer = TemplateRenderer(template: template, tokenizer: tok)
                let formatter = ExampleFormatter(tokenizer: tok, renderer: renderer, options: FormatOptions(keepText: true))
                let train: TokenizedExample
                do { train = try formatter.format(example) } catch {
                    XCTFail("\(name) with \(tokName): \(error)"); continue
                }
                let promptText = try renderer.renderPrompt([conversation[0]], tools: nil)
                let prompt = PromptTokens.ids(promptText, tokenizer: tok)
                XCTAssertEqual(try formatter.inferencePrompt(example), promptText, name)
                if llama2Style {
                    // Exactly one BOS, in training and in generation (first, or after the
                    // template's leading whitespace).
                    let n = Self.bosPerMessage.contains(name) ? 2 : 1
                    XCTAssertEqual(train.ids.filter { $0 == bos }.count, n, "\(name): training BOS")
                    XCTAssertEqual(prompt.filter { $0 == bos }.count, n, "\(name): generation BOS")
                } else {
                    XCTAssertNotEqual(train.ids.first, bos, "\(name): no BOS for a tokenizer that adds none")
                    XCTAssertNotEqual(prompt.first, bos, name)
                }
                if Array(train.ids.prefix(prompt.count)) == prompt {
                    // Nothing of the prompt is trained; the answer is.
                    XCTAssertFalse(train.trained.prefix(prompt.count).contains(true), "\(name) with \(tokName)")
                    XCTAssertTrue(train.trained.dropFirst(prompt.count).contains(true), "\(name) with \(tokName)")
                } else {
                    differing.insert(name)
                    let squeeze = { (s: String) in s.filter { !$0.isWhitespace } }
                    XCTAssertTrue(squeeze(train.formatted!.text).hasPrefix(squeeze(promptText)),
                                  "\(name) with \(tokName): prompt and training text differ in more than whitespace")
                }
                checked += 1
            }
        }
        XCTAssertGreaterThanOrEqual(checked, 14)
        XCTAssertFalse(differing.contains { $0.hasPrefix("builtin:") }, "\(differing.sorted())")
        // (Without ../shared/chat-templates, e.g. on a clone outside the workspace, only the
        // built-in templates run.)
        XCTAssertEqual(differing, Self.pinnedDifferences.intersection(names), "\(differing.sorted())")
    }

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
