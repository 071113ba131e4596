// `sftctl template`: render a conversation with a chat template and print exactly what the
// model would be trained on (or prompted with), optionally with the per-message byte spans.
import Foundation
import SFTCore
import SFTKernels

let templateCommand = Command(
    name: "template",
    summary: "render a conversation with a chat template",
    help: """
    usage: sftctl template (--model PATH | --template FILE_OR_NAME) --messages FILE.json
                           [--add-generation-prompt] [--bos-token S] [--eos-token S] [--json]

    Renders the conversation as transformers' apply_chat_template does and prints the text
    exactly (no newline added).

      --model PATH              the template of a model: a Hugging Face folder (its
                                tokenizer_config.json) or a GGUF file (tokenizer.chat_template)
      --template FILE_OR_NAME   a Jinja file, or a built-in name: \(ChatTemplate.builtinNames.joined(separator: ", "))
      --messages FILE.json      a JSON array of {"role", "content"} messages, or an object
                                {"messages": [...], "tools": [...], ...other template variables}
      --add-generation-prompt   end with the prompt for the assistant's next turn
      --bos-token, --eos-token  the values of bos_token / eos_token (default: from the model's
                                tokenizer_config.json, else empty)
      --json                    print {"text": ..., "spans": [[[start, end], ...] per message],
                                "assistant_turns": [...]} (UTF-8 byte offsets)
    """,
    booleanFlags: ["add-generation-prompt"],
    run: runTemplate
)

private func runTemplate(_ args: Arguments) throws {
    let model = args.string("model")
    let templateArg = args.string("template")
    let messagesPath = try args.require("messages")
    let addPrompt = args.flag("add-generation-prompt")
    let json = args.flag("json")
    var bos = args.string("bos-token")
    var eos = args.string("eos-token")
    try args.finish()
    guard (model == nil) != (templateArg == nil) else {
        throw UsageError(description: "give exactly one of --model and --template")
    }

    var template: ChatTemplate
    if let model {
        let m = try ModelChatTemplate(model: URL(fileURLWithPath: model))
        template = m.template
        bos = bos ?? m.bosToken
        eos = eos ?? m.eosToken
    } else {
        let nameOrPath = templateArg!
        if ChatTemplate.builtinNames.contains(nameOrPath) && !FileManager.default.fileExists(atPath: nameOrPath) {
            template = try ChatTemplate.named(nameOrPath)
        } else {
            guard let data = FileManager.default.contents(atPath: nameOrPath) else {
                throw SFTError.io(path: nameOrPath, message: "cannot read template file (built-in names: \(ChatTemplate.builtinNames.joined(separator: ", ")))")
            }
            template = try ChatTemplate(source: String(decoding: data, as: UTF8.self))
        }
    }

    guard let data = FileManager.default.contents(atPath: messagesPath) else {
        throw SFTError.io(path: messagesPath, message: "cannot read messages file")
    }
    let doc = try JSONValue(parsing: data, path: messagesPath)
    var messageList: [JSONValue]
    var tools: JSONValue?
    var extra: [String: JSONValue] = [:]
    switch doc {
    case .array(let a):
        messageList = a
    case .object(let pairs):
        guard let m = doc["messages"]?.arrayValue else {
            throw SFTError.format(path: messagesPath, offset: nil, message: "expected a \"messages\" array")
        }
        messageList = m
        tools = doc["tools"].flatMap { $0.isNull ? nil : $0 }
        for (k, v) in pairs where k != "messages" && k != "tools" { extra[k] = v }
    default:
        throw SFTError.format(path: messagesPath, offset: nil, message: "expected a JSON array of messages or an object with \"messages\"")
    }
    let messages = try messageList.map { try ChatMessage(json: $0, path: messagesPath) }
    let rendered = try template.render(messages: messages, addGenerationPrompt: addPrompt, bosToken: bos ?? "",
                                       eosToken: eos ?? "", tools: tools, extra: extra)
    if json {
        let spans = JSONValue.array(rendered.messageSpans.map { .array($0.map { [.int($0.lowerBound), .int($0.upperBound)] }) })
        let turns = JSONValue.array(rendered.assistantTurns.map { t in
            .object([("message", .int(t.messageIndex)),
                     ("content", [.int(t.content.lowerBound), .int(t.content.upperBound)]),
                     ("through_end_of_turn", [.int(t.throughEndOfTurn.lowerBound), .int(t.throughEndOfTurn.upperBound)])])
        })
        let out = JSONValue.object([("text", .string(rendered.text)), ("spans", spans), ("assistant_turns", turns)])
        FileHandle.standardOutput.write(Data((out.serialized() + "\n").utf8))
    } else {
        FileHandle.standardOutput.write(Data(rendered.text.utf8))
    }
}
