// Quickstart: load the default model (scripts/fetch-assets) and chat with it from Swift.
// swift run -c release quickstart "Your question"
import Foundation
import SFTCore

let question = CommandLine.arguments.dropFirst().joined(separator: " ")
do {
    let lm = try LanguageModel.load(try Assets.require(Assets.smolLM2), packedDecode: true)
    let prompt = try lm.chatPrompt([ChatMessage(role: "user", content: question.isEmpty ? "What is Swift?" : question)])
    _ = try lm.generator.generate(prompt: prompt, config: GenerationConfig(maxNewTokens: 96)) { piece in
        print(piece, terminator: ""); fflush(nil); return true
    }
    print("")
} catch {
    FileHandle.standardError.write(Data("quickstart: \(error)\n".utf8))
    exit(1)
}
