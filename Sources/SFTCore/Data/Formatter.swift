// From an SFTExample to token ids and a loss mask.
//
// The example is rendered to text (a config's prompt template; the chat template; or — without
// one — the Stanford Alpaca prompt, prompt+completion, or Guanaco-style turns), the spans to
// train are taken from the render in UTF-8 bytes (or from the data: loss_masking_spans /
// trained_spans), the text is tokenized with byte offsets through PromptTokens (BOS exactly as
// generation will see it), and:
//
//   a token is trained iff its byte range overlaps a trained span
//   (token.lower < span.upper && span.lower < token.upper).
//
// So a token straddling a span boundary — typically a BPE token that glues the space or newline
// before an answer to its first word — is trained: it carries answer text the model must
// produce. Tokens with an empty range (an added BOS) overlap nothing and are never trained,
// except under `.all`. The mask never looks at token ids: an EOS inside or after an assistant
// turn is trained even when the pad id equals the EOS id (padding is masked by position, in
// batching, never by id).
import Foundation
import SFTKernels

/// Which tokens the loss is computed on.
public enum MaskPolicy: String, CaseIterable, Sendable, Codable {
    /// Every assistant turn (default for conversations).
    case assistant
    /// Only the last assistant turn.
    case lastTurn = "last_turn"
    /// Only the completion / response (default for prompt-completion and instruction data); with
    /// a chat template this is the assistant turn.
    case completion
    /// Every token (always the case for raw text, which has no turns).
    case all

    /// Parses a user-given name (accepts `last`, `assistant_only`, `completion_only`, …).
    public init?(name: String) {
        switch name.lowercased().replacingOccurrences(of: "-", with: "_") {
        case "assistant", "assistant_only": self = .assistant
        case "last_turn", "last", "last_assistant_turn": self = .lastTurn
        case "completion", "completion_only", "response": self = .completion
        case "all", "all_tokens": self = .all
        default: return nil
        }
    }
}

/// How examples become tokens.
public struct FormatOptions: Equatable, Sendable {
    /// nil: assistant turns for conversations, the completion for instruction and
    /// prompt/completion data, all tokens for raw text.
    public var maskPolicy: MaskPolicy?
    /// Train the end-of-turn marker (and an appended EOS) with each trained turn. On by default:
    /// a model that never learns to stop is the most common SFT failure.
    public var trainEndOfTurn: Bool
    /// Append the tokenizer's EOS id after the text. nil: yes without a chat template (the
    /// built-in formats have no end marker of their own), no with one (templates end turns).
    public var appendEOS: Bool?
    /// Keep the rendered text and token offsets in each `TokenizedExample` (for showing
    /// samples; costs memory on large datasets).
    public var keepText: Bool
    /// A prompt for instruction and prompt/completion records that replaces both the built-in
    /// prompts and the chat template for them (see PromptTemplate.swift).
    public var promptTemplate: PromptTemplate?

    /// Options from their fields; each argument sets the property of the same name.
    public init(maskPolicy: MaskPolicy? = nil, trainEndOfTurn: Bool = true, appendEOS: Bool? = nil, keepText: Bool = false,
                promptTemplate: PromptTemplate? = nil) {
        self.maskPolicy = maskPolicy
        self.trainEndOfTurn = trainEndOfTurn
        self.appendEOS = appendEOS
        self.keepText = keepText
        self.promptTemplate = promptTemplate
    }
}

/// The rendered text behind a tokenized example, for display.
public struct FormattedText: Equatable, Sendable {
    /// The rendered text the tokens came from.
    public var text: String
    /// Per token, its UTF-8 byte range in `text` (empty for tokens that cover no text).
    public var offsets: [Range<Int>]
}

/// One example as token ids with a per-token training mask.
public struct TokenizedExample: Equatable, Sendable {
    /// Token ids, BOS included when the tokenizer adds one, EOS when appended.
    public var ids: [Int32]
    /// Per token: whether the model is trained to predict it (HF `labels != -100`).
    public var trained: [Bool]
    /// The record it came from.
    public var source: SourceLocation
    /// Text and offsets, when `FormatOptions.keepText` is set.
    public var formatted: FormattedText?

    /// An example from ids and a mask of the same length (a precondition: unequal lengths are a bug
    /// in the caller).
    public init(ids: [Int32], trained: [Bool], source: SourceLocation, formatted: FormattedText? = nil) {
        precondition(ids.count == trained.count, "ids and mask differ in length")
        self.ids = ids
        self.trained = trained
        self.source = source
        self.formatted = formatted
    }

    /// HF-style labels, not shifted: the id where trained, else -100.
    public var labels: [Int32] { zip(ids, trained).map { $1 ? $0 : -100 } }

    /// Trained tokens that have a token before them, i.e. that can be predicted.
    public var predictableTrainedTokens: Int { trained.dropFirst().filter { $0 }.count }

    /// The text with trained stretches wrapped in `open`/`close` (e.g. `[[`/`]]`, or ANSI
    /// colour codes). A trained token that covers no text (an appended EOS) shows as `eos`.
    public func markedText(open: String = "[[", close: String = "]]", eos: String = "<eos>") -> String? {
        guard let f = formatted else { return nil }
        let bytes = Array(f.text.utf8)
        var trainedByte = [Bool](repeating: false, count: bytes.count)
        var zeroWidth: [Int: Int] = [:]  // byte position -> trained zero-width tokens there
        for (r, t) in zip(f.offsets, trained) where t {
            if r.isEmpty { zeroWidth[r.lowerBound, default: 0] += 1 }
            for b in r where b < bytes.count { trainedByte[b] = true }
        }
        var out: [UInt8] = []
        var inside = false
        for i in 0...bytes.count {
            if let k = zeroWidth[i] {
                if !inside { out += Array(open.utf8); inside = true }
                for _ in 0..<k { out += Array(eos.utf8) }
            }
            guard i < bytes.count else { break }
            if trainedByte[i] != inside {
                out += Array((trainedByte[i] ? open : close).utf8)
                inside = trainedByte[i]
            }
            out.append(bytes[i])
        }
        if inside { out += Array(close.utf8) }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Renders, tokenizes and masks examples.
///
/// ```swift
/// let f = ExampleFormatter(tokenizer: tok, renderer: template)   // template: ChatRenderer
/// let t = try f.format(example)
/// t.labels   // ids where trained, -100 elsewhere
/// ```
public struct ExampleFormatter {
    /// The tokenizer that turns rendered text into ids with byte offsets.
    public var tokenizer: any TextTokenizer
    /// The chat template; nil uses the built-in formats (see the file header).
    public var renderer: (any ChatRenderer)?
    /// Masking, EOS and prompt settings.
    public var options: FormatOptions

    /// A formatter; each argument sets the property of the same name.
    public init(tokenizer: any TextTokenizer, renderer: (any ChatRenderer)?, options: FormatOptions = FormatOptions()) {
        self.tokenizer = tokenizer
        self.renderer = renderer
        self.options = options
    }

    /// The policy applied to an example of this content when none is set.
    public static func defaultPolicy(for content: SFTContent) -> MaskPolicy {
        switch content {
        case .conversation: return .assistant
        case .instruction, .completion: return .completion
        case .text: return .all
        }
    }

    /// Renders `example`, tokenizes it with byte offsets and marks the tokens that overlap a
    /// trained span.
    /// - Parameter example: one loaded record.
    /// - Returns: its ids and mask, with the rendered text when `options.keepText` is set.
    /// - Throws: the renderer's or prompt template's errors (`SFTError.template` for a
    ///   conversation the chat template rejects; `SFTError.unsupported` for tools without a chat
    ///   template); `SFTError.unsupported` for loss spans on a conversation or instruction record,
    ///   and an error for loss spans outside the text. Callers add the record's location.
    public func format(_ example: SFTExample) throws -> TokenizedExample {
        var policy = options.maskPolicy ?? Self.defaultPolicy(for: example.content)
        let text: String
        var spans: [Range<Int>] = []
        let appendEOS: Bool
        var eosTrained = options.trainEndOfTurn

        switch (example.content, renderer, options.promptTemplate) {
        case (.text(let t), _, _):
            text = t
            policy = .all
            appendEOS = options.appendEOS ?? true
        case (.instruction, _, let template?), (.completion, _, let template?):
            let (t, start) = try template.render(example.content)
            text = t
            spans = [start..<text.utf8.count]
            appendEOS = options.appendEOS ?? true
        case (.instruction(let instruction, let input, let output), nil, nil):
            let prompt = AlpacaPrompt.prompt(instruction: instruction, input: input)
            text = prompt + output
            spans = [prompt.utf8.count..<text.utf8.count]
            appendEOS = options.appendEOS ?? true
        case (.completion(let prompt, let completion), nil, nil):
            text = prompt + completion
            spans = [prompt.utf8.count..<text.utf8.count]
            appendEOS = options.appendEOS ?? true
        default:
            let messages = example.messages
            let rendered = try (renderer ?? GuanacoRenderer()).renderForTraining(messages, tools: example.tools)
            text = rendered.text
            var turns = rendered.assistantTurns
            if policy == .lastTurn, let last = turns.last { turns = [last] }
            spans = turns.map { options.trainEndOfTurn ? $0.throughEndOfTurn : $0.content }
            let n = text.utf8.count
            for s in spans where s.lowerBound < 0 || s.upperBound > n {
                throw SFTError.template(line: 0, column: 0, message: "assistant span \(s) outside the rendered text (\(n) bytes)")
            }
            // Templates end their turns themselves; the built-in Guanaco text does not.
            appendEOS = options.appendEOS ?? (renderer == nil)
            // An appended EOS closes the last message: trained only if that is an assistant turn.
            eosTrained = eosTrained && messages.last?.role == "assistant"
        }

        // Spans given in the data replace the policy's.
        if let given = example.lossSpans {
            switch example.content {
            case .text, .completion: break
            default: throw SFTError.unsupported("loss spans in the data apply to text and prompt/completion records only")
            }
            let (ranges, masked) = try Self.byteRanges(given, in: text)
            let n = text.utf8.count
            if masked {
                var trained: [Range<Int>] = []
                var at = 0
                for r in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
                    if r.lowerBound > at { trained.append(at..<r.lowerBound) }
                    at = max(at, r.upperBound)
                }
                if at < n { trained.append(at..<n) }
                spans = trained
                eosTrained = true  // Fast-LLM: the EOS after the text is outside every span
            } else {
                spans = ranges
                eosTrained = ranges.contains { $0.upperBound == n }
            }
            policy = .completion  // i.e. "the spans", not all
        }

        var (ids, offsets) = try PromptTokens(tokenizer: tokenizer).encode(text)
        guard ids.count == offsets.count else {
            throw SFTError.unsupported("tokenizer returned \(ids.count) ids but \(offsets.count) offsets")
        }
        var trained = offsets.map { r in policy == .all || spans.contains { r.lowerBound < $0.upperBound && $0.lowerBound < r.upperBound } }
        if appendEOS, let eos = tokenizer.eosTokenId {
            let end = text.utf8.count
            ids.append(eos)
            offsets.append(end..<end)
            trained.append(policy == .all || eosTrained)
        }
        return TokenizedExample(ids: ids, trained: trained, source: example.source,
                                formatted: options.keepText ? FormattedText(text: text, offsets: offsets) : nil)
    }

    /// The text generation would start from for this example's first answer — the prompt the
    /// model sees at inference, rendered by the same template / prompt as training; nil for
    /// raw text, which has no prompt.
    public func inferencePrompt(_ example: SFTExample) throws -> String? {
        switch (example.content, renderer, options.promptTemplate) {
        case (.text, _, _): return nil
        case (.instruction, _, let template?), (.completion, _, let template?):
            let (t, start) = try template.render(example.content)
            return String(decoding: Array(t.utf8)[..<start], as: UTF8.self)
        case (.instruction(let instruction, let input, _), nil, nil):
            return AlpacaPrompt.prompt(instruction: instruction, input: input)
        case (.completion(let prompt, _), nil, nil):
            return prompt
        default:
            let messages = example.messages
            guard let firstAnswer = messages.firstIndex(where: { $0.role == "assistant" }) else { return nil }
            return try (renderer ?? GuanacoRenderer()).renderPrompt(Array(messages[..<firstAnswer]), tools: example.tools)
        }
    }

    /// Data spans (Unicode-scalar offsets, half-open) as UTF-8 byte ranges of `text`; whether
    /// they are masked spans. Out-of-range or reversed spans are errors.
    static func byteRanges(_ spans: LossSpans, in text: String) throws -> ([Range<Int>], Bool) {
        let (list, masked): ([Range<Int>], Bool)
        switch spans {
        case .masked(let l): (list, masked) = (l, true)
        case .trained(let l): (list, masked) = (l, false)
        }
        var scalarToByte: [Int] = [0]
        scalarToByte.reserveCapacity(text.unicodeScalars.count + 1)
        var b = 0
        for u in text.unicodeScalars {
            b += UTF8.width(u)
            scalarToByte.append(b)
        }
        let n = scalarToByte.count - 1
        let name = masked ? "loss_masking_spans" : "trained_spans"
        return (try list.map { r in
            guard r.lowerBound >= 0, r.upperBound <= n, r.lowerBound <= r.upperBound else {
                throw SFTError.unsupported("\(name): span \(r.lowerBound)..<\(r.upperBound) is outside the text (\(n) characters)")
            }
            return scalarToByte[r.lowerBound]..<scalarToByte[r.upperBound]
        }, masked)
    }
}
