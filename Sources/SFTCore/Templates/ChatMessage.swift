// One message of a conversation, as chat templates and datasets see it.
public struct ChatMessage: Equatable, Sendable, Codable {
    /// "system", "user", "assistant" or "tool" (datasets' human/gpt are mapped to these).
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}
