// Writing an HF model folder — config.json, model.safetensors (f32, or bf16/f16 on request),
// the tokenizer files and generation_config.json — loadable by transformers' from_pretrained
// and by sft; and merging LoRA adapters into the base weights first (`sftctl merge`), with a
// report of how far the merged model's logits moved.

import Foundation
import SFTKernels

/// Writes a model as an HF folder (config.json, model.safetensors, the tokenizer files,
/// generation_config.json) that transformers' `from_pretrained` and sft both load.
public enum HFExport {
    /// Saves `lm`'s weights (LoRA adapters must be merged first) with its config and tokenizer.
    ///
    /// ```swift
    /// let lm = try LanguageModel.load(URL(fileURLWithPath: "model.gguf"), adapter: adapterDir)
    /// let report = try lm.mergeAdapters()
    /// try HFExport.saveModel(lm, to: outDir, dtype: .bf16)
    /// ```
    /// - Parameters:
    ///   - lm: the model (with any adapters merged or not: only base weights are written).
    ///   - dir: the folder to write (created; files in it are replaced).
    ///   - dtype: `.f32`, `.bf16` or `.f16` (rounded to nearest even).
    public static func saveModel(_ lm: LanguageModel, to dir: URL, dtype: SafetensorsDType = .f32) throws {
        guard [.f32, .bf16, .f16].contains(dtype) else {
            throw SFTError.config(field: "dtype", message: "\(dtype.rawValue) is not a model dtype (f32, bf16, f16)")
        }
        if lm.model.namedModules().contains(where: { ($0.1 as? Linear)?.lora != nil }) {
            throw SFTError.config(field: "merge", message: "the model still has LoRA adapters; merge them before saving a full model")
        }
        if lm.model.namedModules().contains(where: { ($0.1 as? Linear)?.quantized != nil }) {
            throw SFTError.config(field: "merge", message: "the model has 4-bit layers; dequantize them (merge) before saving a full model")
        }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var tensors: [(name: String, tensor: SafetensorsTensor)] = []
        for (name, p) in lm.model.namedParameters() {
            tensors.append((name, try SafetensorsTensor(try p.value.floats(), shape: p.value.shape, as: dtype)))
        }
        try Safetensors.write(tensors, metadata: ["format": "pt"], to: dir.appendingPathComponent("model.safetensors"))
        tensors.removeAll()
        var config = try lm.model.hfConfig
        let dtypeName = dtype == .bf16 ? "bfloat16" : dtype == .f16 ? "float16" : "float32"
        // transformers 5 reads "dtype"; 4.x reads "torch_dtype".
        config["torch_dtype"] = .string(dtypeName)
        config["dtype"] = .string(dtypeName)
        if let b = lm.tokenizer.bosTokenId { config["bos_token_id"] = .int(Int(b)) }
        if let e = lm.tokenizer.eosTokenId { config["eos_token_id"] = .int(Int(e)) }
        if let p = lm.tokenizer.padTokenId { config["pad_token_id"] = .int(Int(p)) }
        try writeJSON(config.mapValues(\.foundationValue), to: dir.appendingPathComponent("config.json"))
        try TokenizerExport.save(lm, to: dir, modelMaxLength: config["max_position_embeddings"]?.intValue)
    }

    static func writeJSON(_ object: [String: Any], to url: URL) throws {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        try writeSynced(data, to: url)
    }
}

/// Tokenizer files for an exported folder: copied from an HF source folder, or written from
/// the tokenizer spec (GGUF sources) as tokenizer.json + tokenizer_config.json +
/// special_tokens_map.json, with a generation_config.json naming the tokens that end a turn.
public enum TokenizerExport {
    /// Writes the tokenizer files of `lm` into `dir`: copies them from an HF source folder, or
    /// (GGUF sources) writes tokenizer.json, tokenizer_config.json, special_tokens_map.json and a
    /// generation_config.json whose `eos_token_id` lists every token that ends a turn.
    /// - Parameters:
    ///   - lm: the model whose tokenizer and chat template are written.
    ///   - dir: the export folder (must exist).
    ///   - modelMaxLength: tokenizer_config's `model_max_length`; nil leaves it out.
    /// - Throws: `SFTError.io` when a file cannot be copied or written.
    public static func save(_ lm: LanguageModel, to dir: URL, modelMaxLength: Int? = nil) throws {
        let fm = FileManager.default
        if let folder = lm.source as? HFModelFolder {
            for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"] {
                let src = folder.url.appendingPathComponent(name), dst = dir.appendingPathComponent(name)
                if fm.fileExists(atPath: src.path) && src.standardizedFileURL != dst.standardizedFileURL {
                    try? fm.removeItem(at: dst)
                    try fm.copyItem(at: src, to: dst)
                }
            }
            return
        }
        let spec = lm.tokenizer.spec
        try spec.writeHuggingFace(to: dir, chatTemplate: lm.chatTemplate?.source, modelMaxLength: modelMaxLength)
        // generate() in transformers stops at these; sft reads them back as end-of-turn tokens.
        var generation: [String: Any] = [:]
        if let b = spec.bosTokenId { generation["bos_token_id"] = Int(b) }
        let stops = lm.tokenizer.eosTokenIds.map { Int($0) }
        if stops.count == 1 { generation["eos_token_id"] = stops[0] } else if !stops.isEmpty { generation["eos_token_id"] = stops }
        if let p = spec.padTokenId { generation["pad_token_id"] = Int(p) }
        try HFExport.writeJSON(generation, to: dir.appendingPathComponent("generation_config.json"))
    }
}

/// How merging LoRA adapters changed a model's logits on a sample text.
public struct MergeReport: Sendable {
    /// Linear layers whose adapter was folded in.
    public var mergedLayers: Int
    /// Tokens of the sample text.
    public var tokens: Int
    /// Largest |logit(merged) − logit(base + adapter)| over all positions and the vocabulary.
    public var maxAbsLogitDiff: Float
    /// Mean |logit(merged) − logit(base + adapter)| over all positions and the vocabulary.
    public var meanAbsLogitDiff: Float
    /// Largest |logit(base + adapter) − logit(base)|: how much the adapter itself changes the
    /// model (0 means the adapter does nothing, e.g. B still zero).
    public var maxAbsAdapterEffect: Float

    /// The report as one JSON object.
    public var json: JSONValue {
        ["max_abs_adapter_effect": .double(Double(maxAbsAdapterEffect)), "max_abs_logit_diff": .double(Double(maxAbsLogitDiff)),
         "mean_abs_logit_diff": .double(Double(meanAbsLogitDiff)), "merged_layers": .int(mergedLayers), "tokens": .int(tokens)]
    }
}

extension LanguageModel {
    /// A short text for merge reports.
    public static let mergeSampleText = "The capital of France is Paris. def add(a, b):\n    return a + b\n"

    /// Folds every LoRA adapter into its base weight (W += s·B·A) and reports the change of the
    /// logits on `sampleText`: merged against base + adapter (should be float rounding only),
    /// and base + adapter against the base alone.
    @discardableResult
    public func mergeAdapters(sampleText: String = LanguageModel.mergeSampleText) throws -> MergeReport {
        let linears = model.namedModules().compactMap { $0.1 as? Linear }.filter { $0.lora != nil }
        let ids = encodePrompt(sampleText)
        guard !ids.isEmpty else { throw SFTError.config(field: "sample_text", message: "tokenizes to no tokens") }
        let adapted = try model.logits(ids)
        // The base alone: adapters detached for one forward pass, then put back.
        let adapters = linears.map { $0.lora }
        for l in linears { l.lora = nil }
        let base = try model.logits(ids)
        for (l, a) in zip(linears, adapters) { l.lora = a }
        for l in linears { try l.mergeLoRA() }
        let merged = try model.logits(ids)
        var maxDiff: Float = 0, sum: Double = 0, effect: Float = 0
        for i in merged.indices {
            let d = abs(merged[i] - adapted[i])
            maxDiff = max(maxDiff, d.isNaN ? .infinity : d)
            sum += Double(d)
            effect = max(effect, abs(adapted[i] - base[i]))
        }
        return MergeReport(mergedLayers: linears.count, tokens: ids.count, maxAbsLogitDiff: maxDiff,
                           meanAbsLogitDiff: Float(sum / Double(max(merged.count, 1))), maxAbsAdapterEffect: effect)
    }
}
