// A run never saves non-finite weights, stops when its loss runs away, owns its folder, and
// writes its outputs whole or not at all.
import Foundation
@testable import SFTCore
import SFTKernels
import XCTest

final class RunSafetyTests: XCTestCase {
    func tempDir() throws -> URL {
        let u = FileManager.default.temporaryDirectory.appendingPathComponent("sft-safety-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: u) }
        return u
    }

    func tinyTrainer(dir: URL) throws -> (Trainer, LlamaModel) {
        let m = try TinyLlama.make()
        try m.applyLoRA(LoRAConfig(r: 2, alpha: 4, dropout: 0), seed: 3)
        let ex = (0..<4).map { i in
            TokenizedExample(ids: TinyLlama.tokens(7, seed: UInt64(40 + i)), trained: (0..<7).map { $0 >= 2 },
                             source: SourceLocation(line: i + 1, index: i))
        }
        let opts = BatchingOptions(maxSeqLength: 16, layout: .padded, microBatchSize: 1, gradientAccumulation: 2,
                                   epochs: 1, shuffle: false)
        let t = try Trainer(model: m, config: TrainerConfig(), loader: try DataLoader(plan: try BatchPlan(examples: ex, options: opts)),
                            evalBatches: [], outputDirectory: dir)
        return (t, m)
    }

    /// A NaN loss stops the step naming step and micro-batch, before any weight changes.
    func testNonFiniteLossStopsWithoutUpdating() throws {
        let (t, m) = try tinyTrainer(dir: try tempDir())
        let (name, p) = m.trainableParameters.first { $0.0.contains("lora_A") }!
        var values = try p.value.floats()
        values[0] = .nan
        try p.value.assign(values)
        let before = try m.trainableParameters.map { try $0.1.value.floats() }
        var loader = t.loader
        XCTAssertThrowsError(try t.trainStep(loader.nextStep()!)) { e in
            guard case SFTError.diverged(let step, let mb, _) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(step, 1)
            XCTAssertEqual(mb, 0)
            XCTAssertTrue("\(e)".contains("step 1, micro-batch 0"), "\(e)")
        }
        let after = try m.trainableParameters.map { try $0.1.value.floats() }
        for (a, b) in zip(after, before) {
            XCTAssertTrue(zip(a, b).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) }, "\(name): weights changed")
        }
        // And `train` ends with the error, writing no checkpoint.
        XCTAssertThrowsError(try t.train())
        XCTAssertEqual(Trainer.checkpoints(in: t.outputDirectory), [])
    }

    func testDivergenceWatch() {
        var w = Divergence(vocabSize: 1000)
        // A falling, noisy loss never trips it.
        for i in 0..<200 { XCTAssertNil(w.observe(loss: 5 / Double(1 + i) + (i % 3 == 0 ? 0.3 : 0), gradNorm: 1)) }
        // A loss that runs away to 4x+ its minimum trips it after `patience` steps, not before.
        var r = Divergence(vocabSize: 1000)
        XCTAssertNil(r.observe(loss: 1, gradNorm: 1))
        for i in 1..<Divergence.patience { XCTAssertNil(r.observe(loss: 4.5, gradNorm: 1), "step \(i)") }
        XCTAssertNotNil(r.observe(loss: 4.5, gradNorm: 1))
        // Sitting at ln(vocab) with a zero gradient trips it; with a gradient it does not.
        var s = Divergence(vocabSize: 1000), g = Divergence(vocabSize: 1000)
        var tripped: String? = nil
        for _ in 0..<Divergence.patience {
            tripped = s.observe(loss: Foundation.log(1000.0), gradNorm: 0)
            XCTAssertNil(g.observe(loss: Foundation.log(1000.0), gradNorm: 0.5))
        }
        XCTAssertTrue(tripped?.contains("ln(vocab)") ?? false, tripped ?? "nil")
    }

    func testRunFolderLock() throws {
        let dir = try tempDir()
        let lock = try RunFolderLock(folder: dir)
        XCTAssertThrowsError(try RunFolderLock(folder: dir)) { e in
            XCTAssertTrue("\(e)".contains("another run (process \(getpid())"), "\(e)")
        }
        lock.release()
        let again = try RunFolderLock(folder: dir)
        again.release()
        // A lock left by a process that no longer exists is taken over.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/true")
        try p.run()
        p.waitUntilExit()
        try "\(p.processIdentifier) \(ProcessInfo.processInfo.hostName.replacingOccurrences(of: " ", with: "_"))\n"
            .write(to: dir.appendingPathComponent(RunFolderLock.fileName), atomically: true, encoding: .utf8)
        let taken = try RunFolderLock(folder: dir)
        XCTAssertEqual(try String(contentsOf: taken.url, encoding: .utf8).split(separator: " ").first.map(String.init), "\(getpid())")
        taken.release()
        // One on another host is not.
        try "1 some-other-host\n".write(to: dir.appendingPathComponent(RunFolderLock.fileName), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try RunFolderLock(folder: dir)) { e in XCTAssertTrue("\(e)".contains("some-other-host"), "\(e)") }
    }

    func testAtomicFolderWrite() throws {
        let dir = try tempDir()
        let dest = dir.appendingPathComponent("adapter")
        try writeFolderAtomically(dest) { try "one".write(to: $0.appendingPathComponent("a.txt"), atomically: false, encoding: .utf8) }
        struct Boom: Error {}
        XCTAssertThrowsError(try writeFolderAtomically(dest) { tmp in
            try "two".write(to: tmp.appendingPathComponent("a.txt"), atomically: false, encoding: .utf8)
            throw Boom()
        })
        XCTAssertEqual(try String(contentsOf: dest.appendingPathComponent("a.txt"), encoding: .utf8), "one", "a failed write leaves the old output")
        try writeFolderAtomically(dest) { try "three".write(to: $0.appendingPathComponent("b.txt"), atomically: false, encoding: .utf8) }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dest.path), ["b.txt"], "the new output replaces the old one whole")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["adapter"], "no temporary folders left")
    }

    /// A fresh run refuses a folder with another run's checkpoints unless told to overwrite;
    /// the final weights also land in a last checkpoint.
    func testFreshRunRefusesAFolderWithCheckpoints() throws {
        _ = try Assets.require(Assets.smolLM2)
        let out = try tempDir()
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        func config(_ extra: [String: Any]) throws -> FinetuneConfig {
            try FinetuneConfig.from(json: [
                "model": Assets.smolLM2.path, "data": root.appendingPathComponent("Examples/data/sharegpt.json").path,
                "format": "sharegpt", "output_dir": out.path, "max_steps": 1, "max_seq_length": 32, "lora_r": 2,
            ].merging(extra) { $1 })
        }
        let first = try Finetune.run(try config([:]))
        XCTAssertEqual(Trainer.checkpoints(in: out).map(\.lastPathComponent), ["checkpoint-1"], "the last step is checkpointed")
        XCTAssertTrue(FileManager.default.fileExists(atPath: first.output.appendingPathComponent("adapter_model.safetensors").path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent(RunFolderLock.fileName).path), "lock released")
        XCTAssertThrowsError(try Finetune.run(try config([:]))) { e in
            XCTAssertTrue("\(e)".contains("overwrite_output_dir") && "\(e)".contains("checkpoint-1"), "\(e)")
        }
        _ = try Finetune.run(try config(["overwrite_output_dir": true]))
        XCTAssertEqual(Trainer.checkpoints(in: out).map(\.lastPathComponent), ["checkpoint-1"])
    }
}
