// Provenance of message text through the template: spans must follow content through trim,
// concatenation, slicing, split/join, replace, case mapping, macros and set blocks, and the
// assistant-turn spans must stop at the template's end-of-turn marker.
import Foundation
import SFTCore
import SFTKernels
import XCTest

final class ChatTemplateSpanTests: XCTestCase {
    func render(_ src: String, _ messages: [ChatMessage], eos: String = "", prompt: Bool = false) throws -> RenderedChat {
        try ChatTemplate(source: src).render(messages: messages, addGenerationPrompt: prompt, eosToken: eos)
    }

    func texts(_ r: RenderedChat, _ i: Int) -> [String] { r.messageSpans[i].map { r.text.utf8Slice($0) } }

    func testTrimmedContentKeepsItsSpan() throws {
        let r = try render("{% for m in messages %}[{{ '<' + m.content | trim + '>' }}]{% endfor %}",
                           [ChatMessage(role: "user", content: "  héllo wörld \n")])
        XCTAssertEqual(r.text, "[<héllo wörld>]")
        XCTAssertEqual(texts(r, 0), ["héllo wörld"])
        XCTAssertEqual(r.messageSpans[0], [2..<15])  // UTF-8 bytes: '[' '<' then 13 bytes
    }

    func testConcatenationJoinAndSetKeepProvenance() throws {
        let src = """
        {%- set parts = [] -%}
        {%- set ns = namespace(all='') -%}
        {%- for m in messages -%}{%- set ns.all = ns.all ~ m.content ~ '|' -%}{%- endfor -%}
        {{- ns.all -}}#{{- messages | map(attribute='content') | join(', ') -}}
        """
        let msgs = [ChatMessage(role: "user", content: "a1"), ChatMessage(role: "assistant", content: "b22")]
        let r = try render(src, msgs)
        XCTAssertEqual(r.text, "a1|b22|#a1, b22")
        XCTAssertEqual(texts(r, 0), ["a1", "a1"])
        XCTAssertEqual(texts(r, 1), ["b22", "b22"])
    }

    func testSplitSliceReplaceAndCaseMappingKeepProvenance() throws {
        let src = """
        {{- messages[0].content.split('</think>')[-1].lstrip('\\n') -}}|
        {{- messages[1].content[2:5] -}}|
        {{- messages[2].content.replace('\\n\\n', '\\n') -}}|
        {{- messages[3].content | upper -}}
        """
        let msgs = [ChatMessage(role: "assistant", content: "<think>x</think>\nanswer"),
                    ChatMessage(role: "user", content: "0123456"),
                    ChatMessage(role: "user", content: "p\n\nq"),
                    ChatMessage(role: "user", content: "straße")]
        let r = try render(src, msgs)
        XCTAssertEqual(r.text, "answer|234|p\nq|STRASSE")
        XCTAssertEqual(texts(r, 0), ["answer"])
        XCTAssertEqual(texts(r, 1), ["234"])
        XCTAssertEqual(texts(r, 2), ["p\nq"])  // the folded newline stays inside the message's span
        XCTAssertEqual(texts(r, 3), ["STRASSE"])
    }

    func testMacroOutputAndSetBlocksKeepProvenance() throws {
        let src = """
        {%- macro wrap(text) -%}<<{{ text }}>>{%- endmacro -%}
        {%- set body -%}{{ messages[0].content }}{%- endset -%}
        {{- wrap(messages[0].content) }} {{ body | trim }}
        """
        let r = try render(src, [ChatMessage(role: "user", content: "xyz")])
        XCTAssertEqual(r.text, "<<xyz>> xyz")
        XCTAssertEqual(r.messageSpans[0], [2..<5, 8..<11])
    }

    func testTemplateLiteralsThatEqualContentAreNotAttributed() throws {
        let r = try render("{{ 'hi' }}{{ messages[0].content }}", [ChatMessage(role: "user", content: "hi")])
        XCTAssertEqual(r.text, "hihi")
        XCTAssertEqual(r.messageSpans[0], [2..<4])
    }

    func testUnprintedAndEmptyMessages() throws {
        let src = "{% for m in messages %}{% if m.role != 'system' %}<{{ m.content }}>{% endif %}{% endfor %}"
        let msgs = [ChatMessage(role: "system", content: "hidden"), ChatMessage(role: "user", content: ""),
                    ChatMessage(role: "assistant", content: "ok")]
        let r = try render(src, msgs)
        XCTAssertEqual(r.text, "<><ok>")
        XCTAssertEqual(r.messageSpans[0], [])
        XCTAssertEqual(r.messageSpans[1], [1..<1])  // empty content: an empty span where it went
        XCTAssertEqual(r.messageSpans[2], [3..<5])
    }

    func testAssistantTurnExtendsThroughImEnd() throws {
        let t = try ChatTemplate.named("chatml")
        let msgs = [ChatMessage(role: "user", content: "Hi"), ChatMessage(role: "assistant", content: "Hello there"),
                    ChatMessage(role: "user", content: "Bye")]
        let r = try t.render(messages: msgs, addGenerationPrompt: true)
        XCTAssertEqual(r.assistantTurns.count, 1)
        let turn = r.assistantTurns[0]
        XCTAssertEqual(turn.messageIndex, 1)
        XCTAssertEqual(r.text.utf8Slice(turn.content), "Hello there")
        XCTAssertEqual(r.text.utf8Slice(turn.throughEndOfTurn), "Hello there<|im_end|>")
        XCTAssertEqual(turn.endOfTurnMarker, "<|im_end|>")
    }

    func testAssistantTurnUsesTheEosTokenAndStopsBeforeTheNextMessage() throws {
        let src = "{% for m in messages %}{{ m.role }}: {{ m.content }}{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
        let msgs = [ChatMessage(role: "user", content: "q"), ChatMessage(role: "assistant", content: "a"),
                    ChatMessage(role: "user", content: "q2")]
        let r = try ChatTemplate(source: src).render(messages: msgs, addGenerationPrompt: false, eosToken: "<EOS>")
        XCTAssertEqual(r.text.utf8Slice(r.assistantTurns[0].throughEndOfTurn), "a<EOS>")
        // Without an eos token there is no marker between this turn and the next message.
        let plain = try ChatTemplate(source: src).render(messages: msgs, addGenerationPrompt: false)
        XCTAssertEqual(plain.assistantTurns[0].throughEndOfTurn, plain.assistantTurns[0].content)
        XCTAssertNil(plain.assistantTurns[0].endOfTurnMarker)
    }

    func testCustomEndOfTurnMarker() throws {
        var t = try ChatTemplate(source: "{% for m in messages %}{{ m.content }}[END]{% endfor %}")
        t.endOfTurnMarkers = ["[END]"]
        let r = try t.render(messages: [ChatMessage(role: "assistant", content: "x")], addGenerationPrompt: false)
        XCTAssertEqual(r.text.utf8Slice(r.assistantTurns[0].throughEndOfTurn), "x[END]")
    }

    func testToolCallsAndExtraFieldsReachTheTemplate() throws {
        let src = "{% for m in messages %}{{ m.role }}{% for c in m.tool_calls or [] %}:{{ c.function.name }}({{ c.function.arguments | tojson }}){% endfor %}{{ m.get('name', '') }}{% endfor %}"
        let call: JSONValue = [["type": "function", "function": ["name": "f", "arguments": ["b": 1, "a": "é"]]]]
        let msgs = [ChatMessage(role: "assistant", content: "", toolCalls: call),
                    ChatMessage(role: "tool", content: "1", extra: ["name": "f"])]
        let r = try render(src, msgs)
        XCTAssertEqual(r.text, "assistant:f({\"b\": 1, \"a\": \"é\"})toolf")
    }
}
