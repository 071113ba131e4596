// One message of a conversation, as chat templates and datasets see it.
import Foundation
import SFTKernels

/// One message of a conversation: a role and its content (plus tool calls for tool use).
public struct ChatMessage: Equatable, Sendable, Codable {
    /// "system", "user", "assistant" or "tool" (datasets' human/gpt are mapped to these).
    public var role: String
    /// The message text ("" when a dataset or tool-call message has none).
    public var content: String
    /// OpenAI-style tool calls of an assistant message, passed to templates as `tool_calls`,
    /// e.g. `[{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]`.
    public var toolCalls: JSONValue?
    /// Any other fields templates read (`name`, `tool_call_id`, `reasoning_content`, ...),
    /// passed to the template after role, content and tool_calls, sorted by key.
    public var extra: [String: JSONValue]

    /// - Parameters:
    ///   - role: "system", "user", "assistant" or "tool".
    ///   - content: The text.
    ///   - toolCalls: The assistant's tool calls, if any.
    ///   - extra: Other fields for the template.
    public init(role: String, content: String, toolCalls: JSONValue? = nil, extra: [String: JSONValue] = [:]) {
        self.role = role
        self.content = content
        self.toolCalls = toolCalls
        self.extra = extra
    }

    /// A message from a JSON object `{"role": ..., "content": ..., "tool_calls": ..., ...}`;
    /// a null or missing content is "". `path` names the file in errors.
    public init(json: JSONValue, path: String = "<json>") throws {
        guard case .object(let pairs) = json else {
            throw SFTError.format(path: path, offset: nil, message: "a message must be a JSON object")
        }
        guard case .string(let role)? = json["role"] else {
            throw SFTError.format(path: path, offset: nil, message: "a message needs a string \"role\"")
        }
        var content = ""
        switch json["content"] {
        case .string(let s)?: content = s
        case .null?, nil: content = ""
        default: throw SFTError.format(path: path, offset: nil, message: "message \"content\" must be a string")
        }
        var extra: [String: JSONValue] = [:]
        for (k, v) in pairs where !["role", "content", "tool_calls"].contains(k) && !v.isNull { extra[k] = v }
        let calls = json["tool_calls"].flatMap { $0.isNull ? nil : $0 }
        self.init(role: role, content: content, toolCalls: calls, extra: extra)
    }

    /// The JSON object form, keys in the order templates see them.
    public var json: JSONValue {
        var pairs: [(String, JSONValue)] = [("role", .string(role)), ("content", .string(content))]
        if let toolCalls { pairs.append(("tool_calls", toolCalls)) }
        for k in extra.keys.sorted() { pairs.append((k, extra[k]!)) }
        return .object(pairs)
    }

    private enum CodingKeys: String, CodingKey {
        case role, content, toolCalls = "tool_calls"
    }

    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { return nil }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        role = try c.decode(String.self, forKey: .role)
        content = try c.decodeIfPresent(String.self, forKey: .content) ?? ""
        toolCalls = try c.decodeIfPresent(JSONValue.self, forKey: .toolCalls)
        let all = try decoder.container(keyedBy: AnyKey.self)
        var extra: [String: JSONValue] = [:]
        for k in all.allKeys where !["role", "content", "tool_calls"].contains(k.stringValue) {
            let v = try all.decode(JSONValue.self, forKey: k)
            if !v.isNull { extra[k.stringValue] = v }
        }
        self.extra = extra
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(role, forKey: .role)
        try c.encode(content, forKey: .content)
        try c.encodeIfPresent(toolCalls, forKey: .toolCalls)
        var all = encoder.container(keyedBy: AnyKey.self)
        for k in extra.keys.sorted() { try all.encode(extra[k]!, forKey: AnyKey(stringValue: k)) }
    }
}
