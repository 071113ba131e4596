// Measured training and decode speed on a real model, for `sftctl bench train|decode` and
// BENCHMARKS.md: median step time after a warm-up, tokens/s, forward/backward split, peak
// memory (allocator) and peak RSS (the process).

import Foundation
import SFTKernels

/// Wall-clock seconds of one training step, by phase (the device synchronized after each).
public struct StepTiming: Sendable {
    /// Forward pass and loss.
    public var forward: Double
    /// Backward pass.
    public var backward: Double
    /// Gradient clipping and the AdamW update.
    public var optimizer: Double
    /// All three phases.
    public var total: Double { forward + backward + optimizer }
}

/// What `TrainingBenchmark.run` measured (`sftctl bench train`).
public struct TrainBenchResult: Sendable {
    /// Tokens per step (the row length).
    public var tokens: Int
    /// The timed steps, warm-up excluded.
    public var steps: [StepTiming]
    /// The backend's peak allocated memory over the warm-up and timed steps, in bytes.
    public var peakMemoryBytes: Int
    /// The process's peak resident set size, in bytes.
    public var peakRSSBytes: Int
    /// Each phase's median over `steps` (so `median.total` need not be the median of totals).
    public var median: StepTiming {
        func med(_ f: (StepTiming) -> Double) -> Double { let s = steps.map(f).sorted(); return s[s.count / 2] }
        return StepTiming(forward: med(\.forward), backward: med(\.backward), optimizer: med(\.optimizer))
    }
    /// `tokens` / `median.total`.
    public var tokensPerSecond: Double { Double(tokens) / median.total }
}

/// Measured training speed on a real model, for `sftctl bench train` and BENCHMARKS.md: median step
/// time after a warm-up, tokens per second, forward/backward split and peak memory.
public enum TrainingBenchmark {
    /// Times `steps` optimizer steps (after one warm-up) of batch 1 × `seq` random tokens.
    /// With `documents` > 1 the row is packed: that many equal documents, positions restarting
    /// at each, no attention across them, no loss on each document's last token.
    public static func run(model: CausalLM, seq: Int, steps: Int, checkpointing: Bool, documents: Int = 1,
                           seed: UInt64 = 1) throws -> TrainBenchResult {
        let be = model.lmHeadWeight.value.backend
        var rng = SeededRandom(seed: seed)
        let ids = (0..<seq).map { _ in Int32(rng.next() % UInt64(model.vocabSize)) }
        guard documents >= 1, documents <= seq else {
            throw SFTError.config(field: "documents", message: "\(documents) documents in a row of \(seq) tokens")
        }
        let doc = (0..<seq).map { Int32($0 * documents / seq) }
        var positions = [Int32](repeating: 0, count: seq)
        var labels = Array(ids.dropFirst()) + [-100]
        for t in 0..<seq {
            if t > 0, doc[t] == doc[t - 1] { positions[t] = positions[t - 1] + 1 }
            if t + 1 < seq, doc[t + 1] != doc[t] { labels[t] = -100 }
        }
        let input = documents == 1 ? try ModelInput(tokens: ids, on: be)
            : ModelInput(ids: try Tensor(ints: ids, shape: [seq], on: be), positions: try Tensor(ints: positions, shape: [seq], on: be),
                         docIds: try Tensor(ints: doc, shape: [seq], on: be), B: 1, T: seq)
        let targets = try Tensor(ints: labels, shape: [seq], on: be)
        let params = model.trainableParameters
        let opt = try AdamW(parameters: params, config: AdamWConfig())
        var timings: [StepTiming] = []
        be.resetPeakMemory()
        let random = RandomStream(seed: 0x5f7_5eed)
        try Autograd.training(random) { for i in 0...steps {
            model.zeroGrad()
            let t0 = Date()
            let (l, _) = try model.loss(input, targets: targets, checkpointing: checkpointing)
            try be.synchronize()
            let t1 = Date()
            try Autograd.backward(l)
            try be.synchronize()
            let t2 = Date()
            try clipGradients(params, maxNorm: 1)
            try opt.update(lr: 1e-5)
            try be.synchronize()
            let t3 = Date()
            if i == 0 { OpProfile.reset() }  // the profile covers the timed steps only
            if i > 0 {
                timings.append(StepTiming(forward: t1.timeIntervalSince(t0), backward: t2.timeIntervalSince(t1),
                                          optimizer: t3.timeIntervalSince(t2)))
            }
        } }
        return TrainBenchResult(tokens: seq, steps: timings, peakMemoryBytes: be.memoryStats.peakBytes,
                                peakRSSBytes: peakRSS())
    }

    /// Batch-1 greedy decode: tokens/s over `tokens` new tokens after `prompt`.
    public static func decode(model: CausalLM, prompt: [Int32], tokens: Int) throws -> Double {
        let cache = try model.makeCache(capacity: prompt.count + tokens + 1)
        var logits = try model.decode(prompt, cache: cache)
        let t0 = Date()
        for _ in 0..<tokens {
            let next = Int32(logits.indices.max { logits[$0] < logits[$1] }!)
            logits = try model.decode([next], cache: cache)
        }
        return Double(tokens) / Date().timeIntervalSince(t0)
    }
}

/// Peak resident set size of this process (VmHWM), in bytes; 0 where unavailable.
public func peakRSS() -> Int {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in s.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kb = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
        return kb * 1024
    }
    return 0
}
