// Next-token sampling as transformers' generate applies it: repetition penalty, then
// temperature, then top-k, top-p and min-p filtering, then a draw (greedy when temperature 0).

import Foundation
import SFTKernels

/// How the next token is picked (transformers' generate parameters; sftctl's `--temperature`,
/// `--top-k`, `--top-p`, `--min-p`, `--repetition-penalty`, `--seed`). The defaults are greedy
/// decoding.
public struct SamplingConfig: Codable, Equatable, Sendable {
    /// 0 = greedy.
    public var temperature: Double = 0
    /// Keep only the K most likely tokens before drawing; 0 = no limit.
    public var topK: Int = 0
    /// Nucleus sampling: keep the most likely tokens until their probability sums to at least P;
    /// 1 = keep all.
    public var topP: Double = 1
    /// Drop tokens less likely than P times the most likely one; 0 = keep all.
    public var minP: Double = 0
    /// > 1 discourages tokens already in the context (CTRL-style, as transformers).
    public var repetitionPenalty: Double = 1
    /// Seed of the draws: the same seed, prompt and model give the same text.
    public var seed: UInt64 = 0

    /// - Parameters:
    ///   - temperature: Softmax temperature; 0 = greedy.
    ///   - topK: Top-k limit; 0 = none.
    ///   - topP: Top-p mass; 1 = none.
    ///   - minP: Min-p ratio; 0 = none.
    ///   - repetitionPenalty: Penalty for tokens in the context; 1 = none.
    ///   - seed: Seed of the draws.
    public init(temperature: Double = 0, topK: Int = 0, topP: Double = 1, minP: Double = 0,
                repetitionPenalty: Double = 1, seed: UInt64 = 0) {
        self.temperature = temperature; self.topK = topK; self.topP = topP; self.minP = minP
        self.repetitionPenalty = repetitionPenalty; self.seed = seed
    }
}

/// Picks next tokens from logits under a `SamplingConfig`, with its own seeded random stream.
public struct Sampler {
    /// The settings in use.
    public let config: SamplingConfig
    var rng: SeededRandom

    /// A sampler whose random stream starts at `config.seed`.
    /// - Parameter config: The settings.
    public init(_ config: SamplingConfig) {
        self.config = config
        rng = SeededRandom(seed: config.seed)
    }

    /// Picks the next token from `logits` given the tokens seen so far.
    public mutating func next(logits input: [Float], context: [Int32]) -> Int32 {
        var logits = input
        if config.repetitionPenalty != 1 {
            let p = Float(config.repetitionPenalty)
            for t in Set(context) where Int(t) < logits.count {
                let l = logits[Int(t)]
                logits[Int(t)] = l > 0 ? l / p : l * p
            }
        }
        if config.temperature <= 0 {
            var best = 0
            for i in 1..<logits.count where logits[i] > logits[best] { best = i }
            return Int32(best)
        }
        let invT = Float(1 / config.temperature)
        // Candidates sorted by logit, descending.
        var idx = Array(0..<logits.count)
        idx.sort { logits[$0] > logits[$1] }
        if config.topK > 0 && config.topK < idx.count { idx.removeLast(idx.count - config.topK) }
        let maxL = logits[idx[0]] * invT
        var probs = idx.map { Foundation.exp(Double(logits[$0] * invT - maxL)) }
        var total = probs.reduce(0, +)
        if config.topP < 1 {
            var cum = 0.0, keep = probs.count
            for (i, p) in probs.enumerated() {
                cum += p / total
                if cum >= config.topP { keep = i + 1; break }
            }
            probs.removeLast(probs.count - keep); idx.removeLast(idx.count - keep)
            total = probs.reduce(0, +)
        }
        if config.minP > 0 {
            let threshold = config.minP * probs[0] // probs[0] is the largest
            let keep = max(1, probs.firstIndex { $0 < threshold } ?? probs.count)
            probs.removeLast(probs.count - keep); idx.removeLast(idx.count - keep)
            total = probs.reduce(0, +)
        }
        var u = rng.nextUnit() * total
        for (i, p) in probs.enumerated() {
            u -= p
            if u <= 0 { return Int32(idx[i]) }
        }
        return Int32(idx[idx.count - 1])
    }
}
