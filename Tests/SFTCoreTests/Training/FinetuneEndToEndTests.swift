// The finetune job end to end on the real model: every example config parses; a short LoRA
// run on the Dolly sample with the Alpaca prompt trains, logs, checkpoints, writes a PEFT
// adapter, and the adapter loads back and changes the model's output.
import XCTest
@testable import SFTCore
import SFTKernels

final class FinetuneEndToEndTests: XCTestCase {
    var packageRoot: URL { URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent() }

    func config(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: packageRoot.appendingPathComponent("Examples/configs/\(name)"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    func testEveryExampleConfigParses() throws {
        let dir = packageRoot.appendingPathComponent("Examples/configs")
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".json") }
        XCTAssertGreaterThanOrEqual(names.count, 5)
        for n in names {
            let c = try FinetuneConfig.from(json: try config(n), source: n)
            XCTAssertFalse(c.model.isEmpty, n)
            _ = try c.trainer()
        }
        XCTAssertThrowsError(try FinetuneConfig.from(json: ["learnin_rate": 1])) { e in XCTAssertTrue("\(e)".contains("learnin_rate")) }
        XCTAssertThrowsError(try FinetuneConfig.from(json: ["lora_r": "eight"])) { e in XCTAssertTrue("\(e)".contains("lora_r"), "\(e)") }
    }

    func testShortLoRARunWritesAnAdapterThatLoadsBack() throws {
        _ = try Assets.require(Assets.smolLM2)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("sft-e2e-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: out) }
        var object = try config("qlora-dolly-alpaca-prompt.json")
        object["model"] = Assets.smolLM2.path
        object["data"] = packageRoot.appendingPathComponent("Examples/data/dolly.jsonl").path
        object["output_dir"] = out.path
        object["max_steps"] = 2
        object["max_seq_length"] = 128
        object["lora_r"] = 8
        object["learning_rate"] = 1e-2
        object["save_steps"] = 1
        object["save_total_limit"] = 1
        let cfg = try FinetuneConfig.from(json: object)
        var events: [String] = []
        let result = try Finetune.run(cfg, onEvent: { e in
            if case .step(let m, _) = e { events.append("step \(m.step)") }
            return .continue
        })
        XCTAssertEqual(events, ["step 1", "step 2"])
        XCTAssertEqual(result.summary.steps, 2)
        XCTAssertTrue(result.summary.finalLoss!.isFinite)
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: result.output.appendingPathComponent(f).path), f)
        }
        XCTAssertEqual(Trainer.checkpoints(in: out).map(\.lastPathComponent), ["checkpoint-2"])
        XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("loss.svg").path))
        let state = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("trainer_state.json"))) as! [String: Any]
        XCTAssertEqual(state["global_step"] as? Int, 2)
        XCTAssertEqual((state["log_history"] as? [Any])?.count, 2)
        let metrics = try String(contentsOf: out.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
        XCTAssertEqual(metrics.split(separator: "\n").count, 2)

        let tuned = try LanguageModel.load(Assets.smolLM2, adapter: result.output)
        let base = try RealModel.smolLM2().model
        let ids = tuned.encodePrompt("Who founded the company?")
        let a = try tuned.model.logits(ids), b = try base.logits(ids)
        let diff = zip(a, b).map { abs($0 - $1) }.max()!
        XCTAssertGreaterThan(diff, 1e-3, "the trained adapter changes the output")
        XCTAssertTrue(a.allSatisfy { $0.isFinite })
    }
}
