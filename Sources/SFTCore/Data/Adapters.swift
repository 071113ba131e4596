// Connects the data pipeline's small protocols to the real tokenizer and chat templates.
import Foundation

extension Tokenizer: TextTokenizer {
    public func encodeWithOffsets(_ text: String, addSpecialTokens: Bool) -> (ids: [Int32], offsets: [Range<Int>]) {
        encodeWithOffsets(text, addSpecialTokens: addSpecialTokens, parseSpecialTokens: true)
    }
    public var bosTokenText: String? { bosTokenId.flatMap { tokenString($0) } }
    public var addsBOS: Bool { addBosToken }
}

/// A chat template with the tokenizer's BOS/EOS strings, rendering training conversations.
/// `bos_token` is what `PromptTokens` says ("" when the tokenizer adds no BOS).
public struct TemplateRenderer: ChatRenderer {
    public let template: ChatTemplate
    public let bosToken: String
    public let eosToken: String

    public init(template: ChatTemplate, tokenizer: any TextTokenizer, eosToken: String? = nil) {
        self.template = template
        bosToken = PromptTokens(tokenizer: tokenizer).templateBOS
        self.eosToken = eosToken ?? (tokenizer as? Tokenizer).flatMap { t in t.eosTokenId.flatMap { t.tokenString($0) } } ?? ""
    }

    public func renderPrompt(_ messages: [ChatMessage], tools: JSONValue?) throws -> String {
        try template.render(messages: messages, addGenerationPrompt: true, bosToken: bosToken, eosToken: eosToken, tools: tools).text
    }

    /// The training render. An assistant turn that makes tool calls starts where generation
    /// would start (the end of the generation prompt for the messages before it), so the
    /// template's tool-call markup before the first byte of the call (`<tool_call>\n{"name": "`)
    /// is trained too; plain turns start at their content, as the template emits it.
    public func renderForTraining(_ messages: [ChatMessage], tools: JSONValue?) throws -> RenderedConversation {
        let r = try template.render(messages: messages, addGenerationPrompt: false, bosToken: bosToken, eosToken: eosToken, tools: tools)
        var turns: [AssistantSpan] = []
        for t in r.assistantTurns {
            var start = t.content.lowerBound
            if messages[t.messageIndex].toolCalls != nil {
                let prompt = try renderPrompt(Array(messages[..<t.messageIndex]), tools: tools)
                if prompt.utf8.count <= start, r.text.utf8.starts(with: prompt.utf8) { start = prompt.utf8.count }
            }
            turns.append(AssistantSpan(content: start..<t.content.upperBound, throughEndOfTurn: start..<t.throughEndOfTurn.upperBound))
        }
        return RenderedConversation(text: r.text, assistantTurns: turns)
    }
}
