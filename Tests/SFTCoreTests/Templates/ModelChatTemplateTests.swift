// A model's own template and special tokens: from SmolLM2's GGUF (the real asset, skipped when
// absent) and from a Hugging Face folder's tokenizer_config.json.
import Foundation
import SFTCore
import SFTKernels
import XCTest

final class ModelChatTemplateTests: XCTestCase {
    func testSmolLM2GGUFTemplateAndTokens() throws {
        guard FileManager.default.fileExists(atPath: Assets.smolLM2.path) else {
            throw XCTSkip("SmolLM2 GGUF not found (run scripts/fetch-assets)")
        }
        let m = try ModelChatTemplate(model: Assets.smolLM2)
        let fixture = try String(contentsOf: TemplateFixtures.folder.appendingPathComponent("smollm2.jinja"), encoding: .utf8)
        XCTAssertEqual(m.template.source, fixture)
        XCTAssertEqual(m.bosToken, "<|im_start|>")
        XCTAssertEqual(m.eosToken, "<|im_end|>")
        let r = try m.template.render(messages: [ChatMessage(role: "user", content: "Hi"), ChatMessage(role: "assistant", content: "Hello")],
                                      addGenerationPrompt: false, bosToken: m.bosToken, eosToken: m.eosToken)
        XCTAssertEqual(r.text, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n")
        XCTAssertEqual(r.text.utf8Slice(r.assistantTurns[0].throughEndOfTurn), "Hello<|im_end|>")
    }

    func testHuggingFaceFolder() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-hf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(#"{"chat_template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}", "bos_token": "<s>", "eos_token": {"content": "</s>", "lstrip": false}}"#.utf8)
            .write(to: dir.appendingPathComponent("tokenizer_config.json"))
        let m = try ModelChatTemplate(model: dir)
        XCTAssertEqual(m.bosToken, "<s>")
        XCTAssertEqual(m.eosToken, "</s>")
        XCTAssertEqual(try m.template.render(messages: [ChatMessage(role: "user", content: "x")], addGenerationPrompt: false,
                                             bosToken: m.bosToken, eosToken: m.eosToken).text, "<s>x</s>")
        XCTAssertThrowsError(try ModelChatTemplate(model: dir.appendingPathComponent("missing")))
    }
}
