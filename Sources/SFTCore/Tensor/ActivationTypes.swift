// bf16 activations (mixed precision, `precision: bf16`): a Linear in bf16 stores its output
// bf16, and the ops that read it (RoPE, attention, SwiGLU / GeGLU / GELU, the residual add, fused
// columns) take it as it is and compute in f32 (Backend's `dtype:` variants). Ops without a bf16
// variant widen a bf16 input first (`widened`); gradients are always f32.

import Foundation
import SFTKernels

extension Ops {
    /// x as f32: x itself when it is not bf16, else a new f32 tensor of its values widened
    /// exactly; the gradient passes through unchanged (it is f32 either way).
    public static func widened(_ x: Tensor) throws -> Tensor {
        guard x.dtype == .bf16 else { return x }
        let y = try Tensor(empty: x.shape, on: x.backend)
        try x.backend.cast(x.storage, from: .bf16, into: y.storage, to: .f32, count: x.count)
        Autograd.record(y, op: "widen", inputs: [x]) { g in [g] }
        return y
    }

    /// y stored as an activation of `precision`: y itself in f32; in bf16, a new bf16 tensor of
    /// y's values rounded to nearest even (the gradient passes through; y's f32 buffer is freed
    /// once nothing else holds it: the node keeps y's producer, not y).
    static func activation(_ y: Tensor, _ precision: Precision) throws -> Tensor {
        guard precision == .bf16, y.dtype == .f32 else { return y }
        let r = try Tensor(empty: y.shape, dtype: .bf16, on: y.backend)
        try y.backend.cast(y.storage, from: .f32, into: r.storage, to: .bf16, count: y.count)
        Autograd.record(r, op: "round_bf16", inputs: [y]) { g in [g] }
        return r
    }

    /// The operands of one op in the element type they share: unchanged with the type when
    /// all are bf16 (or all f32); otherwise every bf16 one widened, and f32.
    static func sharedType(_ xs: [Tensor]) throws -> ([Tensor], DType) {
        if xs.allSatisfy({ $0.dtype == .bf16 }) { return (xs, .bf16) }
        return (try xs.map(widened), .f32)
    }
}
