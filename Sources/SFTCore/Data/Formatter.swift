// From an SFTExample to token ids and a loss mask.
//
// The example is rendered to text (the chat template, or — without one — the Alpaca prompt,
// prompt+completion, or Guanaco-style turns), the spans to train are taken from the render in
// UTF-8 bytes, the text is tokenized with byte offsets, and:
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

    public init(maskPolicy: MaskPolicy? = nil, trainEndOfTurn: Bool = true, appendEOS: Bool? = nil, keepText: Bool = false) {
        self.maskPolicy = maskPolicy
        self.trainEndOfTurn = trainEndOfTurn
        self.appendEOS = appendEOS
        self.keepText = keepText
    }
}

/// The rendered text behind a tokenized example, for display.
public struct FormattedText: Equatable, Sendable {
    public var text: String
    /// Per token, its UTF-8 byte range in `text` (empty for tokens that cover no text).
    public var offsets: [Range<Int>]
}

/// One example as token ids with a per-token training mask.
public struct TokenizedExample: Equatable, Sendable {
    public var ids: [Int32]
    /// Per token: whether the model is trained to predict it (HF `labels != -100`).
    public var trained: [Bool]
    /// The record it came from.
    public var source: SourceLocation
    /// Text and offsets, when `FormatOptions.keepText` is set.
    public var formatted: FormattedText?

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
    public var tokenizer: any TextTokenizer
    /// The chat template; nil uses the built-in formats (see the file header).
    public var renderer: (any ChatRenderer)?
    public var options: FormatOptions

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

    public func format(_ example: SFTExample) throws -> TokenizedExample {
        var policy = options.maskPolicy ?? Self.defaultPolicy(for: example.content)
        let text: String
        var spans: [Range<Int>] = []
        let addSpecial: Bool
        let appendEOS: Bool
        var eosTrained = options.trainEndOfTurn

        switch (example.content, renderer) {
        case (.text(let t), _):
            text = t
            policy = .all
            addSpecial = true
            appendEOS = options.appendEOS ?? true
        case (.instruction(let instruction, let input, let output), nil):
            let prompt = AlpacaPrompt.prompt(instruction: instruction, input: input)
            text = prompt + output
            spans = [prompt.utf8.count..<text.utf8.count]
            addSpecial = true
            appendEOS = options.appendEOS ?? true
        case (.completion(let prompt, let completion), nil):
            text = prompt + completion
            spans = [prompt.utf8.count..<text.utf8.count]
            addSpecial = true
            appendEOS = options.appendEOS ?? true
        default:
            let messages = example.messages
            let rendered = try (renderer ?? GuanacoRenderer()).renderForTraining(messages)
            text = rendered.text
            var turns = rendered.assistantTurns
            if policy == .lastTurn, let last = turns.last { turns = [last] }
            spans = turns.map { options.trainEndOfTurn ? $0.throughEndOfTurn : $0.content }
            let n = text.utf8.count
            for s in spans where s.lowerBound < 0 || s.upperBound > n {
                throw SFTError.template(line: 0, column: 0, message: "assistant span \(s) outside the rendered text (\(n) bytes)")
            }
            // Templates bring their own BOS and end-of-turn markers; the built-in Guanaco text does not.
            addSpecial = renderer == nil
            appendEOS = options.appendEOS ?? (renderer == nil)
            // An appended EOS closes the last message: trained only if that is an assistant turn.
            eosTrained = eosTrained && messages.last?.role == "assistant"
        }

        var (ids, offsets) = try tokenizer.encodeWithOffsets(text, addSpecialTokens: addSpecial)
        guard ids.count == offsets.count else {
            throw SFTError.unsupported("tokenizer returned \(ids.count) ids but \(offsets.count) offsets")
        }
        var trained = offsets.map { r in policy == .all || spans.contains { r.lowerBound < $0.upperBound && $0.lowerBound < r.upperBound } }
        if appendEOS, let eos = tokenizer.eosTokenId {
            let end = text.utf8.count
            let trainIt = policy == .all || eosTrained
            if ids.last == eos, offsets.last?.isEmpty == true {
                trained[trained.count - 1] = trainIt  // the tokenizer already appended it
            } else {
                ids.append(eos)
                offsets.append(end..<end)
                trained.append(trainIt)
            }
        }
        return TokenizedExample(ids: ids, trained: trained, source: example.source,
                                formatted: options.keepText ? FormattedText(text: text, offsets: offsets) : nil)
    }
}
