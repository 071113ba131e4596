// Writing an HF model folder: config.json, model.safetensors (f32, or bf16/f16 on request) and
// the tokenizer files, loadable by transformers' from_pretrained and by sft.

import Foundation

public enum HFExport {
    /// Saves `lm`'s weights (LoRA adapters must be merged first) with its config.
    public static func saveModel(_ lm: LanguageModel, to dir: URL, dtype: SafetensorsDType = .f32) throws {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        if lm.model.namedModules().contains(where: { ($0.1 as? Linear)?.lora != nil }) {
            throw SFTError.config(field: "merge", message: "the model still has LoRA adapters; merge them before saving a full model")
        }
        if lm.model.namedModules().contains(where: { ($0.1 as? Linear)?.quantized != nil }) {
            throw SFTError.config(field: "merge", message: "the model has 4-bit layers; dequantize them (merge) before saving a full model")
        }
        var tensors: [(name: String, tensor: SafetensorsTensor)] = []
        for (name, p) in lm.model.namedParameters() {
            tensors.append((name, try SafetensorsTensor(try p.value.floats(), shape: p.value.shape, as: dtype)))
        }
        try Safetensors.write(tensors, metadata: ["format": "pt"], to: dir.appendingPathComponent("model.safetensors"))
        var config = lm.model.hfConfig
        config["torch_dtype"] = dtype == .bf16 ? "bfloat16" : dtype == .f16 ? "float16" : "float32"
        if let b = lm.tokenizer.bosTokenId { config["bos_token_id"] = Int(b) }
        if let e = lm.tokenizer.eosTokenId { config["eos_token_id"] = Int(e) }
        try writeSynced(try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys]),
                        to: dir.appendingPathComponent("config.json"))
        try TokenizerExport.save(lm, to: dir)
    }
}

/// Tokenizer files for an exported folder: copied from an HF source folder, or written from
/// the tokenizer spec (GGUF sources) as tokenizer.json + tokenizer_config.json.
public enum TokenizerExport {
    public static func save(_ lm: LanguageModel, to dir: URL) throws {
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
        try lm.tokenizer.spec.writeHuggingFace(to: dir, chatTemplate: lm.chatTemplate?.source)
    }
}
