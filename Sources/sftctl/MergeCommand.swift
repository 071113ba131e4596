// sftctl merge: a base model plus a PEFT adapter folder in, a merged HF folder out, with a
// report of how far merging moved the logits on a sample text. The work is SFTCore's
// (LanguageModel.mergeAdapters, HFExport.saveModel); this file parses and prints.
import Foundation
import SFTCore
import SFTKernels

let mergeCommand = Command(
    name: "merge",
    summary: "fold a LoRA adapter into its base model and save an HF folder",
    help: """
    usage: sftctl merge --model PATH --adapter DIR --output DIR [--dtype f32|bf16|f16] [--json]

    Loads the base model and the PEFT adapter, folds every LoRA update into its weight
    (W += alpha/r · B·A), and writes an HF model folder (config.json, model.safetensors,
    tokenizer files, generation_config.json) that transformers' from_pretrained and sft load.
    Prints the largest and mean |Δ logit| between the merged model and base + adapter on a
    sample text (float rounding only; about 1e-5), and how much the adapter changes the base.

      --model PATH    the base model: a GGUF file or an HF model folder
      --adapter DIR   a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors)
      --output DIR    the folder to write (created; files in it are replaced)
      --dtype D       f32 (default), bf16 or f16 weights in model.safetensors
      --device D      cpu (default), cuda or cuda:N: where the merge runs
      --json          print one JSON object: {"merged_layers", "tokens", "max_abs_logit_diff",
                      "mean_abs_logit_diff", "max_abs_adapter_effect", "output", "dtype"}
    """,
    booleanFlags: [],
    run: { args in
        let model = try args.require("model")
        let adapter = try args.require("adapter")
        let output = try args.require("output")
        let dtype = try parseModelDType(args.string("dtype") ?? "f32")
        let json = args.flag("json")
        let device = try args.device()
        try args.finish()
        let lm = try LanguageModel.load(URL(fileURLWithPath: model), on: device, adapter: URL(fileURLWithPath: adapter))
        let report = try lm.mergeAdapters()
        try HFExport.saveModel(lm, to: URL(fileURLWithPath: output), dtype: dtype)
        if json {
            var o = report.json.foundationValue as! [String: Any]
            o["output"] = output
            o["dtype"] = dtype.rawValue.lowercased()
            printJSON(o)
        } else {
            printMergeReport(report)
            print("wrote \(output) (\(dtype.rawValue.lowercased()))")
        }
    }
)

/// f32 / bf16 / f16 for HF folders.
func parseModelDType(_ s: String) throws -> SafetensorsDType {
    switch s.lowercased() {
    case "f32", "float32": return .f32
    case "bf16", "bfloat16": return .bf16
    case "f16", "float16": return .f16
    default: throw UsageError(description: "--dtype: '\(s)' is not f32, bf16 or f16")
    }
}

func printMergeReport(_ r: MergeReport) {
    print("merged \(r.mergedLayers) LoRA layers")
    print("sample text, \(r.tokens) tokens: merged vs base + adapter max |Δ logit| \(r.maxAbsLogitDiff), mean \(r.meanAbsLogitDiff)")
    print("adapter effect on the base: max |Δ logit| \(r.maxAbsAdapterEffect)")
}
