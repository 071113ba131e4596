// The layers every architecture shares: Linear (with an optional LoRA adapter attached, so
// adapters apply to every model at once), Embedding, RMSNorm, LayerNorm (RoPE is in Rope.swift).

import Foundation
import SFTKernels

/// y = x Wᵀ + b, W stored (out, in) as in HF checkpoints. With `lora` set, adds the adapter's
/// low-rank update; the base weight is then normally frozen. With `quantized` set (QLoRA), W
/// is the 4-bit weight, dequantized on the fly, and `weight` is an empty placeholder that is
/// not listed as a parameter (see Quantization/).
public final class Linear: Module {
    /// Input width: x is (N, inFeatures).
    public let inFeatures: Int
    /// Output width: y is (N, outFeatures).
    public let outFeatures: Int
    /// W, (outFeatures, inFeatures) f32 (HF `<name>.weight`); an empty (0, in) placeholder while
    /// the layer is quantized or built for quantize-on-load.
    public let weight: Parameter
    /// b, (outFeatures) (HF `<name>.bias`); nil when the layer has none.
    public let bias: Parameter?
    /// The adapter, when LoRA is applied to this layer.
    public var lora: LoRAAdapter?
    /// The weight in GGUF block form, used by batch-1 generation (see PackedWeights.swift).
    var packed: PackedMatrix?
    /// The frozen 4-bit base weight, when quantized (`quantize(_:)`, `quantizeLinears`).
    public var quantized: QuantizedWeight?
    /// What the dense matmuls compute in (`Module.setPrecision`, Precision.swift); in bf16 a
    /// frozen `weight` is stored bf16.
    public internal(set) var precision: Precision = .f32

    /// A layer with zero weights (load or initialize them before use).
    /// - Parameters:
    ///   - inFeatures: Input width.
    ///   - outFeatures: Output width.
    ///   - bias: Whether the layer has a bias.
    ///   - backend: The device the parameters live on.
    /// - Throws: When allocation fails.
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

    /// y = x Wᵀ + b for x (N, inFeatures), giving (N, outFeatures); plus the LoRA/DoRA update when
    /// an adapter is attached; through the 4-bit weight when quantized, or the packed GGUF weight in
    /// no-grad batch-1 decode.
    /// - Parameter x: Input rows, (N, inFeatures) f32.
    /// - Throws: On a shape mismatch or a backend failure.
    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        if let lora, let m = lora.magnitude { return try doraForward(x, lora, magnitude: m.weight.value) }
        if let lora, quantized == nil, packed == nil || Autograd.isEnabled {
            return try Ops.loraLinear(x, weight: weight.value, bias: bias?.value, a: lora.a.weight.value,
                                      b: lora.b.weight.value, scaling: lora.scaling, dropout: lora.dropout, precision: precision)
        }
        // 4-bit and packed GGUF weights take f32 inputs (a bf16 activation is widened).
        let y = try quantized.map { try Ops.quantizedLinear(try Ops.widened(x), $0, bias: bias?.value) }
            ?? (packed == nil ? nil : packedOutput(try Ops.widened(x))) ?? Ops.linear(x, weight.value, bias: bias?.value, precision: precision)
        guard let lora else { return y }
        return try Ops.add(y, try lora(x))
    }
}

/// A bare weight holder named like PEFT's `lora_A` / `lora_B` sub-modules (`….lora_A.weight`).
public final class WeightOnly: Module {
    /// The held weight (PEFT's `lora_A.weight`: (r, in); `lora_B.weight`: (out, r)).
    public let weight: Parameter
    /// Wraps `weight` as a module with one parameter named "weight".
    /// - Parameter weight: The parameter to hold.
    public init(_ weight: Parameter) { self.weight = weight }
    override public var localParameters: [(String, Parameter)] { [("weight", weight)] }
}

/// Token embedding: row i of `weight` is the vector of token id i (HF `embed_tokens`, MPT `wte`).
public final class Embedding: Module {
    /// The (V, C) embedding table.
    public let weight: Parameter
    /// NEFTune (TRL's `neftune_noise_alpha`): while training, adds uniform noise in ±alpha/√(L·d)
    /// to the embeddings (L: the row length, d: the width); never in evaluation or generation.
    public var neftuneNoiseAlpha: Float?
    /// A zero table of `vocab` rows of width `dim` (load or initialize before use).
    /// - Parameters:
    ///   - vocab: V, the number of token ids.
    ///   - dim: C, the embedding width.
    ///   - backend: The device the table lives on.
    /// - Throws: When allocation fails.
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

/// y = x / √(mean(x²) + eps) · w over the last dimension (HF's LlamaRMSNorm).
public final class RMSNorm: Module {
    /// The per-channel gain w, (C), initialized to ones.
    public let weight: Parameter
    /// Added to the mean square before the square root (the config's `rms_norm_eps`).
    public let eps: Float
    /// A norm over `dim` channels with unit gain.
    /// - Parameters:
    ///   - dim: C, the normalized width.
    ///   - eps: The epsilon.
    ///   - backend: The device the gain lives on.
    /// - Throws: When allocation fails.
    public init(dim: Int, eps: Float, on backend: Backend) throws {
        weight = Parameter(try Tensor([Float](repeating: 1, count: dim), shape: [dim], on: backend))
        self.eps = eps
    }
    override public var localParameters: [(String, Parameter)] { [("weight", weight)] }
    /// Normalizes each row of x (N, C); returns (N, C).
    /// - Parameter x: Input rows.
    /// - Throws: On a shape mismatch or a backend failure.
    public func callAsFunction(_ x: Tensor) throws -> Tensor { try Ops.rmsNorm(x, weight: weight.value, eps: eps) }
}

/// y = (x − mean) / √(var + eps) · w + b over the last dimension (torch's LayerNorm; MPT's is
/// bias-free).
public final class LayerNorm: Module {
    /// The per-channel gain w, (C), initialized to ones.
    public let weight: Parameter
    /// The per-channel shift b, (C); nil for a bias-free norm.
    public let bias: Parameter?
    /// Added to the variance before the square root (the config's `layer_norm_epsilon`).
    public let eps: Float
    /// A norm over `dim` channels with unit gain (and zero bias when it has one).
    /// - Parameters:
    ///   - dim: C, the normalized width.
    ///   - eps: The epsilon.
    ///   - bias: Whether the norm has a bias.
    ///   - backend: The device the parameters live on.
    /// - Throws: When allocation fails.
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
    /// Normalizes each row of x (N, C); returns (N, C).
    /// - Parameter x: Input rows.
    /// - Throws: On a shape mismatch or a backend failure.
    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        try Ops.layerNorm(x, weight: weight.value, bias: bias?.value, eps: eps)
    }
}
