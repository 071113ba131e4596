// From raw records to SFTExamples: the per-format readers, the role rules for conversations,
// field mapping for other layouts, and format detection from the records' keys.
//
// Conversations are valid when, after an optional first system message, turns alternate
// user, assistant, user, … with no empty turn and at least one assistant turn. Dataset role
// names map to these: human/user → user; gpt/assistant/chatgpt/bing/bard/bot/model → assistant.
// One exception, as FastChat does for Vicuna: a conversation whose first turn is the
// assistant's (ShareGPT splits long conversations, and the later parts start mid-dialogue)
// loses that turn — it answers nothing the model can see — and is counted in the report.
import Foundation
import SFTKernels

/// Renames record keys: `[canonical: sourceKey]`, e.g. `["instruction": "question",
/// "output": "answer"]`. The renames happen at once (a swap such as `instruction=response,
/// response=instruction` works: every value is read before any key is written). Message keys
/// (`role`, `content`, `from`, `value`, `tool_calls`, `tool_call_id`, `name`) are renamed in each
/// message of a conversation, every other key in the record itself.
public struct FieldMapping: Equatable, Sendable, Codable {
    /// Canonical key → the key the file uses.
    public var renames: [String: String]

    /// A mapping from `[canonical: sourceKey]` pairs (empty: no renames).
    public init(_ renames: [String: String] = [:]) { self.renames = renames }

    /// Parses `instruction=question,output=answer` (the `--field` syntax).
    public init(parsing spec: String) throws {
        var r: [String: String] = [:]
        for part in spec.split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2, !kv[0].isEmpty, !kv[1].isEmpty else {
                throw SFTError.config(field: "field", message: "'\(part)' is not CANONICAL=SOURCE (e.g. instruction=question)")
            }
            r[kv[0]] = kv[1]
        }
        renames = r
    }

    static let messageKeys: Set<String> = ["role", "content", "from", "value", "tool_calls", "tool_call_id", "name"]
    /// Canonical keys a record may lack: their sources may be missing too.
    static let optionalKeys: Set<String> = ["input", "context", "system", "tools", "loss_masking_spans", "trained_spans",
                                            "tool_calls", "tool_call_id", "name"]

    /// The record (or, `message`, one message) with its keys renamed. A source key that is
    /// missing for a required canonical key is an error naming both.
    func apply(_ object: [String: RecordValue], message: Bool = false) throws -> [String: RecordValue] {
        if renames.isEmpty { return object }
        let here = renames.filter { Self.messageKeys.contains($0.key) == message && $0.key != $0.value }
        if here.isEmpty { return object }
        var o = object
        for source in here.values { o[source] = nil }
        for (canonical, source) in here {
            if let v = object[source] {
                o[canonical] = v
            } else if Self.optionalKeys.contains(canonical) {
                o[canonical] = nil
            } else {
                throw RecordError("missing field: '\(source)' (mapped to '\(canonical)') is not in the \(message ? "message" : "record")")
            }
        }
        return o
    }

    /// `apply`, keeping the record as it is where a source is missing (format detection).
    func applyLeniently(_ object: [String: RecordValue]) -> [String: RecordValue] {
        (try? apply(object)) ?? object
    }
}

extension DatasetFormat {
    /// Keys that make a record this format (structured formats only).
    var requiredKeys: [String] {
        switch self {
        case .alpaca, .dolphin: return ["instruction", "output"]
        case .sharegpt: return ["conversations"]
        case .messages: return ["messages"]
        case .dolly: return ["instruction", "response"]
        case .completion: return ["prompt", "completion"]
        case .guanaco, .text: return ["text"]
        }
    }

    var keyDescription: String {
        switch self {
        case .alpaca, .dolphin: return "instruction, input, output"
        case .sharegpt: return "conversations of {from, value}"
        case .messages: return "messages of {role, content}"
        case .dolly: return "instruction, context, response"
        case .completion: return "prompt, completion"
        case .guanaco: return "text with ### Human: / ### Assistant: turns"
        case .text: return "text"
        }
    }

    /// Picks the format that the sampled records' keys point to.
    ///
    /// Structured formats (everything but text/guanaco) win over a `text` key, since many
    /// datasets carry a rendered `text` beside their fields. A format is a candidate when the
    /// majority of sampled records have its keys; two candidates are ambiguous and an error.
    static func detect(_ objects: [[String: RecordValue]], path: String, firstLine: Int) throws -> DatasetFormat {
        guard !objects.isEmpty else {
            throw SFTError.data(path: path, line: firstLine, message: "no JSON objects to detect the dataset format from")
        }
        let structured: [DatasetFormat] = [.sharegpt, .messages, .alpaca, .dolly, .completion]
        let candidates = structured.filter { f in
            let hits = objects.filter { o in f.requiredKeys.allSatisfy { o[$0] != nil } }.count
            return hits * 2 > objects.count
        }
        if candidates.count == 1 { return candidates[0] }
        if candidates.count > 1 {
            let names = candidates.map { "\($0.rawValue) (\($0.keyDescription))" }.joined(separator: ", ")
            throw SFTError.data(path: path, line: firstLine,
                                message: "ambiguous dataset format: records match \(names); choose one with --format, or rename keys with --field")
        }
        let texts = objects.compactMap { $0["text"]?.string }
        if texts.count * 2 > objects.count {
            let guanaco = texts.filter { $0.contains(GuanacoTurns.human) && $0.contains(GuanacoTurns.assistant) }.count
            return guanaco * 2 > texts.count ? .guanaco : .text
        }
        let keys = Set(objects.flatMap { $0.keys }).sorted().joined(separator: ", ")
        throw SFTError.data(path: path, line: firstLine,
                            message: "cannot detect the dataset format from keys [\(keys)]; known layouts: "
                                + DatasetFormat.allCases.map { "\($0.rawValue) (\($0.keyDescription))" }.joined(separator: "; ")
                                + "; map other keys with --field, e.g. --field instruction=question,output=answer")
    }

    /// Converts one record; a String error names what is wrong with it. `droppedLeadingAssistant`
    /// is set when a leading assistant turn was dropped.
    func content(of object: [String: RecordValue], mapping: FieldMapping, droppedLeadingAssistant: inout Bool) -> Result<SFTContent, RecordError> {
        var dropped = false
        defer { droppedLeadingAssistant = dropped }
        do {
            switch self {
            case .alpaca:
                return .success(.instruction(instruction: try field(object, "instruction"),
                                             input: try field(object, "input", optional: true),
                                             output: try field(object, "output")))
            case .dolly:
                return .success(.instruction(instruction: try field(object, "instruction"),
                                             input: try field(object, "context", optional: true),
                                             output: try field(object, "response")))
            case .dolphin:
                var m: [ChatMessage] = []
                let system = try field(object, "instruction", optional: true)
                if !system.isEmpty { m.append(ChatMessage(role: "system", content: system)) }
                m.append(ChatMessage(role: "user", content: try field(object, "input")))
                m.append(ChatMessage(role: "assistant", content: try field(object, "output")))
                return .success(.conversation(try validated(m, dropped: &dropped)))
            case .completion:
                return .success(.completion(prompt: try field(object, "prompt"), completion: try field(object, "completion")))
            case .text:
                return .success(.text(try field(object, "text")))
            case .guanaco:
                return .success(.conversation(try validated(try GuanacoTurns.parse(try field(object, "text")), dropped: &dropped)))
            case .sharegpt, .messages:
                let key = self == .sharegpt ? "conversations" : "messages"
                guard let raw = object[key], !raw.isNull else { throw RecordError("missing field: '\(key)'") }
                guard case .array(let list) = raw else { throw RecordError("wrong type: '\(key)' is not a list") }
                var m: [ChatMessage] = []
                if let s = object["system"]?.string, !s.isEmpty { m.append(ChatMessage(role: "system", content: s)) }
                for (i, item) in list.enumerated() {
                    guard case .object(let d) = item else { throw RecordError("wrong type: \(key)[\(i)] is not an object") }
                    m.append(try message(mapping.apply(d, message: true), at: i, list: key))
                }
                return .success(.conversation(try validated(m, dropped: &dropped)))
            }
        } catch let e as RecordError {
            return .failure(e)
        } catch {
            return .failure(RecordError("\(error)"))
        }
    }
}

extension DatasetFormat {
    /// The largest character offset a span may name.
    static let maxSpanOffset = Double(1 << 40)

    /// `loss_masking_spans` or `trained_spans` of a record: a list of `[begin, end]` character
    /// offsets (see LossSpans), for text and prompt/completion records only.
    func lossSpans(of o: [String: RecordValue], endInclusive: Bool) throws -> LossSpans? {
        let masked = o["loss_masking_spans"].flatMap { $0.isNull ? nil : $0 }
        let trained = o["trained_spans"].flatMap { $0.isNull ? nil : $0 }
        guard let value = masked ?? trained else { return nil }
        let key = masked != nil ? "loss_masking_spans" : "trained_spans"
        if masked != nil && trained != nil { throw RecordError("conflicting spans: both loss_masking_spans and trained_spans") }
        guard self == .text || self == .completion else {
            throw RecordError("unsupported field: '\(key)' applies to text and completion records, not \(rawValue)")
        }
        guard case .array(let list) = value else { throw RecordError("wrong type: '\(key)' is not a list of [begin, end]") }
        var ranges: [Range<Int>] = []
        for (i, item) in list.enumerated() {
            guard case .array(let pair) = item, pair.count == 2, case .number(let a) = pair[0], case .number(let b) = pair[1],
                  a == a.rounded(), b == b.rounded(), a >= 0 else {
                throw RecordError("wrong type: \(key)[\(i)] is not [begin, end] with whole numbers")
            }
            // Character offsets: anything past 2^40 is no text's (and would not fit an Int).
            guard a <= Self.maxSpanOffset, b <= Self.maxSpanOffset, b >= -1 else {
                throw RecordError("bad span: \(key)[\(i)] = [\(a), \(b)] is outside 0...\(Int(Self.maxSpanOffset))")
            }
            let end = Int(b) + (endInclusive ? 1 : 0)
            guard end >= Int(a) else { throw RecordError("bad span: \(key)[\(i)] ends before it begins") }
            ranges.append(Int(a)..<end)
        }
        return masked != nil ? .masked(ranges) : .trained(ranges)
    }

    /// The conversation with its assistants' tool calls taken from the ordered JSON of the
    /// record (key order as written, which templates' `tojson` shows).
    func withToolCalls(_ content: SFTContent, ordered: JSONValue?, mapping: FieldMapping) throws -> SFTContent {
        guard case .conversation(var messages) = content, let ordered else { return content }
        let key = self == .sharegpt ? "conversations" : "messages"
        guard case .array(let list)? = ordered[mapping.renames[key] ?? key] else { return content }
        let callsKey = mapping.renames["tool_calls"] ?? "tool_calls"
        let calls = list.compactMap { m -> JSONValue? in
            guard let c = m[callsKey], !c.isNull else { return nil }
            return c
        }
        let holders = messages.indices.filter { messages[$0].toolCalls != nil }
        for (h, c) in zip(holders.reversed(), calls.reversed()) { messages[h].toolCalls = c }
        return .conversation(messages)
    }
}

/// Why a record was skipped; the text before the first colon is the reason's kind.
struct RecordError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}

private func field(_ o: [String: RecordValue], _ key: String, optional: Bool = false) throws -> String {
    guard let v = o[key], !v.isNull else {
        if optional { return "" }
        throw RecordError("missing field: '\(key)'")
    }
    guard let s = v.string else { throw RecordError("wrong type: '\(key)' is not a string") }
    if !optional && isBlank(s) {
        throw RecordError("empty turn: '\(key)' is empty")
    }
    return s
}

/// One message of a `conversations` / `messages` list: `{from, value}` or `{role, content}`;
/// OpenAI content given as a list of `{type: "text", text}` parts is joined.
private func message(_ d: [String: RecordValue], at i: Int, list: String) throws -> ChatMessage {
    guard let roleValue = d["from"] ?? d["role"] else { throw RecordError("missing field: \(list)[\(i)] has no 'from'/'role'") }
    guard let role = roleValue.string else { throw RecordError("wrong type: \(list)[\(i)] role is not a string") }
    guard let mapped = canonicalRole(role) else { throw RecordError("unknown role: '\(role)' in \(list)[\(i)]") }
    var toolCalls: JSONValue?
    if let calls = d["tool_calls"], !calls.isNull {
        guard mapped == "assistant", case .array(let list) = calls else {
            throw RecordError("wrong type: \(list)[\(i)] tool_calls must be a list on an assistant message")
        }
        toolCalls = .array(list.map(\.json))
    }
    var extra: [String: JSONValue] = [:]
    if mapped == "tool" {
        for k in ["tool_call_id", "name"] { if let v = d[k]?.string { extra[k] = .string(v) } }
    }
    let contentValue = d["value"] ?? d["content"] ?? .null
    if contentValue.isNull {
        guard toolCalls != nil else { throw RecordError("missing field: \(list)[\(i)] has no 'value'/'content'") }
        return ChatMessage(role: mapped, content: "", toolCalls: toolCalls)
    }
    var text: String
    if let s = contentValue.string {
        text = s
    } else if case .array(let parts) = contentValue {
        text = ""
        for p in parts {
            guard case .object(let pd) = p, let t = pd["text"]?.string else {
                throw RecordError("wrong type: \(list)[\(i)] content part is not {type: text, text}")
            }
            text += t
        }
    } else {
        throw RecordError("wrong type: \(list)[\(i)] content is not a string")
    }
    return ChatMessage(role: mapped, content: text, toolCalls: toolCalls, extra: extra)
}

extension RecordValue {
    /// As a JSONValue (object keys sorted: use the ordered re-read where order matters).
    var json: JSONValue {
        switch self {
        case .string(let s): return .string(s)
        case .number(let d): return d == d.rounded() && abs(d) < 9e15 ? .int(Int(d)) : .double(d)
        case .bool(let b): return .bool(b)
        case .null: return .null
        case .array(let a): return .array(a.map(\.json))
        case .object(let o): return .object(o.keys.sorted().map { ($0, o[$0]!.json) })
        }
    }
}

/// True when the text shows nothing: only Unicode White_Space characters and zero-width
/// characters (ZWSP, ZWNJ, ZWJ, word joiner, BOM). Spelled out rather than taken from
/// Foundation so that "empty turn" means the same on every platform (and in the reference script).
func isBlank(_ s: String) -> Bool {
    s.unicodeScalars.allSatisfy { u in
        switch u.value {
        case 0x09...0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000: return true
        case 0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF: return true
        default: return false
        }
    }
}

/// Dataset role names to the chat roles templates expect.
func canonicalRole(_ role: String) -> String? {
    switch role.lowercased() {
    case "human", "user": return "user"
    case "gpt", "assistant", "chatgpt", "bing", "bard", "bot", "model": return "assistant"
    case "system": return "system"
    case "tool", "function_response", "observation", "ipython": return "tool"
    default: return nil
    }
}

/// Checks the conversation rules (see the file header); returns the messages, less a leading
/// assistant turn (then `dropped` is set). Error messages number messages as in the record.
func validated(_ messages: [ChatMessage], dropped: inout Bool) throws -> [ChatMessage] {
    guard !messages.isEmpty else { throw RecordError("empty conversation: no messages") }
    var m = messages
    let firstTurn = m[0].role == "system" ? 1 : 0
    if firstTurn < m.count, m[firstTurn].role == "assistant" {
        m.remove(at: firstTurn)
        dropped = true
    }
    func number(_ i: Int) -> Int { dropped && i >= firstTurn ? i + 1 : i }
    // What may come next: after user → assistant; after an assistant with tool calls → tool;
    // after tool → tool or assistant; after any other assistant → user.
    var allowed: Set<String> = ["user"]
    var sawAssistant = false
    for (i, msg) in m.enumerated() {
        if isBlank(msg.content) && msg.toolCalls == nil {
            throw RecordError("empty turn: message \(number(i)) (\(msg.role)) has no content")
        }
        if i == 0 && msg.role == "system" { continue }
        guard allowed.contains(msg.role) else {
            let previous = i == 0 ? "the start" : "'\(m[i - 1].role)'"
            let what = msg.role == "tool" ? "a tool result must follow an assistant message with tool_calls"
                                          : "roles do not alternate"
            throw RecordError("\(what): message \(number(i)) is '\(msg.role)' after \(previous)")
        }
        switch msg.role {
        case "user": allowed = ["assistant"]
        case "assistant":
            sawAssistant = true
            allowed = msg.toolCalls != nil ? ["tool"] : ["user"]
        default: allowed = ["tool", "assistant"]
        }
    }
    guard sawAssistant else { throw RecordError("no assistant turn") }
    return m
}

/// Guanaco / OpenAssistant plain-text conversations: "### Human: … ### Assistant: …".
enum GuanacoTurns {
    static let human = "### Human:"
    static let assistant = "### Assistant:"

    /// Splits the text at the turn markers; text before the first marker becomes a system
    /// message; each turn's content is trimmed of surrounding whitespace.
    static func parse(_ text: String) throws -> [ChatMessage] {
        var messages: [ChatMessage] = []
        var rest = Substring(text)
        var role: String?
        func flush(_ content: Substring) {
            let c = content.trimmingCharacters(in: .whitespacesAndNewlines)
            if let r = role { messages.append(ChatMessage(role: r, content: c)) } else if !c.isEmpty { messages.append(ChatMessage(role: "system", content: c)) }
        }
        while true {
            let h = rest.range(of: human), a = rest.range(of: assistant)
            let next: (Range<Substring.Index>, String)?
            switch (h, a) {
            case let (h?, a?): next = h.lowerBound < a.lowerBound ? (h, "user") : (a, "assistant")
            case let (h?, nil): next = (h, "user")
            case let (nil, a?): next = (a, "assistant")
            default: next = nil
            }
            guard let (r, newRole) = next else { flush(rest); break }
            flush(rest[..<r.lowerBound])
            role = newRole
            rest = rest[r.upperBound...]
        }
        guard messages.contains(where: { $0.role != "system" }) else {
            throw RecordError("missing field: no '### Human:' / '### Assistant:' turns in 'text'")
        }
        return messages
    }
}
