// sftctl export: write a model (with a PEFT adapter merged in, when given) as a GGUF file for
// llama.cpp or as an HF folder. The work is SFTCore's (GGUFExport, HFExport); this file parses
// and prints.
import Foundation
import SFTCore
import SFTKernels

let exportCommand = Command(
    name: "export",
    summary: "write a model (adapter merged) as GGUF or an HF folder",
    help: """
    usage: sftctl export --model PATH [--adapter DIR] --output OUT [--format gguf|hf]
                         [--dtype f32|f16|bf16|q8_0] [--json]

    Writes the model with the adapter (if any) merged into its weights.
    GGUF: llama.cpp's tensor names and q/k row order, the llama.* hyper-parameters and the
    tokenizer (tokenizer.ggml.* keys, chat template); 1-D tensors stay f32.
    HF: config.json, model.safetensors, tokenizer files (as `sftctl merge`).

      --model PATH    a GGUF file or an HF model folder
      --adapter DIR   a PEFT LoRA adapter folder to merge first
      --output OUT    the .gguf file or the folder to write
      --format F      gguf or hf (default: gguf when OUT ends in .gguf, else hf)
      --dtype D       f32 (default), f16, bf16, or q8_0 (GGUF only)
      --device D      cpu (default), cuda or cuda:N: where the merge runs
      --json          print one JSON object: {"format", "output", "dtype", "bytes", "merge": {...}}
    """,
    booleanFlags: [],
    run: { args in
        let model = try args.require("model")
        let adapter = args.string("adapter")
        let output = try args.require("output")
        let format = args.string("format") ?? (output.lowercased().hasSuffix(".gguf") ? "gguf" : "hf")
        let dtypeName = (args.string("dtype") ?? "f32").lowercased()
        let json = args.flag("json")
        let device = try args.device()
        try args.finish()
        guard format == "gguf" || format == "hf" else { throw UsageError(description: "--format: '\(format)' is not gguf or hf") }
        let ggufType = GGUFExport.DType(rawValue: dtypeName == "float16" ? "f16" : dtypeName == "bfloat16" ? "bf16" : dtypeName)
        guard ggufType != nil else { throw UsageError(description: "--dtype: '\(dtypeName)' is not f32, f16, bf16 or q8_0") }
        if format == "hf" && ggufType == .q8_0 { throw UsageError(description: "--dtype q8_0 is for GGUF files (--format gguf)") }
        let hfType = format == "hf" ? try parseModelDType(dtypeName) : nil

        let lm = try LanguageModel.load(URL(fileURLWithPath: model), on: device, adapter: adapter.map { URL(fileURLWithPath: $0) })
        let report = adapter == nil ? nil : try lm.mergeAdapters()
        let out = URL(fileURLWithPath: output)
        if let hfType {
            try HFExport.saveModel(lm, to: out, dtype: hfType)
        } else {
            try GGUFExport.save(lm, to: out, dtype: ggufType!)
        }
        let bytes = sizeOnDisk(out)
        if json {
            var o: [String: Any] = ["format": format, "output": output, "dtype": ggufType!.rawValue, "bytes": bytes]
            if let report { o["merge"] = report.json.foundationValue }
            printJSON(o)
        } else {
            if let report { printMergeReport(report) }
            print("wrote \(output) (\(format), \(ggufType!.rawValue), \(bytes / 1_000_000) MB)")
        }
    }
)

/// Bytes of a file, or of the files in a folder.
private func sizeOnDisk(_ url: URL) -> Int {
    let fm = FileManager.default
    func size(_ path: String) -> Int { ((try? fm.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue ?? 0 }
    var isDir: ObjCBool = false
    guard fm.fileExists(atPath: url.path, isDirectory: &isDir) else { return 0 }
    guard isDir.boolValue else { return size(url.path) }
    return ((try? fm.contentsOfDirectory(atPath: url.path)) ?? []).reduce(0) { $0 + size(url.appendingPathComponent($1).path) }
}
