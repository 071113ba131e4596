// Merge an adapter into the base weights and export: an HF folder (safetensors, config,
// tokenizer) and a GGUF file, both loadable by transformers / llama.cpp and by sft.
// swift run -c release merge-export-example [model.gguf] [adapter-dir] [output-dir]
import Foundation
import SFTCore

let arguments = CommandLine.arguments
let model = URL(fileURLWithPath: arguments.count > 1 ? arguments[1] : try Assets.require(Assets.smolLM2).path)
let adapter = URL(fileURLWithPath: arguments.count > 2 ? arguments[2] : "runs/finetune-example/adapter")
let output = URL(fileURLWithPath: arguments.count > 3 ? arguments[3] : "runs/merge-export-example")

let lm = try LanguageModel.load(model, adapter: adapter)
let report = try lm.mergeAdapters()   // W += s·B·A in every adapted layer
print("merged \(report.mergedLayers) layers; max |Δlogit| merged vs adapter \(report.maxAbsLogitDiff)")

let folder = output.appendingPathComponent("hf")
try HFExport.saveModel(lm, to: folder, dtype: .bf16)
let gguf = output.appendingPathComponent("model.gguf")
try GGUFExport.save(lm, to: gguf, dtype: .q8_0)

// Both load back; the GGUF (8-bit) answers like the merged model up to quantization.
let ids = lm.encodePrompt("The capital of France is")
let fromFolder = try LanguageModel.load(folder).model.logits(ids)
let fromGGUF = try LanguageModel.load(gguf).model.logits(ids)
let merged = try lm.model.logits(ids)
print("max |Δlogit| vs merged: HF bf16 \(zip(fromFolder, merged).map { abs($0 - $1) }.max()!), GGUF q8_0 \(zip(fromGGUF, merged).map { abs($0 - $1) }.max()!)")
print("wrote \(folder.path) and \(gguf.path)")
