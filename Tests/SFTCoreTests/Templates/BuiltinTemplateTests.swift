// sft's built-in templates render the published prompt formats of their families.
import Foundation
import SFTCore
import SFTKernels
import XCTest

final class BuiltinTemplateTests: XCTestCase {
    let conversation = [
        ChatMessage(role: "system", content: "Be brief."),
        ChatMessage(role: "user", content: "Hi"),
        ChatMessage(role: "assistant", content: "Hello!"),
        ChatMessage(role: "user", content: "Bye"),
    ]

    func render(_ name: String, _ messages: [ChatMessage], prompt: Bool = true) throws -> String {
        try ChatTemplate.named(name).render(messages: messages, addGenerationPrompt: prompt, bosToken: "<s>", eosToken: "</s>").text
    }

    func testBuiltinNames() {
        XCTAssertEqual(ChatTemplate.builtinNames, ["alpaca", "chatml", "guanaco", "llama-2", "llama-3", "mistral", "vicuna"])
        XCTAssertThrowsError(try ChatTemplate.named("nope"))
    }

    func testEachBuiltinRendersItsFormat() throws {
        let want: [String: String] = [
            "chatml": "<s><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
            "llama-2": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Bye [/INST]",
            "llama-3": "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            "mistral": "<s>[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] Bye [/INST]",
            "alpaca": "<s>Be brief.\n\n### Instruction:\nHi\n\n### Response:Hello!</s>\n\n### Instruction:\nBye\n\n### Response:",
            "vicuna": "<s>Be brief. USER: Hi ASSISTANT: Hello!</s>USER: Bye ASSISTANT:",
            "guanaco": "<s>Be brief. ### Human: Hi ### Assistant: Hello!</s> ### Human: Bye ### Assistant:",
        ]
        for name in ChatTemplate.builtinNames {
            XCTAssertEqual(try render(name, conversation), want[name], name)
        }
    }

    func testDefaultSystemPromptsAndRoleChecks() throws {
        let noSystem = Array(conversation.dropFirst())
        XCTAssert(try render("alpaca", noSystem).hasPrefix("<s>Below is an instruction that describes a task."))
        XCTAssert(try render("vicuna", noSystem).hasPrefix("<s>A chat between a curious user and an artificial intelligence assistant."))
        XCTAssertEqual(try render("llama-2", noSystem, prompt: false), "<s>[INST] Hi [/INST] Hello! </s><s>[INST] Bye [/INST]")
        XCTAssertThrowsError(try render("llama-2", [ChatMessage(role: "assistant", content: "x")]))
        XCTAssertThrowsError(try render("mistral", [ChatMessage(role: "user", content: "a"), ChatMessage(role: "user", content: "b")]))
    }

    func testEveryBuiltinAttributesEveryMessage() throws {
        for name in ChatTemplate.builtinNames {
            let r = try ChatTemplate.named(name).render(messages: conversation, addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>")
            for (i, m) in conversation.enumerated() {
                XCTAssertEqual(r.messageSpans[i].map { r.text.utf8Slice($0) }.joined(), m.content, "\(name) message \(i)")
            }
            XCTAssertEqual(r.assistantTurns.count, 1, name)
            XCTAssertNotNil(r.assistantTurns[0].endOfTurnMarker, name)
        }
    }

    func testTokenizerConfigTemplate() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-tokcfg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let plain = dir.appendingPathComponent("a.json")
        try Data(#"{"chat_template": "{{ messages[0].content }}!", "eos_token": "</s>"}"#.utf8).write(to: plain)
        XCTAssertEqual(try ChatTemplate(tokenizerConfig: plain).render(messages: [ChatMessage(role: "user", content: "x")], addGenerationPrompt: false).text, "x!")
        let named = dir.appendingPathComponent("b.json")
        try Data(#"{"chat_template": [{"name": "default", "template": "D"}, {"name": "tool_use", "template": "T"}]}"#.utf8).write(to: named)
        XCTAssertEqual(try ChatTemplate(tokenizerConfig: named, name: "tool_use").render(messages: [], addGenerationPrompt: false).text, "T")
        XCTAssertThrowsError(try ChatTemplate(tokenizerConfig: named, name: "rag"))
    }
}
