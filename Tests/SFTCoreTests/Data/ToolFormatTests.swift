// Tool-calling SFT in Llama-3.1's JSON and Mistral v0.3's tool formats, with templates written for
// sft from the published formats (Fixtures/templates/llama3.1-json-tools.jinja,
// mistral-v0.3-tools.jinja). sft's rendering must equal Python jinja2's byte for byte
// (tool_formats.json, tools/make_template_fixtures.py), and through the data path the trained
// tokens must be exactly the assistant's tool calls and answers: the tools block and the tool
// results are not trained.
import Foundation
import XCTest
@testable import SFTCore
import SFTKernels

final class ToolFormatTests: XCTestCase {
    static let llama = "llama3.1-json-tools.jinja"
    static let mistral = "mistral-v0.3-tools.jinja"

    func template(_ name: String) throws -> ChatTemplate {
        let src = try String(contentsOf: TemplateFixtures.folder.appendingPathComponent(name), encoding: .utf8)
        var t = try ChatTemplate(source: src)
        t.now = { TemplateFixtures.fixedNow }  // Llama-3.1's "Today Date" comes from strftime_now
        return t
    }

    func golden(_ template: String, _ conversation: String) throws -> String {
        let doc = try TemplateFixtures.json("tool_formats.json")
        for c in doc["cases"]!.arrayValue! where c["template"]?.stringValue == template
            && c["conversation"]?.stringValue == conversation && c["add_generation_prompt"] == .bool(false) {
            return c["text"]!.stringValue!
        }
        throw XCTSkip("no golden for \(template) \(conversation)")
    }

    func prepare(_ file: String, _ templateName: String) throws -> PreparedDataset {
        let renderer = TemplateRenderer(template: try template(templateName), tokenizer: CharTokenizer(bos: true), eosToken: "</s>")
        return try prepareDataset(DataFixtures.url(file), config: DataConfig(format: .messages, strict: true),
                                  tokenizer: CharTokenizer(bos: true), renderer: renderer, keepTextFor: 10)
    }

    func testToolTemplatesRenderAsJinja2() throws {
        let doc = try TemplateFixtures.json("tool_formats.json")
        let bos = doc["bos_token"]!.stringValue!, eos = doc["eos_token"]!.stringValue!
        var checked = 0, errors = 0
        for c in doc["cases"]!.arrayValue! {
            let name = c["template"]!.stringValue!, conversation = c["conversation"]!.stringValue!
            let conv = doc["conversations"]![conversation]!
            let messages = try conv["messages"]!.arrayValue!.map { try ChatMessage(json: $0) }
            let what = "\(name) \(conversation) add_generation_prompt=\(c["add_generation_prompt"]!)"
            let result = Result {
                try template(name).render(messages: messages, addGenerationPrompt: c["add_generation_prompt"] == .bool(true),
                                          bosToken: bos, eosToken: eos, tools: conv["tools"]).text
            }
            switch (result, c["text"]?.stringValue, c["error"]?.stringValue) {
            case (.success(let got), let want?, _):
                XCTAssertEqual(got, want, what)
            case (.failure(let e), _, let want?):
                // raise_exception's message is the template's own, so it must be the same text.
                guard case SFTError.template(_, _, let message) = e else { XCTFail("\(what): wrong error type \(e)"); break }
                XCTAssertTrue(message.contains(want), "\(what): \(message) vs \(want)")
                errors += 1
            case (.success(let got), nil, let want?):
                XCTFail("\(what): jinja2 raised '\(want)', sft rendered \(got.debugDescription)")
            case (.failure(let e), _?, _):
                XCTFail("\(what): unexpected error \(e)")
            default:
                XCTFail("malformed fixture")
            }
            checked += 1
        }
        XCTAssertEqual(checked, 24)
        XCTAssertEqual(errors, 4)  // Llama-3.1: two calls in one turn; Mistral: a call without a 9-character id
    }

    /// Llama-3.1 JSON tool calls: the tools go into the first user message (indented JSON), the
    /// call is `{"name": ..., "parameters": ...}<|eot_id|>` after the assistant header, the result
    /// comes back as an `ipython` message.
    func testLlama31ToolCallsAreTrainedToolsAndResultsAreNot() throws {
        let p = try prepare("tools_llama3.1.jsonl", Self.llama)
        XCTAssertEqual(p.examples.count, 2)
        let (a, b) = (p.examples[0], p.examples[1])
        XCTAssertEqual(a.formatted?.text, try golden(Self.llama, "system_one_call"))
        XCTAssertEqual(b.formatted?.text, try golden(Self.llama, "one_call"))
        XCTAssertEqual(a.ids.first, 3)  // the template's own <s>, not a second one
        XCTAssertEqual(a.ids.filter { $0 == 3 }.count, 1)
        XCTAssertEqual(trainedRuns(a), [
            #"{"name": "get_weather", "parameters": {"city": "Oslo"}}<|eot_id|>"#,
            "Yes: 4 °C and raining in Oslo.<|eot_id|>",
        ])
        XCTAssertEqual(trainedRuns(b), [
            #"{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}<|eot_id|>"#,
            "It is 21 °C and sunny in Paris.<|eot_id|>",
        ])
        // The mask, shown on the text: the tools block, the user turn and the ipython result are
        // outside [[...]].
        let marked = a.markedText()!
        XCTAssertTrue(marked.hasPrefix("<s><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n"), marked)
        XCTAssertTrue(marked.hasSuffix("""
            Is it raining in Oslo?<|eot_id|><|start_header_id|>assistant<|end_header_id|>

            [[{"name": "get_weather", "parameters": {"city": "Oslo"}}<|eot_id|>]]<|start_header_id|>ipython<|end_header_id|>

            {"temperature": 4, "condition": "rain"}<|eot_id|><|start_header_id|>assistant<|end_header_id|>

            [[Yes: 4 °C and raining in Oslo.<|eot_id|>]]
            """), marked)
        XCTAssertEqual(marked.components(separatedBy: "[[").count, 3)
        // Generation for the tool call starts from the golden prompt.
        let ex = try Dataset.load(DataFixtures.url("tools_llama3.1.jsonl")).examples[0]
        let renderer = TemplateRenderer(template: try template(Self.llama), tokenizer: CharTokenizer(bos: true), eosToken: "</s>")
        let prompt = try XCTUnwrap(ExampleFormatter(tokenizer: CharTokenizer(bos: true), renderer: renderer).inferencePrompt(ex))
        XCTAssertTrue(prompt.hasSuffix("Is it raining in Oslo?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"), prompt)
        XCTAssertTrue(a.formatted!.text.hasPrefix(prompt))
        // Two calls in one turn are not in this format: the template's own error skips the record, naming it.
        let renderer2 = TemplateRenderer(template: try template(Self.llama), tokenizer: CharTokenizer(bos: true), eosToken: "</s>")
        let q = try prepareDataset(DataFixtures.url("tools_mistral.jsonl"), config: DataConfig(format: .messages),
                                   tokenizer: CharTokenizer(bos: true), renderer: renderer2)
        XCTAssertEqual(q.examples.count, 1)
        XCTAssertEqual(q.formattingReport.skipped.map(\.location.line), [1])
        XCTAssertTrue(q.formattingReport.skipped.first?.reason.contains("Llama 3.1 JSON tool calling takes one call per assistant turn.") == true,
                      "\(q.formattingReport.skipped)")
    }

    /// Mistral v0.3: `[AVAILABLE_TOOLS] [...]` before the last user message, parallel
    /// calls as one `[TOOL_CALLS] [{...}, {...}]</s>` with 9-character ids, results as
    /// `[TOOL_RESULTS] {"content": ..., "call_id": ...}[/TOOL_RESULTS]`.
    func testMistralParallelToolCallsAreTrainedToolsAndResultsAreNot() throws {
        let p = try prepare("tools_mistral.jsonl", Self.mistral)
        XCTAssertEqual(p.examples.count, 2)
        let (a, b) = (p.examples[0], p.examples[1])
        XCTAssertEqual(a.formatted?.text, try golden(Self.mistral, "two_calls"))
        XCTAssertEqual(b.formatted?.text, try golden(Self.mistral, "one_call"))
        XCTAssertEqual(trainedRuns(a), [
            #"[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call00003"}, {"name": "add", "arguments": {"a": 2, "b": 3.5}, "id": "call00004"}]</s>"#,
            "Sunny, 21 °C in Paris; 2 + 3.5 = 5.5.</s>",
        ])
        XCTAssertEqual(trainedRuns(b), [
            #"[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}, "id": "call00001"}]</s>"#,
            "It is 21 °C and sunny in Paris.</s>",
        ])
        XCTAssertEqual(a.markedText()!, """
            <s>[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city — in °C or °F.", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name, e.g. \\"Paris\\""}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}, {"type": "function", "function": {"name": "add", "description": "Add two numbers.", "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}}}][/AVAILABLE_TOOLS][INST] Weather in Paris, and what is 2 + 3.5?[/INST]\
            [[[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call00003"}, {"name": "add", "arguments": {"a": 2, "b": 3.5}, "id": "call00004"}]</s>]]\
            [TOOL_RESULTS] {"content": {"temperature": 21, "condition": "sunny"}, "call_id": "call00003"}[/TOOL_RESULTS]\
            [TOOL_RESULTS] {"content": 5.5, "call_id": "call00004"}[/TOOL_RESULTS] [[Sunny, 21 °C in Paris; 2 + 3.5 = 5.5.</s>]]
            """)
    }
    /// A tool call, then plain chat. Mistral puts the tools before the last user message, so the
    /// generation prompt of the first turn is no prefix of the whole text; the call's markup is
    /// still trained (from after `[/INST]`, where that prompt ends too).
    func testToolCallThenPlainChatTrainsTheCallMarkupInBothFormats() throws {
        let doc = try TemplateFixtures.json("tool_formats.json")
        let conv = doc["conversations"]!["tools_then_chat"]!
        let messages = try conv["messages"]!.arrayValue!.map { try ChatMessage(json: $0) }
        let want: [String: [String]] = [
            Self.llama: [#"{"name": "add", "parameters": {"a": 1, "b": 2}}<|eot_id|>"#, "1 + 2 = 3.<|eot_id|>", "You're welcome.<|eot_id|>"],
            Self.mistral: [#"[TOOL_CALLS] [{"name": "add", "arguments": {"a": 1, "b": 2}, "id": "call00005"}]</s>"#, "1 + 2 = 3.</s>", "You're welcome.</s>"],
        ]
        for (name, runs) in want {
            let renderer = TemplateRenderer(template: try template(name), tokenizer: CharTokenizer(bos: true), eosToken: "</s>")
            let r = try renderer.renderForTraining(messages, tools: conv["tools"])
            XCTAssertEqual(r.text, try golden(name, "tools_then_chat"))
            let bytes = Array(r.text.utf8)
            XCTAssertEqual(r.assistantTurns.map { String(decoding: bytes[$0.throughEndOfTurn], as: UTF8.self) }, runs, name)
        }
    }
}
