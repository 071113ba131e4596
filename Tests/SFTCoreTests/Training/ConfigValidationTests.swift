// The one validation pass before any work: every numeric key out of range is refused naming the
// key and the value, the combinations that cannot work are refused, every example config passes,
// and a run whose data plan has no step fails instead of "finishing" with a NaN loss.
import Foundation
@testable import SFTCore
import SFTKernels
import XCTest

final class ConfigValidationTests: XCTestCase {
    func validationError(_ object: [String: Any]) -> String? {
        do { try FinetuneConfig.from(json: object).validate(); return nil } catch { return "\(error)" }
    }

    func testOutOfRangeValuesAreRefusedNamingTheKey() {
        let cases: [(String, Any, String)] = [
            ("learning_rate", 0, "learning_rate"), ("learning_rate", -1e-4, "learning_rate"),
            ("lora_r", 0, "lora_r"), ("lora_alpha", 0, "lora_alpha"), ("lora_dropout", 1.5, "lora_dropout"),
            ("warmup_ratio", 2, "warmup_ratio"), ("min_lr_ratio", -0.1, "min_lr_ratio"),
            ("weight_decay", -1, "weight_decay"), ("adam_beta1", 1.5, "adam_beta1"), ("adam_beta2", 1, "adam_beta2"),
            ("adam_epsilon", 0, "adam_epsilon"), ("max_grad_norm", -1, "max_grad_norm"),
            ("per_device_train_batch_size", 0, "per_device_train_batch_size"),
            ("gradient_accumulation_steps", 0, "gradient_accumulation_steps"), ("logging_steps", 0, "logging_steps"),
            ("save_steps", 0, "save_steps"), ("save_total_limit", 0, "save_total_limit"), ("max_steps", 0, "max_steps"),
            ("num_train_epochs", -1, "num_train_epochs"), ("threads", 0, "threads"), ("quant_block_size", 48, "quant_block_size"),
            ("eval_split", 1, "eval_split"), ("neftune_noise_alpha", -5, "neftune_noise_alpha"),
            ("loraplus_lr_ratio", 0, "loraplus_lr_ratio"), ("sample_max_new_tokens", 0, "sample_max_new_tokens"),
            ("rank_pattern", ["q_proj": 0], "rank_pattern"),
        ]
        for (key, value, named) in cases {
            let e = validationError(["model": "m", "data": "d", key: value])
            XCTAssertNotNil(e, "\(key) = \(value) must be refused")
            XCTAssertTrue(e?.contains(named) ?? false, "\(key): \(e ?? "")")
        }
        XCTAssertNil(validationError(["model": "m", "data": "d"]), "the defaults are valid")
    }

    func testCombinationsThatCannotWorkAreRefused() {
        let cases: [([String: Any], String)] = [
            (["num_train_epochs": 0], "nothing would train"),
            (["eval_steps": 5], "eval data"),
            (["early_stopping_patience": 2], "eval data"),
            (["eval_data": "x.json", "eval_split": 0.1], "not both"),
            (["resume_from_checkpoint": "latest", "overwrite_output_dir": true], "resume_from_checkpoint"),
            (["method": "full", "use_dora": true], "use_dora"),
        ]
        for (extra, message) in cases {
            let e = validationError(["model": "m", "data": "d"].merging(extra) { $1 })
            XCTAssertTrue(e?.contains(message) ?? false, "\(extra): \(e ?? "accepted")")
        }
        XCTAssertNil(validationError(["model": "m", "data": "d", "num_train_epochs": 0, "max_steps": 3]))
    }

    func testEveryExampleConfigValidates() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let dir = root.appendingPathComponent("Examples/configs")
        for n in try FileManager.default.contentsOfDirectory(atPath: dir.path) where n.hasSuffix(".json") {
            let object = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent(n))) as! [String: Any]
            XCTAssertNoThrow(try FinetuneConfig.from(json: object, source: n).validate(), n)
        }
    }

    func testARunWithoutAnyTrainingStepIsAnError() throws {
        _ = try Assets.require(Assets.smolLM2)
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("sft-nosteps-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: out) }
        // max_seq_length 32 truncates every Dolly response away: no trained token, no step.
        let object: [String: Any] = ["model": Assets.smolLM2.path, "data": root.appendingPathComponent("Examples/data/dolly.jsonl").path,
                                     "format": "dolly", "max_seq_length": 32, "output_dir": out.path]
        XCTAssertThrowsError(try Finetune.run(try FinetuneConfig.from(json: object))) { e in
            XCTAssertTrue("\(e)".contains("no training steps"), "\(e)")
        }
        XCTAssertTrue(Trainer.checkpoints(in: out).isEmpty, "no checkpoint of an empty run")
    }
}
