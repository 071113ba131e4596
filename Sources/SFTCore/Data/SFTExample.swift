// The dataset-side vocabulary: one training example as read from a file (before any template or
// tokenizer), where it came from, the dataset formats sft reads, and the report of what loading
// kept and skipped.
import Foundation
import SFTKernels

/// Where a record sits in its file, for reports and errors.
public struct SourceLocation: Equatable, Hashable, Sendable, Codable, CustomStringConvertible {
    /// 1-based line of the file on which the record starts (JSON Lines: its line; JSON array:
    /// the line of the element's first byte; CSV: the physical line where the row starts).
    public var line: Int
    /// 0-based record number: the JSON array index, the n-th JSON Lines record (blank lines not
    /// counted) or the n-th CSV data row (header not counted).
    public var index: Int

    /// A location from a 1-based line and a 0-based record index.
    public init(line: Int, index: Int) {
        self.line = line
        self.index = index
    }

    public var description: String { "line \(line) (record \(index))" }
}

/// What an example holds. Instruction-style and prompt/completion records keep their parts so
/// that they can be formatted without a chat template (the Alpaca prompt, or prompt+completion);
/// with a chat template every kind except raw text becomes a conversation (see `messages`).
public enum SFTContent: Equatable, Sendable {
    /// A conversation: an optional system message, then user/assistant turns that alternate.
    case conversation([ChatMessage])
    /// Alpaca / Dolly: an instruction, optional context (`input`), the response.
    case instruction(instruction: String, input: String, output: String)
    /// A prompt and the completion the model learns to produce.
    case completion(prompt: String, completion: String)
    /// Raw text, trained on as a whole.
    case text(String)
}

/// One training example, format-independent.
///
/// ```swift
/// let ex = SFTExample(content: .conversation([ChatMessage(role: "user", content: "Hi"),
///                                             ChatMessage(role: "assistant", content: "Hello!")]),
///                     source: SourceLocation(line: 1, index: 0))
/// ex.messages.count   // 2
/// ```
public struct SFTExample: Equatable, Sendable {
    /// The example's parts: a conversation, an instruction record, a prompt/completion pair or raw
    /// text.
    public var content: SFTContent
    /// The record this example came from.
    public var source: SourceLocation
    /// Loss spans given in the data (text and prompt/completion records only).
    public var lossSpans: LossSpans?
    /// Tool schemas passed to the chat template as `tools` (the record's own, else the dataset's).
    public var tools: JSONValue?

    /// An example; each argument sets the property of the same name.
    public init(content: SFTContent, source: SourceLocation, lossSpans: LossSpans? = nil, tools: JSONValue? = nil) {
        self.content = content
        self.source = source
        self.lossSpans = lossSpans
        self.tools = tools
    }

    /// The example as chat messages (empty for raw text). An instruction with non-empty input
    /// becomes one user message "instruction\n\ninput" that also carries `instruction` and
    /// `input` as fields (the built-in `alpaca` template reads them to write its `### Input:`
    /// section); a completion becomes user + assistant.
    public var messages: [ChatMessage] {
        switch content {
        case .conversation(let m): return m
        case .instruction(let instruction, let input, let output):
            if input.isEmpty {
                return [ChatMessage(role: "user", content: instruction), ChatMessage(role: "assistant", content: output)]
            }
            let user = ChatMessage(role: "user", content: instruction + "\n\n" + input,
                                   extra: ["instruction": .string(instruction), "input": .string(input)])
            return [user, ChatMessage(role: "assistant", content: output)]
        case .completion(let prompt, let completion):
            return [ChatMessage(role: "user", content: prompt), ChatMessage(role: "assistant", content: completion)]
        case .text: return []
        }
    }

    /// The raw text of a plain-text example, else nil.
    public var text: String? {
        if case .text(let t) = content { return t }
        return nil
    }
}

/// Character ranges of an example's text given in the data: Fast-LLM's `loss_masking_spans`
/// (text that gets no loss; every other token is trained) or `trained_spans` (only these are).
/// Offsets count Unicode scalars (Python `str` indices) in the text (`text` records) or in
/// prompt + completion; a span `[begin, end]` includes `end` — Fast-LLM's convention — unless
/// the config sets `span_end: exclusive`. Stored here as half-open ranges.
public enum LossSpans: Equatable, Sendable {
    /// `loss_masking_spans`: these ranges get no loss; every other token is trained.
    case masked([Range<Int>])
    /// `trained_spans`: only tokens overlapping these ranges are trained.
    case trained([Range<Int>])
}

/// The record layouts sft reads. `detect` picks one from the records' keys; any can be named
/// explicitly (`--format`).
public enum DatasetFormat: String, CaseIterable, Sendable, Codable {
    /// `instruction`, optional `input`, `output` (Stanford Alpaca).
    case alpaca
    /// `instruction` (the system prompt), `input` (the question), `output` — the Dolphin layout.
    /// Same keys as Alpaca, so never auto-detected: name it explicitly.
    case dolphin
    /// `conversations`: a list of `{from, value}` with from human/gpt/system (ShareGPT, Vicuna).
    case sharegpt
    /// `messages`: a list of `{role, content}` (OpenAI chat).
    case messages
    /// `instruction`, optional `context`, `response` (Databricks Dolly).
    case dolly
    /// `prompt`, `completion`.
    case completion
    /// `text` holding "### Human: … ### Assistant: …" turns (Guanaco / OpenAssistant).
    case guanaco
    /// `text`, trained on as a whole.
    case text

    /// Parses a user-given name; accepts the common aliases (vicuna, openai, chat, …).
    public init?(name: String) {
        switch name.lowercased() {
        case "alpaca": self = .alpaca
        case "dolphin": self = .dolphin
        case "sharegpt", "vicuna", "conversations": self = .sharegpt
        case "messages", "openai", "chat": self = .messages
        case "dolly": self = .dolly
        case "completion", "prompt-completion", "prompt_completion": self = .completion
        case "guanaco", "oasst": self = .guanaco
        case "text", "plain", "plain-text": self = .text
        default: return nil
        }
    }
}

/// A record that loading skipped, and why.
public struct SkippedRecord: Equatable, Sendable, CustomStringConvertible {
    /// Where the record is.
    public var location: SourceLocation
    /// Why it was skipped ("unknown role 'tool'"; the part before a colon groups reasons in the
    /// report).
    public var reason: String
    public var description: String { "\(location): \(reason)" }
}

/// What loading a dataset file found: records read, examples kept, records skipped (with their
/// locations), and whether the file ended in the middle of a record.
public struct DatasetReport: Sendable, CustomStringConvertible {
    /// The dataset file's path.
    public var path: String
    /// The file kind the records were read as: JSON array, JSON Lines or CSV.
    public var fileFormat: String
    /// The record format, given or detected.
    public var format: DatasetFormat
    /// Records read (kept + skipped).
    public var records: Int
    /// Examples kept.
    public var examples: Int
    /// The skipped records, in file order, with their reasons.
    public var skipped: [SkippedRecord]
    /// Kept conversations whose first turn was the assistant's and was dropped (see
    /// DatasetFormats.swift: ShareGPT's split conversations).
    public var leadingAssistantTurnsDropped: Int
    /// Set when the file ends inside a record (a cut-off download): that partial record is not
    /// counted in `records`.
    public var truncated: String?
    /// Records (kept or skipped) whose bytes are not valid UTF-8: the bad bytes were read as
    /// U+FFFD. `invalidUTF8Lines` holds the lines of the first few.
    public var invalidUTF8Records = 0
    /// Lines of the first `invalidUTF8LinesShown` records with invalid UTF-8.
    public var invalidUTF8Lines: [Int] = []
    /// How many lines `invalidUTF8Lines` keeps.
    public static let invalidUTF8LinesShown = 5

    /// Skipped records per reason, most frequent first.
    public var skippedByReason: [(reason: String, count: Int)] {
        var counts: [String: Int] = [:]
        for s in skipped { counts[Self.reasonKind(s.reason), default: 0] += 1 }
        return counts.map { ($0.key, $0.value) }.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
    }

    // Reasons carry detail after a colon ("unknown role 'tool'"); group on the part before it.
    static func reasonKind(_ reason: String) -> String {
        if let c = reason.firstIndex(of: ":") { return String(reason[..<c]) }
        return reason
    }

    public var description: String {
        var s = "\(path): \(fileFormat), format \(format.rawValue): \(records) records, \(examples) examples, \(skipped.count) skipped"
        if leadingAssistantTurnsDropped > 0 {
            s += "\n  \(leadingAssistantTurnsDropped) conversations started with an assistant turn, which was dropped"
        }
        for (reason, count) in skippedByReason { s += "\n  skipped \(count): \(reason)" }
        for r in skipped.prefix(5) { s += "\n  e.g. \(r)" }
        if let t = truncated { s += "\n  warning: \(t)" }
        if let w = invalidUTF8Warning { s += "\n  warning: \(w)" }
        return s
    }

    /// The warning about invalid UTF-8, when a record had some.
    public var invalidUTF8Warning: String? {
        guard invalidUTF8Records > 0 else { return nil }
        let lines = invalidUTF8Lines.map(String.init).joined(separator: ", ")
        return "\(invalidUTF8Records) record\(invalidUTF8Records == 1 ? "" : "s") with invalid UTF-8 (bad bytes read as U+FFFD; "
            + "--strict refuses them), first at line\(invalidUTF8Lines.count == 1 ? "" : "s") \(lines)"
    }
}
