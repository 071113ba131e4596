// Chat templates: render a conversation with a model's own Jinja template exactly as
// transformers' `apply_chat_template` does, and report which bytes of the text came from which
// message, so loss masks need no markers in the template and no re-rendering per turn.
//
// Provenance: each message's `content` enters the template as a string whose bytes are tagged
// with the message index. Tags survive concatenation (`+`, `~`, join, format), slicing, trim /
// strip, split, case mapping, replace (a replacement inside one message's text counts as that
// message's), and macro output; they are dropped only where text is re-encoded (repr, and tojson
// of values mixing messages). An assistant's `tool_calls` strings carry its index too, and
// `tojson` of a value whose strings all come from one message is attributed to that message, so
// an assistant turn's span covers the tool calls it makes.
// The rendered text's tagged bytes are the message spans.
import Foundation
import SFTKernels

/// A compiled chat template.
///
/// ```swift
/// let t = try ChatTemplate.named("chatml")
/// let r = try t.render(messages: [.init(role: "user", content: "Hi")], addGenerationPrompt: true)
/// r.text            // "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
/// r.messageSpans[0] // [17..<19]
/// ```
public struct ChatTemplate: Sendable {
    /// The Jinja source as given.
    public let source: String
    let program: CompiledTemplate
    /// Bounds on the work one render may do.
    public var limits = TemplateLimits()
    /// Strings that end an assistant turn, besides the eos token passed to `render`; see
    /// `AssistantTurn.throughEndOfTurn`.
    public var endOfTurnMarkers: [String] = ChatTemplate.defaultEndOfTurnMarkers
    /// The clock behind `strftime_now` (tests fix it).
    public var now: @Sendable () -> Date = { Date() }

    /// The end-of-turn strings of the common chat formats (ChatML's `<|im_end|>`, Llama 3's
    /// `<|eot_id|>`, Phi's `<|end|>`, Gemma's `<end_of_turn>`, `</s>`, …): the default
    /// `endOfTurnMarkers`.
    public static let defaultEndOfTurnMarkers = [
        "<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|end_of_text|>", "<|end_of_turn|>",
        "<|endoftext|>", "</s>", "<|EOT|>", "<｜end▁of▁sentence｜>",
    ]

    /// Parses a Jinja template. Syntax errors are `SFTError.template` with line and column.
    /// `limits.maxStackBytes` also bounds the parser's recursion.
    public init(source: String, limits: TemplateLimits = TemplateLimits()) throws {
        self.source = source
        self.limits = limits
        let normalized = JinjaLexer.normalize(source)
        let map = TemplateSourceMap(normalized)
        do {
            let tokens = try JinjaLexer.tokenize(normalized)
            program = CompiledTemplate(body: try JinjaParser.parse(tokens, maxStackBytes: limits.maxStackBytes), map: map)
        } catch let e as TemplateError {
            let (line, column) = map.position(e.offset)
            throw SFTError.template(line: line, column: column, message: e.message)
        }
    }

    /// The names `named(_:)` accepts.
    public static var builtinNames: [String] { BuiltinTemplates.sources.keys.sorted() }

    /// One of sft's built-in templates (chatml, llama-2, llama-3, mistral, alpaca, vicuna, guanaco).
    public static func named(_ name: String) throws -> ChatTemplate {
        guard let src = BuiltinTemplates.sources[name] else {
            throw SFTError.config(field: "chat template", message: "no built-in template named '\(name)' (known: \(builtinNames.joined(separator: ", ")))")
        }
        return try ChatTemplate(source: src)
    }

    /// The `chat_template` of a Hugging Face `tokenizer_config.json`: a string, or a list of
    /// `{"name", "template"}` from which `name` (default "default") is taken.
    public init(tokenizerConfig url: URL, name: String = "default") throws {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw SFTError.io(path: url.path, message: "cannot read: \(error.localizedDescription)")
        }
        let json = try JSONValue(parsing: data, path: url.path)
        switch json["chat_template"] {
        case .string(let s)?:
            try self.init(source: s)
        case .array(let list)?:
            guard let entry = list.first(where: { $0["name"]?.stringValue == name }), let s = entry["template"]?.stringValue else {
                let names = list.compactMap { $0["name"]?.stringValue }.joined(separator: ", ")
                throw SFTError.format(path: url.path, offset: nil, message: "no chat template named '\(name)' (has: \(names))")
            }
            try self.init(source: s)
        default:
            throw SFTError.format(path: url.path, offset: nil, message: "no \"chat_template\" string in this tokenizer config")
        }
    }

    /// Renders a conversation with the variables transformers passes: `messages`,
    /// `add_generation_prompt`, `bos_token`, `eos_token`, `tools` (none when nil),
    /// `documents` (none), plus `extra` (e.g. `enable_thinking`, `date_string`).
    /// Errors (including the template's own `raise_exception`) are `SFTError.template` with the
    /// template line and column.
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String = "", eosToken: String = "",
                       tools: JSONValue? = nil, extra: [String: JSONValue] = [:]) throws -> RenderedChat {
        var context: [String: JValue] = [:]
        for (k, v) in extra { context[k] = JValue(json: v) }
        context["messages"] = .list(ListBox(messages.enumerated().map { Self.messageValue($1, index: $0) }))
        context["add_generation_prompt"] = .bool(addGenerationPrompt)
        context["bos_token"] = .str(bosToken)
        context["eos_token"] = .str(eosToken)
        context["tools"] = tools.map { JValue(json: $0) } ?? JValue.none
        context["documents"] = context["documents"] ?? JValue.none

        let interpreter = JinjaInterpreter(limits: limits, now: now)
        let output: TString
        do {
            output = try interpreter.render(program.body, context: context)
        } catch let e as TemplateError {
            let (line, column) = program.map.position(e.offset)
            throw SFTError.template(line: line, column: column, message: e.message)
        } catch let e as RaisedException {
            let (line, column) = program.map.position(e.offset)
            throw SFTError.template(line: line, column: column, message: e.message)
        } catch let e as ValueError {
            throw SFTError.template(line: 1, column: 1, message: "\(e)")
        }
        var markers = endOfTurnMarkers
        if !eosToken.isEmpty { markers.append(eosToken) }
        return RenderedChat(output: output, messages: messages, markers: markers)
    }

    static func messageValue(_ m: ChatMessage, index: Int) -> JValue {
        var keys: [JValue] = [.str("role"), .str("content")]
        var values: [JValue] = [.str(m.role), .string(TString(m.content, source: index))]
        if let calls = m.toolCalls { keys.append(.str("tool_calls")); values.append(JValue(json: calls, source: index)) }
        for k in m.extra.keys.sorted() { keys.append(.str(k)); values.append(JValue(json: m.extra[k]!)) }
        return .dict(DictBox(keys: keys, values: values))
    }
}

/// The parsed form of a template (immutable once built, so shared across threads).
final class CompiledTemplate: @unchecked Sendable {
    let body: [JStmt]
    let map: TemplateSourceMap

    init(body: [JStmt], map: TemplateSourceMap) {
        self.body = body
        self.map = map
    }
}

/// Where an assistant message landed in the rendered text.
public struct AssistantTurn: Equatable, Sendable {
    /// Index into the `messages` given to `render`.
    public let messageIndex: Int
    /// From the first to the last byte of the message's content as emitted (empty, at the
    /// place it was used, for an empty content).
    public let content: Range<Int>
    /// `content` extended through the end-of-turn marker that follows it: the earliest
    /// occurrence of the eos token or of one of `ChatTemplate.endOfTurnMarkers` (longest
    /// first at the same place) in the text between the content's end and the start of the
    /// next message's content (or the end of the text). Equal to `content` when none occurs
    /// there (templates like Alpaca without eos end a turn with plain newlines).
    public let throughEndOfTurn: Range<Int>
    /// The marker found, if any.
    public let endOfTurnMarker: String?
}

/// A rendered conversation.
public struct RenderedChat: Equatable, Sendable {
    /// The text, byte-identical to what transformers' `apply_chat_template` renders.
    public let text: String
    /// Per message, the UTF-8 byte ranges of `text` where its content was emitted, in order.
    /// Empty for a message the template did not print; a single empty range for an empty
    /// content that was printed.
    public let messageSpans: [[Range<Int>]]
    /// One entry per assistant message whose content was emitted, in message order.
    public let assistantTurns: [AssistantTurn]

    init(output: TString, messages: [ChatMessage], markers: [String]) {
        text = output.string
        var spans = [[Range<Int>]](repeating: [], count: messages.count)
        for t in output.tracks where t.source >= 0 && t.source < messages.count {
            if let last = spans[t.source].last, last.upperBound == t.lo {
                spans[t.source][spans[t.source].count - 1] = last.lowerBound..<t.hi
            } else {
                spans[t.source].append(t.lo..<t.hi)
            }
        }
        for i in spans.indices where spans[i].count > 1 {
            let nonEmpty = spans[i].filter { !$0.isEmpty }
            spans[i] = nonEmpty.isEmpty ? [spans[i][0]] : nonEmpty
        }
        messageSpans = spans

        let bytes = output.bytes
        let markerBytes = markers.filter { !$0.isEmpty }.map { Array($0.utf8) }
        var turns: [AssistantTurn] = []
        for (i, m) in messages.enumerated() where m.role == "assistant" {
            guard let first = spans[i].first, let last = spans[i].last else { continue }
            let content = first.lowerBound..<last.upperBound
            // The next message's content bounds the search (tracks are sorted by position).
            var limit = bytes.count
            var lo = 0, hi = output.tracks.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if output.tracks[mid].lo < content.upperBound { lo = mid + 1 } else { hi = mid }
            }
            for t in output.tracks[lo...] where t.source != i { limit = t.lo; break }
            var best: (at: Int, len: Int)?
            for mb in markerBytes {
                if let at = Py.find(bytes, mb, from: content.upperBound, to: limit) {
                    if best == nil || at < best!.at || (at == best!.at && mb.count > best!.len) { best = (at, mb.count) }
                }
            }
            let end = best.map { $0.at + $0.len } ?? content.upperBound
            let marker = best.map { String(decoding: bytes[$0.at..<($0.at + $0.len)], as: UTF8.self) }
            turns.append(AssistantTurn(messageIndex: i, content: content, throughEndOfTurn: content.lowerBound..<end, endOfTurnMarker: marker))
        }
        assistantTurns = turns
    }
}
