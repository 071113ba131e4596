// The layers every architecture shares: Linear (with an optional LoRA adapter attached, so
// adapters apply to every model at once), Embedding, RMSNorm, LayerNorm, and RoPE frequencies.

import Foundation

/// y = x Wᵀ + b, W stored (out, in) as in HF checkpoints. With `lora` set, adds the adapter's
/// low-rank update; the base weight is then normally frozen. With `quantized` set (QLoRA), W
/// is the 4-bit weight, dequantized on the fly, and `weight` is an empty placeholder that is
/// not listed as a parameter (see Quantization/).
public final class Linear: Module {
    public let inFeatures: Int
    public let outFeatures: Int
    public let weight: Parameter
    public let bias: Parameter?
    /// The adapter, when LoRA is applied to this layer.
    public var lora: LoRAAdapter?
    /// The weight in GGUF block form, used by batch-1 generation (see PackedWeights.swift).
    public var packed: PackedMatrix?
    /// The frozen 4-bit base weight, when quantized (`quantize(_:)`, `quantizeLinears`).
    public var quantized: QuantizedWeight?

    public init(inFeatures: Int, outFeatures: Int, bias: Bool, on backend: Backend) throws {
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        // Models built for quantize-on-load allocate no f32 weight yet (Linear.deferringWeights).
        weight = Parameter(try Tensor.zeros([Linear.deferWeights ? 0 : outFeatures, inFeatures], on: backend))
        self.bias = bias ? Parameter(try Tensor.zeros([outFeatures], on: backend)) : nil
    }

    override public var localParameters: [(String, Parameter)] {
        var p = quantized == nil ? [("weight", weight)] : []
        if let bias { p.append(("bias", bias)) }
        return p
    }

    override public var children: [(String, Module)] {
        guard let lora else { return [] }
        return [("lora_A", lora.a), ("lora_B", lora.b)] + (lora.magnitude.map { [("lora_magnitude_vector", $0)] } ?? [])
    }

    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        if let lora, let m = lora.magnitude { return try doraForward(x, lora, magnitude: m.weight.value) }
        if let lora, quantized == nil, packed == nil || Autograd.isEnabled {
            return try Ops.loraLinear(x, weight: weight.value, bias: bias?.value, a: lora.a.weight.value,
                                      b: lora.b.weight.value, scaling: lora.scaling, dropout: lora.dropout)
        }
        let y = try quantized.map { try Ops.quantizedLinear(x, $0, bias: bias?.value) }
            ?? packedOutput(x) ?? Ops.linear(x, weight.value, bias: bias?.value)
        guard let lora else { return y }
        return try Ops.add(y, try lora(x))
    }
}

/// A bare weight holder named like PEFT's `lora_A` / `lora_B` sub-modules (`….lora_A.weight`).
public final class WeightOnly: Module {
    public let weight: Parameter
    public init(_ weight: Parameter) { self.weight = weight }
    override public var localParameters: [(String, Parameter)] { [("weight", weight)] }
}

public final class Embedding: Module {
    public let weight: Parameter
    /// NEFTune (TRL's `neftune_noise_alpha`): while training, adds uniform noise in ±alpha/√(L·d)
    /// to the embeddings (L: the row length, d: the width); never in evaluation or generation.
    public var neftuneNoiseAlpha: Float?
    public init(vocab: Int, dim: Int, on backend: Backend) throws {
        weight = Parameter(try Tensor.zeros([vocab, dim], on: backend))
    }
    override public var localParameters: [(String, Parameter)] { [("weight", weight)] }
    /// `rowLength`: tokens per row of the batch (T), for NEFTune's scale; default: all of ids.
    public func callAsFunction(_ ids: Tensor, rowLength: Int? = nil) throws -> Tensor {
        let x = try Ops.embedding(ids, table: weight.value)
        guard let alpha = neftuneNoiseAlpha, alpha > 0, Autograd.isTraining else { return x }
        let d = weight.value.shape[1], L = rowLength ?? ids.count
        return try Ops.add(x, try Ops.uniformNoise(like: x, bound: alpha / Float(L * d).squareRoot()))
    }
}

public final class RMSNorm: Module {
    public let weight: Parameter
    public let eps: Float
    public init(dim: Int, eps: Float, on backend: Backend) throws {
        weight = Parameter(try Tensor([Float](repeating: 1, count: dim), shape: [dim], on: backend))
        self.eps = eps
    }
    override public var localParameters: [(String, Parameter)] { [("weight", weight)] }
    public func callAsFunction(_ x: Tensor) throws -> Tensor { try Ops.rmsNorm(x, weight: weight.value, eps: eps) }
}

public final class LayerNorm: Module {
    public let weight: Parameter
    public let bias: Parameter?
    public let eps: Float
    public init(dim: Int, eps: Float, bias: Bool, on backend: Backend) throws {
        weight = Parameter(try Tensor([Float](repeating: 1, count: dim), shape: [dim], on: backend))
        self.bias = bias ? Parameter(try Tensor.zeros([dim], on: backend)) : nil
        self.eps = eps
    }
    override public var localParameters: [(String, Parameter)] {
        var p = [("weight", weight)]
        if let bias { p.append(("bias", bias)) }
        return p
    }
    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        try Ops.layerNorm(x, weight: weight.value, bias: bias?.value, eps: eps)
    }
}

/// RoPE inverse frequencies θ^(−2i/D), with Llama-3 "llama3" scaling when configured.
public struct RopeScaling: Codable, Equatable, Sendable {
    public var ropeType: String
    public var factor: Double
    public var lowFreqFactor: Double?
    public var highFreqFactor: Double?
    public var originalMaxPositionEmbeddings: Int?

    enum CodingKeys: String, CodingKey {
        case ropeType = "rope_type", type, factor
        case lowFreqFactor = "low_freq_factor", highFreqFactor = "high_freq_factor"
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
    }
    public init(ropeType: String, factor: Double, lowFreqFactor: Double? = nil, highFreqFactor: Double? = nil,
                originalMaxPositionEmbeddings: Int? = nil) {
        self.ropeType = ropeType; self.factor = factor; self.lowFreqFactor = lowFreqFactor
        self.highFreqFactor = highFreqFactor; self.originalMaxPositionEmbeddings = originalMaxPositionEmbeddings
    }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        ropeType = try c.decodeIfPresent(String.self, forKey: .ropeType) ?? c.decodeIfPresent(String.self, forKey: .type) ?? "default"
        factor = try c.decodeIfPresent(Double.self, forKey: .factor) ?? 1
        lowFreqFactor = try c.decodeIfPresent(Double.self, forKey: .lowFreqFactor)
        highFreqFactor = try c.decodeIfPresent(Double.self, forKey: .highFreqFactor)
        originalMaxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .originalMaxPositionEmbeddings)
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(ropeType, forKey: .ropeType)
        try c.encode(factor, forKey: .factor)
        try c.encodeIfPresent(lowFreqFactor, forKey: .lowFreqFactor)
        try c.encodeIfPresent(highFreqFactor, forKey: .highFreqFactor)
        try c.encodeIfPresent(originalMaxPositionEmbeddings, forKey: .originalMaxPositionEmbeddings)
    }
}

public enum Rope {
    /// Inverse frequencies for head dim D (D/2 values), as transformers computes them.
    public static func inverseFrequencies(headDim D: Int, theta: Double, scaling: RopeScaling?) throws -> [Float] {
        var inv = (0..<(D / 2)).map { i in 1.0 / Foundation.pow(theta, Double(2 * i) / Double(D)) }
        guard let s = scaling, s.ropeType != "default" else { return inv.map(Float.init) }
        switch s.ropeType {
        case "linear":
            inv = inv.map { $0 / s.factor }
        case "llama3":
            // Llama 3.1: keep high frequencies, divide low ones by `factor`, blend between.
            let low = s.lowFreqFactor ?? 1, high = s.highFreqFactor ?? 4
            let oldCtx = Double(s.originalMaxPositionEmbeddings ?? 8192)
            let lowWavelen = oldCtx / low, highWavelen = oldCtx / high
            inv = inv.map { f in
                let wavelen = 2 * Double.pi / f
                if wavelen < highWavelen { return f }
                if wavelen > lowWavelen { return f / s.factor }
                let smooth = (oldCtx / wavelen - low) / (high - low)
                return (1 - smooth) * f / s.factor + smooth * f
            }
        default:
            throw SFTError.config(field: "rope_scaling.rope_type", message: "'\(s.ropeType)' is not supported (default, linear, llama3)")
        }
        return inv.map(Float.init)
    }
}
