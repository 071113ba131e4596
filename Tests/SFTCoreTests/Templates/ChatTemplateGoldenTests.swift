// Golden tests: real chat templates (../shared/chat-templates and SmolLM2's own) rendered over
// several conversations must be byte-identical to Python jinja2 in transformers' environment
// (expected.json, made by tools/make_template_fixtures.py), raise where Python raised, and
// their message spans must reconstruct each message's content.
import Foundation
import SFTCore
import SFTKernels
import XCTest

final class ChatTemplateGoldenTests: XCTestCase {
    struct Case {
        let template: String
        let conversation: String
        let addGenerationPrompt: Bool
        let text: String?
        let error: String?
    }

    func loadCases() throws -> (cases: [Case], conversations: JSONValue, bos: String, eos: String) {
        let doc = try TemplateFixtures.json("expected.json")
        let cases = doc["cases"]!.arrayValue!.map { c in
            Case(template: c["template"]!.stringValue!, conversation: c["conversation"]!.stringValue!,
                 addGenerationPrompt: c["add_generation_prompt"]!.boolValue!, text: c["text"]?.stringValue,
                 error: c["error"]?.stringValue)
        }
        return (cases, doc["conversations"]!, doc["bos_token"]!.stringValue!, doc["eos_token"]!.stringValue!)
    }

    /// Renders every fixture case that can run here; calls `check` with the rendering or error.
    func forEachCase(_ check: (Case, [ChatMessage], Result<RenderedChat, Error>) throws -> Void) throws {
        let (cases, conversations, bos, eos) = try loadCases()
        if TemplateFixtures.sharedTemplates == nil {
            print("note: ../shared/chat-templates not found; only SmolLM2's template is checked")
        } else if let dir = TemplateFixtures.sharedTemplates {
            let onDisk = (try FileManager.default.contentsOfDirectory(atPath: dir.path)).filter { $0.hasSuffix(".jinja") }
            let covered = Set(cases.map(\.template))
            let missing = onDisk.filter { !covered.contains($0) }.sorted()
            if !missing.isEmpty {
                print("note: no fixtures yet for \(missing.joined(separator: ", ")); run tools/make_template_fixtures.py")
            }
        }
        var templates: [String: ChatTemplate] = [:]
        var ran = 0
        for c in cases {
            guard let source = TemplateFixtures.source(c.template) else { continue }
            if templates[c.template] == nil { templates[c.template] = try ChatTemplate(source: source) }
            let conv = conversations[c.conversation]!
            let messages = try conv["messages"]!.arrayValue!.map { try ChatMessage(json: $0) }
            let result = Result {
                try templates[c.template]!.render(messages: messages, addGenerationPrompt: c.addGenerationPrompt,
                                                  bosToken: bos, eosToken: eos, tools: conv["tools"])
            }
            try check(c, messages, result)
            ran += 1
        }
        XCTAssertGreaterThan(ran, 0)
        print("checked \(ran) renderings of \(templates.count) templates")
    }

    func testRealTemplatesRenderByteIdenticalToJinja2() throws {
        try forEachCase { c, _, result in
            let label = "\(c.template) / \(c.conversation) / generation prompt \(c.addGenerationPrompt)"
            switch (result, c.text, c.error) {
            case (.success(let r), let want?, nil):
                if r.text != want {
                    let a = Array(r.text.utf8), b = Array(want.utf8)
                    let at = zip(a, b).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset ?? min(a.count, b.count)
                    XCTFail("\(label): differs from jinja2 at byte \(at):\n got: \(r.text.debugDescription)\nwant: \(want.debugDescription)")
                }
            case (.failure(let e), nil, let want?):
                guard case SFTError.template(let line, let column, let message) = e else {
                    XCTFail("\(label): wrong error type \(e)"); return
                }
                XCTAssertGreaterThan(line, 0, label)
                XCTAssertGreaterThan(column, 0, label)
                // raise_exception messages come through unchanged.
                XCTAssertEqual(message, want, label)
            case (.success(let r), nil, let want?):
                XCTFail("\(label): jinja2 raised '\(want)' but we rendered \(r.text.debugDescription)")
            case (.failure(let e), _, _):
                XCTFail("\(label): unexpected error \(e)")
            default:
                XCTFail("\(label): malformed fixture")
            }
        }
    }

    func testMessageSpansReconstructEachMessagesContent() throws {
        try forEachCase { c, messages, result in
            guard case .success(let r) = result else { return }
            let label = "\(c.template) / \(c.conversation) / generation prompt \(c.addGenerationPrompt)"
            let bytes = Array(r.text.utf8)
            XCTAssertEqual(r.messageSpans.count, messages.count, label)
            var all: [Range<Int>] = []
            for (i, m) in messages.enumerated() {
                let spans = r.messageSpans[i]
                for s in spans { XCTAssert(s.lowerBound >= 0 && s.upperBound <= bytes.count, label) }
                all += spans.filter { !$0.isEmpty }
                let rebuilt = spans.map { r.text.utf8Slice($0) }.joined()
                let stripped = m.content.pythonStripped
                if stripped.isEmpty { continue }
                if spans.isEmpty {
                    // Only acceptable when the template really left the message out.
                    XCTAssertFalse(r.text.contains(stripped), "\(label): message \(i) is in the text but has no span")
                    continue
                }
                // Templates print the content as is, trimmed (Llama-2 and Gemma trim the system
                // prompt and first user message together, so only its end), or (Falcon) with blank
                // lines folded.
                let folded = m.content.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\n\n", with: "\n").pythonStripped
                XCTAssert([m.content, stripped, folded, m.content.pythonRStripped].contains(rebuilt),
                          "\(label): message \(i) spans give \(rebuilt.debugDescription), content is \(m.content.debugDescription)")
            }
            all.sort { $0.lowerBound < $1.lowerBound }
            for (a, b) in zip(all, all.dropFirst()) { XCTAssertLessThanOrEqual(a.upperBound, b.lowerBound, "\(label): spans overlap") }

            for t in r.assistantTurns {
                XCTAssertEqual(messages[t.messageIndex].role, "assistant", label)
                XCTAssertEqual(t.throughEndOfTurn.lowerBound, t.content.lowerBound, label)
                XCTAssertGreaterThanOrEqual(t.throughEndOfTurn.upperBound, t.content.upperBound, label)
                if let marker = t.endOfTurnMarker {
                    XCTAssert(r.text.utf8Slice(t.throughEndOfTurn).hasSuffix(marker), label)
                }
            }
        }
    }

    /// Templates whose end of turn is a known marker get it; the marker directly follows the
    /// content (plus fixed text), never another message's content.
    func testAssistantTurnsEndWithTheTemplatesEndMarker() throws {
        let expectedMarker: [String: String] = [
            "chatml.jinja": "<|im_end|>", "smollm2.jinja": "<|im_end|>", "qwen2.5-instruct.jinja": "<|im_end|>",
            "llama-3-instruct.jinja": "<|eot_id|>", "gemma-it.jinja": "<end_of_turn>", "phi-3.jinja": "<|end|>",
            "phi-3-small.jinja": "<|end|>", "openchat-3.5.jinja": "<|end_of_turn|>", "granite-3.0-instruct.jinja": "<|end_of_text|>",
            "zephyr.jinja": "</s>", "mistral-instruct.jinja": "</s>", "llama-2-chat.jinja": "</s>", "vicuna.jinja": "</s>",
            "alpaca.jinja": "</s>", "saiga.jinja": "</s>",
        ]
        var checked = 0
        try forEachCase { c, _, result in
            guard case .success(let r) = result, let want = expectedMarker[c.template] else { return }
            for t in r.assistantTurns {
                XCTAssertEqual(t.endOfTurnMarker, want, "\(c.template) / \(c.conversation)")
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 0)
    }
}
