// `sftctl generate` and `sftctl chat`: text generation with a model (and optional adapter).
import Foundation
import SFTCore
import SFTKernels

func samplingOptions(_ args: Arguments) throws -> GenerationConfig {
    var g = GenerationConfig()
    g.maxNewTokens = try args.int("max-new-tokens") ?? 128
    g.sampling.temperature = try args.double("temperature") ?? 0
    g.sampling.topK = try args.int("top-k") ?? 0
    g.sampling.topP = try args.double("top-p") ?? 1
    g.sampling.minP = try args.double("min-p") ?? 0
    g.sampling.repetitionPenalty = try args.double("repetition-penalty") ?? 1
    g.sampling.seed = UInt64(try args.int("seed") ?? 0)
    g.stopStrings = args.strings("stop")
    return g
}

func loadModel(_ args: Arguments) throws -> LanguageModel {
    let path = try args.require("model")
    let adapter = args.string("adapter").map { URL(fileURLWithPath: $0) }
    if let t = try args.int("threads") { setCPUThreads(t) }
    var quantization: QuantizationConfig? = nil
    if let q = args.string("quantize") {
        guard let t = QuantType(rawValue: q) else { throw UsageError(description: "--quantize must be nf4 or fp4") }
        quantization = QuantizationConfig(type: t, blockSize: try args.int("quant-block-size") ?? 64, doubleQuant: args.flag("double-quant"))
        try quantization!.validate()
    }
    let precision = try Precision(parsing: args.string("precision") ?? "f32")
    let lm = try LanguageModel.load(URL(fileURLWithPath: path), on: try args.device(), adapter: adapter, template: args.string("template"),
                                    packedDecode: !args.flag("exact"), quantization: quantization)
    try lm.model.setPrecision(precision)
    return lm
}

let samplingHelp = """
      --max-new-tokens N       default 128
      --temperature T          0 = greedy (default)
      --top-k K / --top-p P / --min-p P / --repetition-penalty R / --seed S
      --stop TEXT              stop string (repeatable)
      --adapter DIR            PEFT adapter folder to apply
      --template NAME|FILE     chat template overriding the model's own
      --device D               cpu (default), cuda or cuda:N
      --threads N              CPU threads
      --quantize nf4|fp4       quantize the Linear layers to 4 bits on load (QLoRA base)
      --double-quant           also quantize the 4-bit scales (8-bit)
      --precision f32|bf16     matmuls in bf16 with f32 accumulation, weights stored bf16 (default f32)
      --exact                  decode with the dequantized f32 weights instead of the GGUF's
                               quantized blocks (slower; bit-comparable with transformers)
"""

let generateCommand = Command(
    name: "generate",
    summary: "generate text from a prompt",
    help: """
    usage: sftctl generate --model PATH --prompt TEXT [--chat] [--system TEXT] [options] [--json]

    With --chat the prompt is a user message rendered by the chat template with the
    generation prompt. Text streams to stdout; --json prints {"ids": [...], "text": "..."}
    of the new tokens instead.

      --model PATH             GGUF file or HF model folder
      --prompt TEXT            the prompt (repeatable: batched prompts, one result each)
    \(samplingHelp)
    """,
    booleanFlags: ["chat", "exact", "double-quant"],
    run: runGenerate
)

func runGenerate(_ args: Arguments) throws {
        let lm = try loadModel(args)
        let prompts = args.strings("prompt")
        guard !prompts.isEmpty else { throw UsageError(description: "missing required option --prompt") }
        let chat = args.flag("chat"), json = args.flag("json")
        let system = args.string("system")
        let config = try samplingOptions(args)
        try args.finish()
        var results: [[String: Any]] = []
        for prompt in prompts {
            var messages: [ChatMessage] = []
            if let system { messages.append(ChatMessage(role: "system", content: system)) }
            messages.append(ChatMessage(role: "user", content: prompt))
            let ids = chat ? try lm.chatPrompt(messages) : lm.encodePrompt(prompt)
            let r = try lm.generator.generate(prompt: ids, config: config, onText: json ? nil : { piece in
                print(piece, terminator: ""); fflush(nil); return true
            })
            if json {
                let speed: Double = r.decodeSeconds > 0 ? Double(r.ids.count) / r.decodeSeconds : 0
                let o: [String: Any] = ["ids": r.ids.map { Int($0) }, "text": r.text, "stop_reason": r.stopReason.rawValue,
                                        "prompt_tokens": r.promptTokens, "decode_tokens_per_second": speed]
                results.append(o)
            } else {
                print("")
            }
        }
        if json {
            let out: [String: Any] = results.count == 1 ? results[0] : ["results": results]
            printJSON(out)
        }
}

let chatCommand = Command(
    name: "chat",
    summary: "chat with a model in the terminal",
    help: """
    usage: sftctl chat --model PATH [--system TEXT] [options]

    An interactive multi-turn chat: each line you type is a user message; the model answers
    through its chat template. Commands: /reset clears the conversation, /quit leaves.
    \(samplingHelp)
    """,
    booleanFlags: ["exact", "double-quant"],
    run: runChat
)

func runChat(_ args: Arguments) throws {
        let lm = try loadModel(args)
        let system = args.string("system")
        var config = try samplingOptions(args)
        if args.string("max-new-tokens") == nil { config.maxNewTokens = 512 }
        try args.finish()
        var messages: [ChatMessage] = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
        print("chatting with \(lm.url.lastPathComponent) — /reset, /quit")
        while true {
            print("> ", terminator: ""); fflush(nil)
            guard let line = readLine() else { break }
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.isEmpty { continue }
            if text == "/quit" || text == "/exit" { break }
            if text == "/reset" { messages = system.map { [ChatMessage(role: "system", content: $0)] } ?? []; continue }
            messages.append(ChatMessage(role: "user", content: text))
            let r = try lm.generator.generate(prompt: try lm.chatPrompt(messages), config: config) { piece in
                print(piece, terminator: ""); fflush(nil); return true
            }
            print("")
            messages.append(ChatMessage(role: "assistant", content: r.text))
        }
}
