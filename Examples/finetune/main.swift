// Finetune from Swift: LoRA on records made in code, with a progress callback that stops early.
// swift run -c release finetune-example [model.gguf] [output-dir]
import Foundation
import SFTCore

let arguments = CommandLine.arguments
let model = arguments.count > 1 ? arguments[1] : try Assets.require(Assets.smolLM2).path
let output = URL(fileURLWithPath: arguments.count > 2 ? arguments[2] : "runs/finetune-example")

// A custom data source: any Swift code that yields conversations, written as `messages` JSONL.
let facts = [("What is the capital of France?", "Paris."), ("What is 2 + 2?", "4."),
             ("Which planet is known as the red planet?", "Mars."), ("What color is the sky on a clear day?", "Blue.")]
let records = try facts.map { question, answer in
    let messages = [["role": "user", "content": question], ["role": "assistant", "content": answer]]
    return String(decoding: try JSONSerialization.data(withJSONObject: ["messages": messages]), as: UTF8.self)
}
try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
let data = output.appendingPathComponent("facts.jsonl")
try records.joined(separator: "\n").write(to: data, atomically: true, encoding: .utf8)

var config = FinetuneConfig()
config.model = model
config.data = data.path
config.outputDir = output.path
config.overwriteOutputDir = true
config.loraR = 8
config.learningRate = 1e-3
config.numTrainEpochs = 5
config.maxSteps = 20
config.dataConfig.maxSeqLength = 64

// The callback sees every event; returning .stop ends the run after this step (the adapter is
// still written). Here: stop once the loss is below 2, or after 3 steps.
let result = try Finetune.run(config) { event in
    guard case .step(let metrics, let total) = event else { return .continue }
    print("step \(metrics.step)/\(total) loss \(metrics.loss ?? .nan)")
    return (metrics.loss ?? .infinity) < 2 || metrics.step >= 3 ? .stop : .continue
}
print("stopped after \(result.summary.steps) steps; adapter: \(result.output.path)")
