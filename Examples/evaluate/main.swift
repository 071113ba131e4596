// Evaluate and generate with a trained adapter: perplexity on a text with and without it,
// then a chat reply through the model's template.
// swift run -c release evaluate-example [model.gguf] [adapter-dir]
import Foundation
import SFTCore

let arguments = CommandLine.arguments
let model = URL(fileURLWithPath: arguments.count > 1 ? arguments[1] : try Assets.require(Assets.smolLM2).path)
let adapter = URL(fileURLWithPath: arguments.count > 2 ? arguments[2] : "runs/finetune-example/adapter")

let text = "What is the capital of France? Paris."
let base = try LanguageModel.load(model)
let tuned = try LanguageModel.load(model, adapter: adapter)
let before = try Evaluation.text(base, text), after = try Evaluation.text(tuned, text)
print("perplexity without the adapter \(before.perplexity), with it \(after.perplexity)")

let prompt = try tuned.chatPrompt([ChatMessage(role: "user", content: "What is the capital of France?")])
let reply = try tuned.generator.generate(prompt: prompt, config: GenerationConfig(maxNewTokens: 16)) { piece in
    print(piece, terminator: "")
    return true   // false stops the generation
}
print("\n(\(reply.ids.count) tokens, stopped by \(reply.stopReason.rawValue))")
