// Trainer invariants: accumulation over micro-batches equals one big batch, a resumed run
// reproduces the uninterrupted run's losses exactly, resume refuses changed data, checkpoints
// are atomic, and the loss falls.
import XCTest
import SFTCore
import SFTKernels

final class TrainerTests: XCTestCase {
    func examples(_ n: Int, seed: UInt64) -> [TokenizedExample] {
        (0..<n).map { i in
            let len = 5 + i % 4
            let ids = TinyLlama.tokens(len, seed: seed &+ UInt64(i))
            return TokenizedExample(ids: ids, trained: (0..<len).map { $0 >= 2 }, source: SourceLocation(line: i + 1, index: i))
        }
    }

    func tempDir() throws -> URL {
        let u = FileManager.default.temporaryDirectory.appendingPathComponent("sft-trainer-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: u) }
        return u
    }

    func trainer(_ m: LlamaModel, _ ex: [TokenizedExample], options: BatchingOptions, config: TrainerConfig, dir: URL) throws -> Trainer {
        let plan = try BatchPlan(examples: ex, options: options)
        return try Trainer(model: m, config: config, loader: try DataLoader(plan: plan), evalBatches: [], outputDirectory: dir)
    }

    func testAccumulatingMicroBatchesEqualsOneBigBatch() throws {
        let ex = examples(4, seed: 100)
        var cfg = TrainerConfig()
        cfg.learningRate = 1e-2
        cfg.schedule = .constant
        var results: [(Double, [Float])] = []
        for (mb, accum) in [(4, 1), (1, 4), (2, 2)] {
            let m = try TinyLlama.make()
            try m.applyLoRA(LoRAConfig(r: 2, alpha: 4, dropout: 0), seed: 3)
            let opts = BatchingOptions(maxSeqLength: 16, layout: .padded, microBatchSize: mb, gradientAccumulation: accum,
                                       epochs: 1, shuffle: false)
            let t = try trainer(m, ex, options: opts, config: cfg, dir: try tempDir())
            var loader = t.loader
            let step = loader.nextStep()!
            XCTAssertEqual(step.batches.count, accum)
            let (loss, _) = try t.trainStep(step)
            let after = try m.trainableParameters.flatMap { try $0.1.value.floats() }
            results.append((loss, after))
        }
        for r in results.dropFirst() {
            XCTAssertEqual(r.0, results[0].0, accuracy: 1e-5, "step loss")
            let maxDiff = zip(r.1, results[0].1).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(maxDiff, 1e-5, "updated weights")
        }
    }

    func losses(_ dir: URL) throws -> [Int: Double] {
        let text = try String(contentsOf: dir.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
        var out: [Int: Double] = [:]
        for line in text.split(separator: "\n") {
            let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            if let l = o["loss"] as? Double { out[o["step"] as! Int] = l }
        }
        return out
    }

    func testResumeAfterStopReproducesTheUninterruptedRunExactly() throws {
        let ex = examples(12, seed: 200)
        var cfg = TrainerConfig()
        cfg.learningRate = 5e-3
        cfg.schedule = .cosine
        cfg.warmupSteps = 2
        cfg.adamw.weightDecay = 0.1
        let opts = BatchingOptions(maxSeqLength: 16, layout: .packed, microBatchSize: 1, gradientAccumulation: 2,
                                   epochs: 3, shuffle: true, seed: 5)
        func fresh() throws -> LlamaModel {
            let m = try TinyLlama.make()
            try m.applyLoRA(LoRAConfig(r: 2, alpha: 4, dropout: 0.2), seed: 3)
            return m
        }
        // Uninterrupted.
        let full = try tempDir()
        let t1 = try trainer(try fresh(), ex, options: opts, config: cfg, dir: full)
        let s1 = try t1.train()
        XCTAssertGreaterThan(s1.steps, 6)
        // Stopped after step 4, then resumed in a new trainer.
        let split = try tempDir()
        var cfg2 = cfg
        cfg2.saveSteps = 2
        cfg2.saveTotalLimit = 2
        let t2 = try trainer(try fresh(), ex, options: opts, config: cfg2, dir: split)
        t2.onEvent = { if case .step(let m, _) = $0, m.step == 4 { return .stop } else { return .continue } }
        _ = try t2.train()
        let ckpts = Trainer.checkpoints(in: split)
        XCTAssertEqual(ckpts.map(\.lastPathComponent), ["checkpoint-2", "checkpoint-4"])
        let t3 = try trainer(try fresh(), ex, options: opts, config: cfg2, dir: split)
        t3.random.offset = 12345  // must be restored from the checkpoint
        let s3 = try t3.train(resumeFrom: ckpts.last!)
        XCTAssertEqual(s3.steps, s1.steps)
        let a = try losses(full), b = try losses(split)
        XCTAssertEqual(a.count, s1.steps)
        for step in 1...s1.steps { XCTAssertEqual(a[step], b[step], "step \(step)") }
        // And the weights end equal.
        let wa = try t1.model.trainableParameters.flatMap { try $0.1.value.floats() }
        let wb = try t3.model.trainableParameters.flatMap { try $0.1.value.floats() }
        XCTAssertEqual(wa, wb)
    }

    func testResumeRefusesChangedDataNamingWhatChanged() throws {
        let dir = try tempDir()
        var cfg = TrainerConfig()
        cfg.saveSteps = 1
        cfg.maxSteps = 1
        let opts = BatchingOptions(maxSeqLength: 16, microBatchSize: 1, gradientAccumulation: 1, epochs: 1)
        let m = try TinyLlama.make()
        try m.applyLoRA(LoRAConfig(r: 2, alpha: 4, dropout: 0), seed: 3)
        _ = try trainer(m, examples(4, seed: 1), options: opts, config: cfg, dir: dir).train()
        let t = try trainer(m, examples(4, seed: 2), options: opts, config: cfg, dir: dir)
        XCTAssertThrowsError(try t.train(resumeFrom: Trainer.checkpoints(in: dir).last!)) { e in
            XCTAssertTrue("\(e)".contains("'data'"), "\(e)")
        }
    }

    func testIncompleteCheckpointFoldersAreNeverPicked() throws {
        let dir = try tempDir()
        try FileManager.default.createDirectory(at: dir.appendingPathComponent(".tmp-checkpoint-9-123"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("checkpoint-7"), withIntermediateDirectories: true)
        XCTAssertEqual(Trainer.checkpoints(in: dir), [])
    }

    func testLossFallsOnRepeatedData() throws {
        let ex = examples(4, seed: 300)
        var cfg = TrainerConfig()
        cfg.learningRate = 3e-2
        cfg.schedule = .constant
        let m = try TinyLlama.make()
        try m.applyLoRA(LoRAConfig(r: 4, alpha: 8, dropout: 0), seed: 3)
        let dir = try tempDir()
        let opts = BatchingOptions(maxSeqLength: 32, microBatchSize: 1, gradientAccumulation: 1, epochs: 30, shuffle: false)
        let s = try trainer(m, ex, options: opts, config: cfg, dir: dir).train()
        let l = try losses(dir)
        XCTAssertLessThan(l[s.steps]!, 0.5 * l[1]!)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("loss.svg").path))
    }
}
