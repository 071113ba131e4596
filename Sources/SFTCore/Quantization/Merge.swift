// Merging a QLoRA run for deployment: every 4-bit Linear is dequantized to f32 and its LoRA
// update s·B·A added, giving an ordinary f32 model that saves as an HF folder (f32, bf16 or
// f16, through HFExport). Merging is exact up to rounding, but the saved dtype rounds the
// merged weights, so `merge(_:sampleTokens:dtype:)` reports max and mean |Δ logits| between the
// unmerged model (4-bit base + adapters) and the merged one as it will be saved.

import Foundation
import SFTKernels

/// |Δ| between two logit arrays over the same tokens.
public struct LogitsDifference: Sendable, CustomStringConvertible {
    /// Largest |reference − candidate| (+∞ when a difference is NaN).
    public let maxAbs: Float
    /// Mean |reference − candidate| over all compared logits.
    public let meanAbs: Double
    /// Number of logits compared (tokens × vocab).
    public let count: Int

    /// Compares two arrays of the same length (a precondition).
    /// - Parameters:
    ///   - reference: Logits of the unmerged model.
    ///   - candidate: Logits of the merged one.
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

    /// "max |Δ logits| …, mean |Δ logits| … over N logits".
    public var description: String {
        "max |Δ logits| \(maxAbs), mean |Δ logits| \(Float(meanAbs)) over \(count) logits"
    }
}

/// Folding LoRA adapters (and 4-bit bases) into plain f32 weights for deployment, and measuring
/// what the merge and the saved dtype change in the logits.
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

    /// Merges `lm`'s model (4-bit base + adapters) into f32, rounds it to `dtype` and saves it
    /// as an HF folder with `HFExport.saveModel`. Returns |Δ logits| of the saved weights
    /// against the unmerged model on `sampleTokens` (the BOS token when empty).
    @discardableResult
    public static func mergeAndSave(_ lm: LanguageModel, to directory: URL, dtype: SafetensorsDType = .f32,
                                    sampleTokens: [Int32] = []) throws -> LogitsDifference {
        let tokens = sampleTokens.isEmpty ? [lm.tokenizer.bosTokenId ?? 0] : sampleTokens
        let report = try merge(lm.model, sampleTokens: tokens, dtype: dtype)
        try HFExport.saveModel(lm, to: directory, dtype: dtype)
        return report
    }
}
