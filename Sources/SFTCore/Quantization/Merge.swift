// Merging a QLoRA run for deployment: every 4-bit Linear is dequantized to f32 and its LoRA
// update s·B·A added, giving an ordinary f32 model that saves as an HF folder (f32, bf16 or
// f16). Merging is exact up to rounding, but the saved dtype rounds the merged weights, so
// `merge(_:sampleTokens:dtype:)` reports max and mean |Δ logits| between the unmerged model
// (4-bit base + adapters) and the merged one as it will be saved.

import Foundation

/// |Δ| between two logit arrays over the same tokens.
public struct LogitsDifference: Sendable, CustomStringConvertible {
    public let maxAbs: Float
    public let meanAbs: Double
    /// Number of logits compared (tokens × vocab).
    public let count: Int

    public init(reference: [Float], candidate: [Float]) {
        precondition(reference.count == candidate.count, "logit arrays of different sizes")
        var mx: Float = 0, sum = 0.0
        for (a, b) in zip(reference, candidate) {
            let d = abs(a - b)
            mx = max(mx, d.isNaN ? .infinity : d)
            sum += Double(d)
        }
        maxAbs = mx; meanAbs = reference.isEmpty ? 0 : sum / Double(reference.count); count = reference.count
    }

    public var description: String {
        "max |Δ logits| \(maxAbs), mean |Δ logits| \(Float(meanAbs)) over \(count) logits"
    }
}

public enum QLoRAMerge {
    /// Dequantizes every 4-bit Linear under `model` and folds LoRA adapters into the f32
    /// weights (4-bit or not). Returns the names of the Linears that changed.
    @discardableResult
    public static func merge(_ model: Module) throws -> [String] {
        var merged: [String] = []
        for (name, m) in model.namedModules() {
            guard let linear = m as? Linear, linear.quantized != nil || linear.lora != nil else { continue }
            try linear.dequantize()
            try linear.mergeLoRA()
            merged.append(name)
        }
        return merged
    }

    /// Merges `model` in place and rounds every parameter to `dtype` (what
    /// `writeHFFolder(_:to:dtype:)` will store), and returns |Δ logits| of the merged model
    /// against the unmerged one on `sampleTokens` (one row).
    public static func merge(_ model: CausalLM, sampleTokens: [Int32], dtype: SafetensorsDType = .f32) throws -> LogitsDifference {
        guard !sampleTokens.isEmpty else { throw SFTError.shape(op: "merge", message: "no sample tokens to compare logits on") }
        let before = try model.logits(sampleTokens)
        try merge(model)
        try round(model, to: dtype)
        return LogitsDifference(reference: before, candidate: try model.logits(sampleTokens))
    }

    /// Rounds every parameter's values to `dtype` and back (f32: unchanged).
    static func round(_ model: Module, to dtype: SafetensorsDType) throws {
        let rounding: (Float) -> Float
        switch dtype {
        case .f32: return
        case .bf16: rounding = { Float(bitPattern: UInt32(bf16Bits($0)) << 16) }
        case .f16: rounding = { Float(Float16($0)) }
        default: throw SFTError.unsupported("merged weights as \(dtype.rawValue) (use F32, BF16 or F16)")
        }
        for (_, p) in model.namedParameters() where p.value.dtype == .f32 && p.value.count > 0 {
            try p.value.assign(try p.value.floats().map(rounding))
        }
    }

    /// Writes an HF model folder: config.json (from the model) and model.safetensors with every
    /// parameter under its HF name as `dtype`, plus the tokenizer and generation files found in
    /// `tokenizerFolder`. The model must hold no 4-bit Linears or adapters (merge first).
    public static func writeHFFolder(_ model: CausalLM, to directory: URL, dtype: SafetensorsDType = .f32,
                                     tokenizerFolder: URL? = nil) throws {
        guard [.f32, .bf16, .f16].contains(dtype) else {
            throw SFTError.unsupported("merged weights as \(dtype.rawValue) (use F32, BF16 or F16)")
        }
        for (name, m) in model.namedModules() {
            if let l = m as? Linear, l.quantized != nil || l.lora != nil {
                throw SFTError.weights(key: name, message: "still 4-bit or carrying a LoRA adapter; call QLoRAMerge.merge first")
            }
        }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var tensors: [(name: String, tensor: SafetensorsTensor)] = []
        for (name, p) in model.namedParameters() {
            tensors.append((name, try SafetensorsTensor(try p.value.floats(), shape: p.value.shape, as: dtype)))
        }
        try Safetensors.write(tensors, metadata: ["format": "pt"], to: directory.appendingPathComponent("model.safetensors"))
        var config = model.hfConfig
        config["torch_dtype"] = dtype == .f32 ? "float32" : dtype == .bf16 ? "bfloat16" : "float16"
        let json = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
        let configURL = directory.appendingPathComponent("config.json")
        do { try json.write(to: configURL, options: .atomic) } catch {
            throw SFTError.io(path: configURL.path, message: "write failed: \(error)")
        }
        guard let from = tokenizerFolder else { return }
        for file in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                     "tokenizer.model", "vocab.json", "merges.txt"] {
            let src = from.appendingPathComponent(file), dst = directory.appendingPathComponent(file)
            guard FileManager.default.fileExists(atPath: src.path) else { continue }
            try? FileManager.default.removeItem(at: dst)
            do { try FileManager.default.copyItem(at: src, to: dst) } catch {
                throw SFTError.io(path: dst.path, message: "cannot copy \(src.path): \(error)")
            }
        }
    }
}
