// A run whose memory estimate cannot fit in the available memory is refused before its big
// allocations, naming the estimate, the available memory and the knobs; skip_memory_check
// overrides; unknown figures skip the check (issue #18 item 3, the memory part).
import Foundation
import XCTest
@testable import SFTCore
import SFTKernels

final class MemoryCheckTests: XCTestCase {
    func estimate(batch: Int = 4, sequence: Int = 64) throws -> MemoryEstimate {
        MemoryEstimate(model: try TinyLlama.make(), quantization: nil, lora: LoRAConfig(r: 2, alpha: 4, dropout: 0),
                       batch: batch, sequence: sequence, checkpointing: false)
    }

    func testRefusesWhenTheRestOfTheEstimateExceedsAvailableMemory() throws {
        let e = try estimate()
        let need = e.total - e.weights
        var config = FinetuneConfig()
        config.perDeviceTrainBatchSize = 4
        config.dataConfig.maxSeqLength = 64
        XCTAssertThrowsError(try FinetuneMemoryCheck.check(e, available: need - 1, device: "cpu", config: config)) { error in
            guard case SFTError.config(let field, let message) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(field, "skip_memory_check")
            for part in ["cpu has", "available", "memory estimate: total", "activations", "per_device_train_batch_size (4)",
                         "max_seq_length (64)", "gradient_checkpointing", "quantize nf4", "skip_memory_check to run anyway"] {
                XCTAssertTrue(message.contains(part), "'\(message)' lacks '\(part)'")
            }
        }
        // Enough memory, or an unknown figure: no refusal.
        XCTAssertNoThrow(try FinetuneMemoryCheck.check(e, available: need, device: "cpu", config: config))
        XCTAssertNoThrow(try FinetuneMemoryCheck.check(e, available: nil, device: "cpu", config: config))
        // The need grows with the batch: what fits at batch 4 does not at batch 4000.
        let big = try estimate(batch: 4000)
        XCTAssertThrowsError(try FinetuneMemoryCheck.check(big, available: need, device: "cuda", config: config))
    }

    func testReadsMemAvailable() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("meminfo-\(UUID().uuidString)")
        try "MemTotal:       16384000 kB\nMemFree:         1000 kB\nMemAvailable:    8192000 kB\n".write(to: url, atomically: true, encoding: .utf8)
        XCTAssertEqual(FinetuneMemoryCheck.memAvailable(meminfo: url.path), 8_192_000 * 1024)
        XCTAssertNil(FinetuneMemoryCheck.memAvailable(meminfo: "/nonexistent/meminfo"))
        // On Linux the real figure is there and positive.
        XCTAssertGreaterThan(FinetuneMemoryCheck.available(on: CPUBackend.shared) ?? 0, 0)
    }

    func testFinetuneRefusesARunThatCannotFitBeforeTraining() throws {
        _ = try Assets.require(Assets.smolLM2)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("sft-memcheck-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: out) }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        // 200k rows of 64 tokens: terabytes of activations.
        let config = try FinetuneConfig.from(json: [
            "model": Assets.smolLM2.path, "data": root.appendingPathComponent("Examples/data/sharegpt.json").path,
            "format": "sharegpt", "output_dir": out.path, "max_steps": 1, "max_seq_length": 64, "lora_r": 2,
            "per_device_train_batch_size": 200_000,
        ])
        XCTAssertThrowsError(try Finetune.run(config)) { e in
            XCTAssertTrue("\(e)".contains("skip_memory_check") && "\(e)".contains("per_device_train_batch_size (200000)"), "\(e)")
        }
        XCTAssertEqual(Trainer.checkpoints(in: out), [], "nothing trained")
        // Sizes past any memory (and past the estimate's arithmetic) are refused by name, at once.
        for (key, value, named) in [("per_device_train_batch_size", 1 << 40, "per_device_train_batch_size (1099511627776)"),
                                    ("lora_r", 1 << 62, "LoRA rank 4611686018427387904")] {
            var json: [String: Any] = [
                "model": Assets.smolLM2.path, "data": root.appendingPathComponent("Examples/data/sharegpt.json").path,
                "format": "sharegpt", "output_dir": out.path, "max_steps": 1, "max_seq_length": 64, "lora_r": 2,
            ]
            json[key] = value
            XCTAssertThrowsError(try Finetune.run(try FinetuneConfig.from(json: json))) { e in
                XCTAssertTrue("\(e)".contains(named) && "\(e)".contains("skip_memory_check"), "\(e)")
            }
        }
    }

    /// A model that cannot even load is refused before its weights are allocated: the estimate
    /// comes from the file's config alone, weights included. With 200 MiB "available",
    /// SmolLM2's f32 weights (0.5 GiB) cannot fit; with skip_memory_check the same run trains.
    func testARunWhoseWeightsCannotFitIsRefusedBeforeLoading() throws {
        _ = try Assets.require(Assets.smolLM2)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("sft-memcheck-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: out) }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        var json: [String: Any] = [
            "model": Assets.smolLM2.path, "data": root.appendingPathComponent("Examples/data/sharegpt.json").path,
            "format": "sharegpt", "output_dir": out.path, "max_steps": 1, "max_seq_length": 32, "lora_r": 2,
        ]
        // The estimate from the GGUF's config alone equals the loaded model's.
        let before = try XCTUnwrap(try FinetuneMemoryCheck.estimate(beforeLoading: Assets.smolLM2, quantization: nil,
                                                                    config: try FinetuneConfig.from(json: json), ranks: 1))
        let loaded = try XCTUnwrap(try FinetuneMemoryCheck.estimate(model: try RealModel.smolLM2().model, quantization: nil,
                                                                    config: try FinetuneConfig.from(json: json), ranks: 1))
        XCTAssertEqual(before.total, loaded.total)
        XCTAssertGreaterThan(before.weights, 500 << 20)
        try FinetuneMemoryCheck.$availableOverride.withValue(200 << 20) {
            XCTAssertThrowsError(try Finetune.run(try FinetuneConfig.from(json: json))) { e in
                let m = "\(e)"
                XCTAssertTrue(m.contains("before loading the model") && m.contains("its weights included")
                              && m.contains("0.20 GiB available") && m.contains("skip_memory_check"), m)
            }
            json["skip_memory_check"] = true
            let r = try Finetune.run(try FinetuneConfig.from(json: json))
            XCTAssertEqual(r.summary.steps, 1)
        }
    }
}
