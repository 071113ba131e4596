// Every family as a user meets it: an HF folder whose config.json is the one transformers 5
// wrote for the golden fixture (vocabulary widened to a real tokenizer's), loaded by
// `LanguageModel.load` (what `sftctl eval` / `generate` / `finetune` call), LoRA and full
// `Finetune.run` a few steps on it; and GGUF export and reload keeping RoPE scaling, the
// sliding window and QK-norm.
import XCTest
@testable import SFTCore
import SFTKernels

final class ZooFinetuneTests: XCTestCase {
    let be = CPUBackend.shared
    var packageRoot: URL { URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent() }

    /// A random `family` model with the gpt2 fixture tokenizer, saved as an HF folder with the
    /// fixture's transformers-5 config.json.
    func folder(_ family: String) throws -> URL {
        let tokenizer = try Tokenizer(url: Fixtures.url("tokenizers/gpt2"))
        var config = try Fixtures.json("model/zoo/\(family)/config.json")
        config["vocab_size"] = tokenizer.vocabSize
        let model = try ModelRegistry.build(config: config, on: be)
        var rng = SeededRandom(seed: 5)
        for (name, p) in model.namedParameters() {
            let norm = name.contains("norm")
            try p.value.assign((0..<p.value.count).map { _ in Float(norm ? 1 + 0.1 * rng.nextNormal() : 0.2 * rng.nextNormal()) })
        }
        let lm = LanguageModel(model: model, tokenizer: tokenizer, chatTemplate: nil, source: InMemoryWeights(),
                               url: Fixtures.url("tokenizers/gpt2"))
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-zoo-\(family)-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try HFExport.saveModel(lm, to: dir)
        try JSONSerialization.data(withJSONObject: config).write(to: dir.appendingPathComponent("config.json"))
        return dir
    }

    func testEveryFamilyFolderLoadsEvaluatesGeneratesAndFinetunes() throws {
        for family in ZooGoldenTests.families {
            let dir = try folder(family)
            let lm = try LanguageModel.load(dir)
            XCTAssertEqual(lm.model.modelType, try Fixtures.json("model/zoo/\(family)/config.json")["model_type"] as? String)
            let ids = lm.encodePrompt("The quick brown fox jumps over the lazy dog.")
            let logits = try lm.model.logits(ids)
            XCTAssertTrue(logits.allSatisfy { $0.isFinite }, family)
            // Greedy generation through the cache gives what the full forward predicts.
            let cache = try lm.model.makeCache(capacity: ids.count + 1)
            let last = try lm.model.decode(ids, cache: cache)
            let V = lm.model.vocabSize
            let fromFull = Array(logits[((ids.count - 1) * V)...])
            XCTAssertLessThan(zip(last, fromFull).map { abs($0 - $1) }.max()!, 1e-4, "\(family): cached decode vs forward")

            for method in ["lora", "qlora", "full"] {
                let out = dir.appendingPathComponent("run-\(method)")
                let object: [String: Any] = [
                    "model": dir.path, "data": packageRoot.appendingPathComponent("Examples/data/dolly.jsonl").path,
                    "format": "dolly", "template": "alpaca", "output_dir": out.path, "method": method,
                    "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "learning_rate": 1e-2, "max_steps": 3, "num_train_epochs": 3,
                    "max_seq_length": 512, "packing": true, "per_device_train_batch_size": 1, "save_steps": 100,
                ]
                var messages: [String] = []
                let result = try Finetune.run(try FinetuneConfig.from(json: object)) { e in
                    if case .message(let m) = e { messages.append(m) }
                    return .continue
                }
                XCTAssertEqual(result.summary.steps, 3, "\(family) \(method): \(messages.joined(separator: " | "))")
                XCTAssertTrue(result.summary.finalLoss?.isFinite ?? false, "\(family) \(method)")
            }
        }
    }

    func testGGUFExportKeepsRopeScalingWindowAndQKNorm() throws {
        for family in ["llama31", "mistral", "qwen3", "qwen2"] {
            let dir = try folder(family)
            let lm = try LanguageModel.load(dir)
            let file = dir.appendingPathComponent("model.gguf")
            try GGUFExport.save(lm, to: file, dtype: .f32)
            let back = try LanguageModel.load(file)
            let ids = lm.encodePrompt("Café naïve, 12 + 30 = 42.")
            let a = try lm.model.logits(ids), b = try back.model.logits(ids)
            XCTAssertLessThan(zip(a, b).map { abs($0 - $1) }.max()!, 1e-4, "\(family): GGUF round trip")
        }
        // llama3 RoPE travels as llama.cpp's rope_freqs tensor.
        let g = try GGUFFile(url: try exportLlama31())
        XCTAssertNotNil(g.tensor(named: "rope_freqs.weight"))
        XCTAssertNotNil(try GGUFWeights(file: g).config["rope_scaling"]?["freq_factors"])
    }

    func exportLlama31() throws -> URL {
        let dir = try folder("llama31")
        let file = dir.appendingPathComponent("model.gguf")
        try GGUFExport.save(try LanguageModel.load(dir), to: file, dtype: .f32)
        return file
    }
}
