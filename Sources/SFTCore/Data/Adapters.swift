// Connects the data pipeline's small protocols to the real tokenizer and chat templates.
import Foundation

extension Tokenizer: TextTokenizer {
    public func encodeWithOffsets(_ text: String, addSpecialTokens: Bool) -> (ids: [Int32], offsets: [Range<Int>]) {
        encodeWithOffsets(text, addSpecialTokens: addSpecialTokens, parseSpecialTokens: true)
    }
}

/// A chat template with the tokenizer's BOS/EOS strings, rendering training conversations.
public struct TemplateRenderer: ChatRenderer {
    public let template: ChatTemplate
    public let bosToken: String
    public let eosToken: String

    public init(template: ChatTemplate, tokenizer: Tokenizer) {
        self.template = template
        bosToken = tokenizer.bosTokenId.flatMap { tokenizer.tokenString($0) } ?? ""
        eosToken = tokenizer.eosTokenId.flatMap { tokenizer.tokenString($0) } ?? ""
    }

    public func renderForTraining(_ messages: [ChatMessage]) throws -> RenderedConversation {
        let r = try template.render(messages: messages, addGenerationPrompt: false, bosToken: bosToken, eosToken: eosToken)
        return RenderedConversation(text: r.text, assistantTurns: r.assistantTurns.map {
            AssistantSpan(content: $0.content, throughEndOfTurn: $0.throughEndOfTurn)
        })
    }
}
