// Connects the data pipeline's small protocols to the real tokenizer and chat templates.
import Foundation
import SFTKernels

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
    /// The parsed Jinja chat template.
    public let template: ChatTemplate
    /// The template's `bos_token` variable: the BOS text when the template must write it, "" when
    /// the tokenizer adds BOS itself or has none (see ``PromptTokens``).
    public let bosToken: String
    /// The template's `eos_token` variable: the EOS token's text ("" when the tokenizer has none).
    public let eosToken: String

    /// A renderer for `template` with `tokenizer`'s special-token texts.
    /// - Parameters:
    ///   - template: the parsed chat template.
    ///   - tokenizer: supplies `bos_token` (through ``PromptTokens``) and, for a ``Tokenizer``, `eos_token`.
    ///   - eosToken: overrides the EOS text (tokenizers other than ``Tokenizer`` otherwise get "").
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
    /// template's tool-call markup before the first byte of the call (`<tool_call>\n{"name": "`,
    /// `[TOOL_CALLS] [`) is trained too; plain turns start at their content, as the template
    /// emits it. Templates that place text by the conversation's length (Mistral's tools go
    /// before the last user message) make that prompt no prefix of the whole text; the turn then
    /// starts after the prompt's tail (what follows the previous message's last byte, e.g.
    /// `[/INST]`) where the text has the same tail after that message, else at its content.
    public func renderForTraining(_ messages: [ChatMessage], tools: JSONValue?) throws -> RenderedConversation {
        let r = try template.render(messages: messages, addGenerationPrompt: false, bosToken: bosToken, eosToken: eosToken, tools: tools)
        let text = Array(r.text.utf8)
        var turns: [AssistantSpan] = []
        for t in r.assistantTurns {
            var start = t.content.lowerBound
            if messages[t.messageIndex].toolCalls != nil {
                let prompt = try template.render(messages: Array(messages[..<t.messageIndex]), addGenerationPrompt: true,
                                                 bosToken: bosToken, eosToken: eosToken, tools: tools)
                let p = Array(prompt.text.utf8)
                if p.count <= start, text.starts(with: p) {
                    start = p.count
                } else if let inPrompt = Self.lastEnd(prompt.messageSpans, before: t.messageIndex, limit: p.count),
                          let inText = Self.lastEnd(r.messageSpans, before: t.messageIndex, limit: start) {
                    let tail = p[inPrompt...]
                    if inText + tail.count <= start, text[inText..<(inText + tail.count)].elementsEqual(tail) { start = inText + tail.count }
                }
            }
            turns.append(AssistantSpan(content: start..<t.content.upperBound, throughEndOfTurn: start..<t.throughEndOfTurn.upperBound))
        }
        return RenderedConversation(text: r.text, assistantTurns: turns)
    }

    /// The end of the last byte any of the first `count` messages put in the text before `limit`.
    static func lastEnd(_ spans: [[Range<Int>]], before count: Int, limit: Int) -> Int? {
        spans.prefix(count).flatMap { $0 }.map(\.upperBound).filter { $0 <= limit }.max()
    }
}
