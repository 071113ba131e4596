// Tool-calling SFT: `tools` per record or per dataset go to the model's template, `tool` role
// messages and assistant `tool_calls` (OpenAI / HF messages format) are accepted and rendered by
// the template — byte for byte as Python jinja2 renders them (the golden in
// Fixtures/templates/expected.json, by tools/make_template_fixtures.py) — and the assistant's
// tool calls are trained, the tool results not. Qwen2.5's template is the tool format in
// ../shared/chat-templates; Llama-3.1's and Mistral's tool formats are in ToolFormatTests.
import Foundation
import XCTest
@testable import SFTCore
import SFTKernels

final class ToolCallingTests: XCTestCase {
    func qwen() throws -> ChatTemplate {
        guard let src = TemplateFixtures.source("qwen2.5-instruct.jinja") else { throw XCTSkip("../shared/chat-templates not found") }
        return try ChatTemplate(source: src)
    }

    func golden(_ template: String, _ conversation: String, prompt: Bool) throws -> String {
        let expected = try TemplateFixtures.json("expected.json")
        guard case .array(let cases)? = expected["cases"] else { throw XCTSkip("no cases") }
        for c in cases where c["template"]?.stringValue == template && c["conversation"]?.stringValue == conversation
            && c["add_generation_prompt"] == .bool(prompt) {
            return c["text"]!.stringValue!
        }
        throw XCTSkip("no golden for \(template) \(conversation)")
    }

    func testToolCallsAreTrainedToolResultsAreNotAndTheRenderIsGolden() throws {
        let tok = CharTokenizer(bos: true)
        let renderer = TemplateRenderer(template: try qwen(), tokenizer: tok, eosToken: "</s>")
        let p = try prepareDataset(DataFixtures.url("tools.jsonl"), config: DataConfig(format: .messages, strict: true),
                                   tokenizer: tok, renderer: renderer, keepTextFor: 1)
        XCTAssertEqual(p.examples.count, 1)
        let t = p.examples[0]
        XCTAssertEqual(t.formatted?.text, try golden("qwen2.5-instruct.jinja", "tools", prompt: false))
        XCTAssertEqual(t.ids.first, 3)  // BOS, as the tokenizer adds one
        XCTAssertEqual(trainedRuns(t), [
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call><|im_end|>",
            "It is 21 °C and sunny in Paris.<|im_end|>",
        ])
        let untrained = t.markedText()!
        XCTAssertTrue(untrained.contains("<tool_response>\n{\"temperature\": 21, \"condition\": \"sunny\"}\n</tool_response>"))
        XCTAssertFalse(trainedRuns(t).joined().contains("temperature"))
        // Generation for the first answer starts from the golden prompt.
        let ex = try Dataset.load(DataFixtures.url("tools.jsonl")).examples[0]
        XCTAssertEqual(try ExampleFormatter(tokenizer: tok, renderer: renderer).inferencePrompt(ex),
                       try renderer.renderPrompt(Array(ex.messages.prefix(2)), tools: ex.tools))
    }

    func testToolsPerDatasetAndTheConversationRules() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-tools-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let tools = dir.appendingPathComponent("tools.json")
        try #"[{"type": "function", "function": {"name": "add", "description": "Add.", "parameters": {"type": "object", "properties": {"b": {"type": "number"}, "a": {"type": "number"}}}}}]"#
            .write(to: tools, atomically: true, encoding: .utf8)
        let data = dir.appendingPathComponent("d.jsonl")
        try [
            #"{"messages": [{"role": "user", "content": "1+2?"}, {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": {"b": 2, "a": 1}}}]}, {"role": "tool", "content": "3"}, {"role": "assistant", "content": "3."}]}"#,
            #"{"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "3"}, {"role": "assistant", "content": "x"}]}"#,
            #"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": {}}}]}, {"role": "user", "content": "?"}]}"#,
        ].joined(separator: "\n").write(to: data, atomically: true, encoding: .utf8)
        let tok = CharTokenizer()
        let renderer = TemplateRenderer(template: try qwen(), tokenizer: tok, eosToken: "</s>")
        let p = try prepareDataset(data, config: DataConfig(format: .messages, tools: tools.path), tokenizer: tok,
                                   renderer: renderer, keepTextFor: 1)
        XCTAssertEqual(p.examples.count, 1)
        XCTAssertEqual(p.datasetReport.skipped.map(\.location.line), [2, 3])
        XCTAssertTrue(p.datasetReport.skipped[0].reason.hasPrefix("a tool result must follow"), p.datasetReport.skipped[0].reason)
        let text = p.examples[0].formatted!.text
        // The dataset's tools, key order as written (b before a), and the call's arguments as written.
        XCTAssertTrue(text.contains(#"{"type": "function", "function": {"name": "add", "description": "Add.", "parameters": {"type": "object", "properties": {"b": {"type": "number"}, "a": {"type": "number"}}}}}"#), text)
        XCTAssertEqual(trainedRuns(p.examples[0]), [
            "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"b\": 2, \"a\": 1}}\n</tool_call><|im_end|>", "3.<|im_end|>",
        ])
        XCTAssertThrowsError(try DataConfig(tools: dir.appendingPathComponent("none.json").path).datasetOptions())
    }
}
