// Text generation: prefill the prompt into a KV cache, then decode token by token with the
// sampler, streaming text as soon as it is complete UTF-8, stopping at EOS / end-of-turn
// tokens, stop strings or the token budget.

import Foundation
import SFTKernels

/// How much to generate and how: length, sampling, and extra stop strings and tokens (the
/// model's end-of-sequence tokens always stop).
public struct GenerationConfig: Equatable, Sendable {
    /// Most tokens to generate after the prompt (`--max-new-tokens`, default 128).
    public var maxNewTokens: Int = 128
    /// How each token is picked (default: greedy).
    public var sampling = SamplingConfig()
    /// Generation ends when the text ends with one of these (the stop string is removed).
    public var stopStrings: [String] = []
    /// Extra stop tokens besides the tokenizer's EOS / end-of-turn ids.
    public var stopTokenIds: [Int32] = []

    /// - Parameters:
    ///   - maxNewTokens: Token budget.
    ///   - sampling: Sampling settings.
    ///   - stopStrings: Texts that end generation.
    ///   - stopTokenIds: Extra token ids that end generation.
    public init(maxNewTokens: Int = 128, sampling: SamplingConfig = SamplingConfig(), stopStrings: [String] = [],
                stopTokenIds: [Int32] = []) {
        self.maxNewTokens = maxNewTokens; self.sampling = sampling; self.stopStrings = stopStrings
        self.stopTokenIds = stopTokenIds
    }
}

/// The generated tokens and text, why generation stopped, and its timings.
public struct GenerationResult: Equatable, Sendable {
    /// Why generation ended (the raw values are the `stop_reason` of `sftctl generate --json`).
    public enum StopReason: String, Sendable {
        /// "eos": the model produced an end-of-sequence, end-of-turn or extra stop token.
        case endOfSequence = "eos"
        /// "stop_string": the text ended with one of `GenerationConfig.stopStrings`.
        case stopString = "stop_string"
        /// "length": `GenerationConfig.maxNewTokens` tokens were generated.
        case length
    }
    /// The new tokens (the stop token itself excluded).
    public var ids: [Int32]
    /// The decoded text of `ids` (a matched stop string removed).
    public var text: String
    /// Why generation ended.
    public var stopReason: StopReason
    /// Number of tokens in the prompt.
    public var promptTokens: Int
    /// Seconds for the prompt, and for the decode steps.
    public var prefillSeconds: Double
    /// Wall-clock seconds of the decode steps after the prompt.
    public var decodeSeconds: Double
}

/// Greedy or sampled generation with a KV cache, streaming text as it is decoded. Get one from
/// `LanguageModel.generator`.
public final class Generator {
    /// The model generating.
    public let model: CausalLM
    /// The tokenizer that decodes the generated ids to text.
    public let tokenizer: Tokenizer

    /// - Parameters:
    ///   - model: The model to run.
    ///   - tokenizer: Its tokenizer (stop tokens and decoding).
    public init(model: CausalLM, tokenizer: Tokenizer) {
        self.model = model
        self.tokenizer = tokenizer
    }

    /// Generates after `prompt` (token ids). `onText` receives each completed piece of text;
    /// return false from it to stop early.
    public func generate(prompt: [Int32], config: GenerationConfig,
                         onText: ((String) -> Bool)? = nil) throws -> GenerationResult {
        guard !prompt.isEmpty else { throw SFTError.config(field: "prompt", message: "the prompt has no tokens") }
        let cache = try model.makeCache(capacity: prompt.count + config.maxNewTokens + 1)
        var sampler = Sampler(config.sampling)
        let stops = Set(tokenizer.eosTokenIds + config.stopTokenIds)
        var context = prompt
        var ids: [Int32] = []
        var text = ""
        var decoder = tokenizer.streamingDecoder(skipSpecialTokens: true)
        let t0 = Date()
        var logits = try model.decode(prompt, cache: cache)
        let prefill = Date().timeIntervalSince(t0)
        var reason = GenerationResult.StopReason.length
        var emitted = 0  // characters of `text` already handed to onText
        let holdBack = config.stopStrings.map(\.count).max().map { max(0, $0 - 1) } ?? 0
        let t1 = Date()
        loop: while ids.count < config.maxNewTokens {
            let next = sampler.next(logits: logits, context: context)
            if stops.contains(next) { reason = .endOfSequence; break }
            ids.append(next)
            context.append(next)
            text += decoder.push(next)
            if let s = config.stopStrings.first(where: { text.contains($0) }), let r = text.range(of: s) {
                text = String(text[..<r.lowerBound])
                reason = .stopString
                break loop
            }
            // Stream what can no longer become part of a stop string.
            if let onText, text.count - holdBack > emitted {
                let end = text.index(text.startIndex, offsetBy: text.count - holdBack)
                let piece = String(text[text.index(text.startIndex, offsetBy: emitted)..<end])
                emitted = text.count - holdBack
                if !onText(piece) { break }
            }
            if ids.count == config.maxNewTokens { break }
            logits = try model.decode([next], cache: cache)
        }
        if reason != .stopString { text += decoder.finish() }
        if let onText, text.count > emitted {
            _ = onText(String(text[text.index(text.startIndex, offsetBy: emitted)...]))
        }
        return GenerationResult(ids: ids, text: text, stopReason: reason, promptTokens: prompt.count,
                                prefillSeconds: prefill, decodeSeconds: Date().timeIntervalSince(t1))
    }

    /// Generates for several prompts (one after another; each has its own cache).
    public func generate(prompts: [[Int32]], config: GenerationConfig) throws -> [GenerationResult] {
        try prompts.map { try generate(prompt: $0, config: config) }
    }
}
