// The seams between data and the template/tokenizer layers, and the built-in prompt formats
// used when no chat template is: the Alpaca prompt for instruction data, and Guanaco-style
// "### Human: / ### Assistant:" text for conversations.
//
// Formatting depends only on these two small protocols, so it is tested with fakes and works
// with any chat template engine or tokenizer that can report UTF-8 byte spans.

/// Something that turns a conversation into training text and says where each assistant turn
/// sits in it. A Jinja chat template (the model's own, or a named one) is the usual one.
public protocol ChatRenderer {
    /// Renders the whole conversation (no generation prompt) for training.
    func renderForTraining(_ messages: [ChatMessage]) throws -> RenderedConversation
}

/// Rendered training text with the UTF-8 byte spans of its assistant turns, in order.
public struct RenderedConversation: Equatable, Sendable {
    public var text: String
    public var assistantTurns: [AssistantSpan]

    public init(text: String, assistantTurns: [AssistantSpan]) {
        self.text = text
        self.assistantTurns = assistantTurns
    }
}

/// Where one assistant turn sits in rendered text (UTF-8 byte ranges).
public struct AssistantSpan: Equatable, Sendable {
    /// The message content.
    public var content: Range<Int>
    /// The content through the template's end-of-turn marker (e.g. `<|im_end|>` or `</s>`):
    /// what the model must produce to stop.
    public var throughEndOfTurn: Range<Int>

    public init(content: Range<Int>, throughEndOfTurn: Range<Int>) {
        self.content = content
        self.throughEndOfTurn = throughEndOfTurn
    }
}

/// A tokenizer that reports each token's UTF-8 byte range in the input text.
public protocol TextTokenizer {
    /// Token ids and, per token, its UTF-8 byte range in `text`. Tokens that cover no text
    /// (an added BOS) have an empty range.
    func encodeWithOffsets(_ text: String, addSpecialTokens: Bool) throws -> (ids: [Int32], offsets: [Range<Int>])
    /// End of sequence: appended after examples formatted without a chat template.
    var eosTokenId: Int32? { get }
}

/// The Stanford Alpaca prompt, for instruction data trained without a chat template.
public enum AlpacaPrompt {
    /// The prompt for an instruction (and optional input), ending where the response begins.
    public static func prompt(instruction: String, input: String) -> String {
        if input.isEmpty {
            return "Below is an instruction that describes a task. "
                + "Write a response that appropriately completes the request.\n\n"
                + "### Instruction:\n\(instruction)\n\n### Response:\n"
        }
        return "Below is an instruction that describes a task, paired with an input that provides further context. "
            + "Write a response that appropriately completes the request.\n\n"
            + "### Instruction:\n\(instruction)\n\n### Input:\n\(input)\n\n### Response:\n"
    }
}

/// Conversations as Guanaco-style text, for training without a chat template:
/// `### Human: {user}\n### Assistant: {assistant}\n…`, a system message as its own first line.
/// An assistant turn ends at its newline (the model learns to stop before the next `### Human:`).
public struct GuanacoRenderer: ChatRenderer {
    public init() {}

    public func renderForTraining(_ messages: [ChatMessage]) throws -> RenderedConversation {
        var text = ""
        var turns: [AssistantSpan] = []
        for m in messages {
            switch m.role {
            case "system": text += m.content + "\n"
            case "user": text += GuanacoTurns.human + " " + m.content + "\n"
            case "assistant":
                text += GuanacoTurns.assistant + " "
                let start = text.utf8.count
                text += m.content
                let end = text.utf8.count
                text += "\n"
                turns.append(AssistantSpan(content: start..<end, throughEndOfTurn: start..<(end + 1)))
            default:
                throw SFTError.unsupported("role '\(m.role)' in a Guanaco-style conversation")
            }
        }
        return RenderedConversation(text: text, assistantTurns: turns)
    }
}
