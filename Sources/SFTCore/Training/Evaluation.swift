// Evaluation of a language model: mean next-token cross-entropy and perplexity over plain text
// (in windows) or over a dataset's formatted examples (all tokens, and trained tokens only).

import Foundation
import SFTKernels

/// Mean next-token cross-entropy (nats per token) and perplexity of a model on text or a dataset
/// (`sftctl eval`).
public struct EvalReport: CustomStringConvertible {
    /// Mean cross-entropy over all predicted tokens, in nats.
    public var meanLoss: Double
    /// Tokens predicted (each has a token before it).
    public var tokens: Int
    /// Over the trained (assistant) tokens, for chat datasets.
    public var trainedMeanLoss: Double?
    /// How many trained tokens `trainedMeanLoss` averages over.
    public var trainedTokens: Int?
    /// exp(`meanLoss`).
    public var perplexity: Double { Foundation.exp(meanLoss) }

    /// The report as one JSON object (keys sorted).
    public var json: JSONValue {
        var o: [String: JSONValue] = ["mean_loss": .double(meanLoss), "tokens": .int(tokens), "perplexity": .double(perplexity)]
        if let t = trainedMeanLoss { o["assistant_mean_loss"] = .double(t); o["assistant_perplexity"] = .double(Foundation.exp(t)) }
        if let n = trainedTokens { o["assistant_tokens"] = .int(n) }
        return .sortedObject(o)
    }

    public var description: String {
        var s = "mean loss \(meanLoss) over \(tokens) tokens, perplexity \(perplexity)"
        if let t = trainedMeanLoss, let n = trainedTokens { s += "\nassistant tokens: mean loss \(t) over \(n), perplexity \(Foundation.exp(t))" }
        return s
    }
}

/// Mean next-token loss and perplexity of a model on text or a dataset.
public enum Evaluation {
    /// Loss over every next-token prediction of `text`, in non-overlapping windows.
    public static func text(_ lm: LanguageModel, _ text: String, window: Int = 2048) throws -> EvalReport {
        let ids = lm.encodePrompt(text)
        guard ids.count >= 2 else { throw SFTError.data(path: "text", line: 1, message: "fewer than 2 tokens") }
        var sum = 0.0, count = 0
        var start = 0
        while start < ids.count - 1 {
            let chunk = Array(ids[start..<min(ids.count, start + window)])
            let (s, n) = try lossSum(lm.model, chunk, targets: Array(chunk.dropFirst()) + [-100])
            sum += s; count += n
            start += window - 1  // the window's last token starts the next one, so every prediction counts once
        }
        return EvalReport(meanLoss: sum / Double(count), tokens: count)
    }

    /// Loss over a dataset's formatted examples: all tokens, and the trained ones.
    public static func dataset(_ lm: LanguageModel, _ url: URL, config: DataConfig) throws -> EvalReport {
        let renderer = lm.chatTemplate.map { TemplateRenderer(template: $0, tokenizer: lm.tokenizer) }
        let prepared = try prepareDataset(url, config: config, tokenizer: lm.tokenizer, renderer: renderer)
        var all = 0.0, allN = 0, tr = 0.0, trN = 0
        for ex in prepared.examples {
            let ids = Array(ex.ids.prefix(config.maxSeqLength))
            guard ids.count >= 2 else { continue }
            let (s, n) = try lossSum(lm.model, ids, targets: Array(ids.dropFirst()) + [-100])
            all += s; allN += n
            let trainedTargets: [Int32] = (0..<ids.count).map { t in
                t + 1 < ids.count && ex.trained[t + 1] ? ids[t + 1] : -100
            }
            if trainedTargets.contains(where: { $0 != -100 }) {
                let (s2, n2) = try lossSum(lm.model, ids, targets: trainedTargets)
                tr += s2; trN += n2
            }
        }
        guard allN > 0 else { throw SFTError.data(path: url.path, line: 0, message: "no examples to evaluate") }
        return EvalReport(meanLoss: all / Double(allN), tokens: allN, trainedMeanLoss: trN > 0 ? tr / Double(trN) : nil,
                          trainedTokens: trN > 0 ? trN : nil)
    }

    static func lossSum(_ model: CausalLM, _ ids: [Int32], targets: [Int32]) throws -> (Double, Int) {
        try Autograd.withNoGrad {
            let be = model.lmHeadWeight.value.backend
            let input = try ModelInput(tokens: ids, on: be)
            let (l, n) = try model.loss(input, targets: try Tensor(ints: targets, shape: [targets.count], on: be), normalizer: 1)
            return (Double(try l.item()), n)
        }
    }
}
