// Mixed precision (`precision: f32 | bf16`, `--precision`): what the matmuls of Linear layers
// compute in. bf16 (PEFT / torch.autocast style):
//   - frozen dense base weights are stored bf16 (half the memory; the backend's `.denseBF16`
//     weight form), trained weights keep their f32 master copy and f32 AdamW moments;
//   - every GEMM of a Linear (forward, input gradient, weight gradient) runs with bf16 products
//     and f32 accumulation (`Backend.gemmBF16`; f32 operands are rounded to bf16 as they are
//     read); LoRA adapters stay f32, as PEFT keeps them, and their product B·(A x) joins its
//     Linear's bf16 GEMM (Backend.gemmBF16Pair, LoRA/LoRALinearOp.swift);
//   - the outputs of Linear layers are stored bf16 (bf16 activations: q, k, v, attention output,
//     gate, up, h), read as they are by RoPE, attention, SwiGLU / GeGLU and the residual add,
//     which compute in f32 (Tensor/ActivationTypes.swift); the residual stream, norms, softmax,
//     the fused LM head + loss, every gradient, gradient norms and the optimizer stay f32 (no
//     loss scaling is needed for bf16).
// The frozen Linears can load straight into bf16 (`ModelLoader.load(_:on:bf16Linears:)`, as
// `finetune` does), bit for bit what `setPrecision(.bf16)` makes of an f32 load. 4-bit (QLoRA)
// bases get bf16 as their compute dtype (`FinetuneConfig.quantization()`); DoRA is refused in
// bf16 (not implemented).

import Foundation
import SFTKernels

/// What the matmuls of Linear layers compute in: the `precision` config key and `--precision`
/// flag (see this file's header for what bf16 changes).
public enum Precision: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// f32: every product in f32 (exact, the default). bf16: bf16 products with f32 accumulation,
    /// frozen dense weights stored bf16.
    case f32, bf16

    /// The config value: "f32" or "bf16".
    public var description: String { rawValue }

    /// Parses a `precision` value, naming the key in the error.
    public init(parsing text: String, key: String = "precision") throws {
        guard let p = Precision(rawValue: text.lowercased()) else {
            throw SFTError.config(field: key, message: "'\(text)' is not one of f32, bf16")
        }
        self = p
    }
}

extension Module {
    /// Puts every Linear under this module in `precision`. bf16: frozen dense weights (those
    /// not trainable now — call after LoRA is attached / trainable flags are set) are stored
    /// bf16; f32: they are widened back. Throws on a backend without the bf16 weight form, and
    /// for DoRA layers (bf16 DoRA is not implemented).
    public func setPrecision(_ precision: Precision) throws {
        for (name, module) in namedModules() {
            guard let linear = module as? Linear else { continue }
            let be = linear.weight.value.backend
            if precision == .bf16 {
                guard be.supports(.denseBF16) else {
                    throw SFTError.config(field: "precision", message: "bf16 is not implemented on \(be.device)")
                }
                if linear.lora?.magnitude != nil {
                    throw SFTError.config(field: "precision", message: "bf16 with DoRA (\(name)) is not implemented; use precision f32")
                }
            }
            linear.precision = precision
            let w = linear.weight.value
            guard linear.quantized == nil, w.count > 0 else { continue }
            let target: DType = precision == .bf16 && !linear.weight.trainable ? .bf16 : .f32
            guard w.dtype != target else { continue }
            if precision == .bf16 && w.dtype == .bf16 {
                throw SFTError.config(field: "precision", message: "\(name).weight was loaded bf16 but trains; its f32 values are gone (load it f32)")
            }
            let t = try Tensor(empty: w.shape, dtype: target, on: be)
            try be.cast(w.storage, from: w.dtype, into: t.storage, to: target, count: w.count)
            linear.weight.value = t
        }
    }
}

extension CausalLM {
    /// The model's matmul precision (its Linear layers'; `setPrecision`), which the fused LM
    /// head + loss also computes its GEMMs in.
    public var matmulPrecision: Precision {
        for (_, m) in namedModules() { if let l = m as? Linear { return l.precision } }
        return .f32
    }
}

extension Ops {
    /// One GEMM of a Linear (batch 1, row-major, as `Backend.gemm`): f32, or the bf16 GEMM with
    /// f32 accumulation when `precision` is bf16 or an operand is stored bf16.
    static func linearGEMM(_ be: Backend, _ precision: Precision, transA: Bool, transB: Bool, M: Int, N: Int, K: Int,
                           alpha: Float = 1, A: BufferView, aType: DType = .f32, lda: Int,
                           B: BufferView, bType: DType = .f32, ldb: Int, beta: Float, C: BufferView, ldc: Int) throws {
        if precision == .f32 && aType == .f32 && bType == .f32 {
            try be.gemm(transA: transA, transB: transB, M: M, N: N, K: K, alpha: alpha, A: A, lda: lda, strideA: 0,
                        B: B, ldb: ldb, strideB: 0, beta: beta, C: C, ldc: ldc, strideC: 0, batch: 1)
        } else {
            try be.gemmBF16(transA: transA, transB: transB, M: M, N: N, K: K, alpha: alpha, A: A, aType: aType, lda: lda,
                            B: B, bType: bType, ldb: ldb, beta: beta, C: C, ldc: ldc)
        }
    }
}
