// Each seed recipe's example config (Examples/configs/*.json with a "_recipe") runs for two
// steps on a tiny model (the GPT-2 fixture tokenizer, 2 layers of width 32, saved as an HF
// folder), and its first example renders as the seed renders it — the expected text is built
// here by hand from the seed's own prompt code, not by sft.
import Foundation
import XCTest
@testable import SFTCore
import SFTKernels

final class SeedRecipeTests: XCTestCase {
    var packageRoot: URL { URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent() }

    func config(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: packageRoot.appendingPathComponent("Examples/configs/\(name)"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    /// The tiny model on disk, once per test run.
    static let tinyModel: URL? = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-seed-tiny-\(ProcessInfo.processInfo.processIdentifier)")
        if FileManager.default.fileExists(atPath: dir.appendingPathComponent("config.json").path) { return dir }
        guard let lm = try? ExportFixtures.tinyLanguageModel() else { return nil }
        do { try HFExport.saveModel(lm, to: dir) } catch { return nil }
        return dir
    }()

    /// Runs `name` for two steps on the tiny model (data overridable) and returns the config used
    /// and the first example as prepared for training.
    func run(_ name: String, data: String? = nil, overrides: [String: Any] = [:]) throws -> (FinetuneConfig, TokenizedExample, LanguageModel) {
        guard let model = Self.tinyModel else { throw XCTSkip("tiny model could not be written") }
        var object = try config(name)
        XCTAssertNotNil(object["_recipe"], name)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("sft-seed-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: out) }
        object["model"] = model.path
        object["output_dir"] = out.path
        object["data"] = data ?? packageRoot.appendingPathComponent(object["data"] as! String).path
        object["max_steps"] = 2
        object["num_train_epochs"] = 8  // small sample files: two steps may need more than one epoch
        object["max_seq_length"] = 256
        object["eval_steps"] = nil
        object["eval_split"] = nil
        object["save_steps"] = nil
        object["gradient_checkpointing"] = false
        for (k, v) in overrides { object[k] = v }
        let cfg = try FinetuneConfig.from(json: object, source: name)
        var steps = 0
        var messages: [String] = []
        let result = try Finetune.run(cfg, onEvent: { e in
            if case .step = e { steps += 1 }
            if case .message(let m) = e { messages.append(m) }
            return .continue
        })
        XCTAssertEqual(steps, 2, name)
        XCTAssertTrue(result.summary.finalLoss?.isFinite ?? false, name)
        XCTAssertTrue(messages.contains { $0.hasPrefix("data doctor:") }, "\(name): the doctor's block opens the run")
        let lm = try LanguageModel.load(model, template: cfg.template)
        let renderer = lm.chatTemplate.map { TemplateRenderer(template: $0, tokenizer: lm.tokenizer) }
        let p = try prepareDataset(URL(fileURLWithPath: cfg.data), config: cfg.dataConfig, tokenizer: lm.tokenizer,
                                   renderer: renderer, keepTextFor: 1)
        return (cfg, p.examples[0], lm)
    }

    func testQLoRADollyReversedPrompt() throws {
        let (_, first, _) = try run("qlora-dolly-alpaca-prompt.json", overrides: ["quant_block_size": 32])
        // philschmid's format_instruction for databricks-dolly-15k (Llama-2 QLoRA recipe).
        let rec = try JSONSerialization.jsonObject(with: Data(try String(contentsOf: packageRoot.appendingPathComponent("Examples/data/dolly.jsonl"), encoding: .utf8)
            .split(separator: "\n")[0].utf8)) as! [String: Any]
        let seed = "### Instruction:\nUse the Input below to create an instruction, which could have been used to generate the input using an LLM.\n\n"
            + "### Input:\n\(rec["response"] as! String)\n\n### Response:\n\(rec["instruction"] as! String)\n"
        XCTAssertEqual(first.formatted?.text, seed)
        XCTAssertTrue(first.trained.allSatisfy { $0 }, "SFTTrainer with packing trains every token")
    }

    func testFastLLMLossMaskingSpans() throws {
        let (cfg, first, lm) = try run("fastllm-assistant-spans.json")
        XCTAssertEqual(cfg.dataConfig.truncation, .drop)
        let rec = try JSONSerialization.jsonObject(with: Data(try String(contentsOf: packageRoot.appendingPathComponent("Examples/data/spans.jsonl"), encoding: .utf8)
            .split(separator: "\n")[0].utf8)) as! [String: Any]
        XCTAssertEqual(first.formatted?.text, rec["text"] as? String)
        // Only the assistant's answer and its end marker are trained, then the EOS Fast-LLM appends.
        let eos = lm.tokenizer.eosTokenId!
        XCTAssertEqual(first.ids.last, eos)
        XCTAssertEqual(first.markedText(open: "[[", close: "]]", eos: "<eos>"),
                       "<|im_start|>system\nYou answer in French.<|im_end|>\n<|im_start|>user\nGood morning!<|im_end|>\n<|im_start|>assistant\n[[Bonjour !<|im_end|>]]\n[[<eos>]]")
    }

    func testVicunaShareGPT() throws {
        // The real ShareGPT asset when present, else the sample file (same layout).
        let asset = Assets.shareGPT
        let data = FileManager.default.fileExists(atPath: asset.path) ? asset.path : packageRoot.appendingPathComponent("Examples/data/sharegpt.json").path
        let (cfg, first, lm) = try run("vicuna-sharegpt.json", data: data)
        // FastChat's vicuna_v1.1 (SeparatorStyle.ADD_COLON_TWO, sep " ", sep2 "</s>" — the tokenizer's EOS).
        let ex = try Dataset.load(URL(fileURLWithPath: data), options: try cfg.dataConfig.datasetOptions()).examples[0]
        let eos = lm.tokenizer.tokenString(lm.tokenizer.eosTokenId!)!
        var messages = ex.messages
        var seed = "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions."
        if messages.first?.role == "system" { seed = messages.removeFirst().content }
        let seps = [" ", eos]
        seed += seps[0]
        for (i, m) in messages.enumerated() { seed += (m.role == "user" ? "USER" : "ASSISTANT") + ": " + m.content + seps[i % 2] }
        XCTAssertEqual(first.formatted?.text, seed)
    }

    func testFullDolphin() throws {
        let (_, first, _) = try run("full-dolphin.json", overrides: ["method": "full"])
        // The tiny model ships no chat template: sft's Guanaco-style turns, system prompt first.
        let d = try Dataset.load(packageRoot.appendingPathComponent("Examples/data/dolphin.jsonl"), options: DatasetOptions(format: .dolphin))
        let m = d.examples[0].messages
        XCTAssertEqual(first.formatted?.text, "\(m[0].content)\n### Human: \(m[1].content)\n### Assistant: \(m[2].content)\n")
    }
}
