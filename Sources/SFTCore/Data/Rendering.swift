// The seams between data and the template/tokenizer layers, and the built-in prompt formats
// used when no chat template is: the Alpaca prompt for instruction data, and Guanaco-style
// "### Human: / ### Assistant:" text for conversations.
//
// Formatting depends only on these two small protocols, so it is tested with fakes and works
// with any chat template engine or tokenizer that can report UTF-8 byte spans.
import SFTKernels

/// Something that turns a conversation into training text and says where each assistant turn
/// sits in it. A Jinja chat template (the model's own, or a named one) is the usual one.
public protocol ChatRenderer {
    /// Renders the whole conversation (no generation prompt) for training; `tools` (JSON
    /// schemas) go to the template as `tools`.
    func renderForTraining(_ messages: [ChatMessage], tools: JSONValue?) throws -> RenderedConversation
    /// The text generation starts from: `messages` and the assistant's generation prompt.
    func renderPrompt(_ messages: [ChatMessage], tools: JSONValue?) throws -> String
}

/// Rendered training text with the UTF-8 byte spans of its assistant turns, in order.
public struct RenderedConversation: Equatable, Sendable {
    /// The rendered text.
    public var text: String
    /// Where each assistant turn sits in `text`, in conversation order.
    public var assistantTurns: [AssistantSpan]

    /// A rendering from its text and its assistant turns' byte spans.
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

    /// A span from its two UTF-8 byte ranges (`throughEndOfTurn` starts where `content` does).
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
    /// Beginning of sequence, and its text as templates write it (`<s>`).
    var bosTokenId: Int32? { get }
    /// The BOS token's text as templates write it (`<s>`, `<|begin_of_text|>`), nil when there is
    /// none.
    var bosTokenText: String? { get }
    /// Whether the tokenizer puts BOS in front of a text (HF `add_bos_token`).
    var addsBOS: Bool { get }
}

extension TextTokenizer {
    public var bosTokenId: Int32? { nil }
    public var bosTokenText: String? { nil }
    public var addsBOS: Bool { false }
}

/// The two Stanford Alpaca prompts (tatsu-lab/stanford_alpaca `train.py`, `PROMPT_DICT`), byte
/// for byte, for instruction data (Alpaca, Dolly with `context` as the input) trained without
/// a chat template. As there, the response follows `### Response:` directly and ends in EOS.
public enum AlpacaPrompt {
    /// The prompt for a record without input; `{instruction}` is replaced by the instruction.
    public static let withoutInput = "Below is an instruction that describes a task. "
        + "Write a response that appropriately completes the request.\n\n"
        + "### Instruction:\n{instruction}\n\n### Response:"
    /// The prompt for a record with input; `{instruction}` and `{input}` are replaced.
    public static let withInput = "Below is an instruction that describes a task, paired with an input that provides further context. "
        + "Write a response that appropriately completes the request.\n\n"
        + "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"

    /// The prompt for an instruction (and optional input), ending where the response begins.
    public static func prompt(instruction: String, input: String) -> String {
        let preamble = input.isEmpty
            ? "Below is an instruction that describes a task. "
            : "Below is an instruction that describes a task, paired with an input that provides further context. "
        let inputSection = input.isEmpty ? "" : "### Input:\n" + input + "\n\n"
        return preamble + "Write a response that appropriately completes the request.\n\n"
            + "### Instruction:\n" + instruction + "\n\n" + inputSection + "### Response:"
    }
}

/// Conversations as Guanaco-style text, for training without a chat template:
/// `### Human: {user}\n### Assistant: {assistant}\n…`, a system message as its own first line.
/// An assistant turn ends at its newline (the model learns to stop before the next `### Human:`).
public struct GuanacoRenderer: ChatRenderer {
    /// The renderer (it has no settings).
    public init() {}

    public func renderPrompt(_ messages: [ChatMessage], tools: JSONValue?) throws -> String {
        try renderForTraining(messages, tools: tools).text + GuanacoTurns.assistant
    }

    public func renderForTraining(_ messages: [ChatMessage], tools: JSONValue?) throws -> RenderedConversation {
        if tools != nil { throw SFTError.unsupported("tools need a chat template; Guanaco-style text has no tool format") }
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
