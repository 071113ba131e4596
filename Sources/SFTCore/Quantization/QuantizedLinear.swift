// The 4-bit linear op (bitsandbytes' Linear4bit behaviour) as an autograd op: y = x Wᵀ (+ b)
// with W kept in NF4/FP4. The math runs in the backend (`Backend.linear4bit` and
// `linear4bitInputGradient`, SFTKernels/WeightForms/Backend+Linear4bit.swift): tiles of rows
// decoded into one reused scratch and multiplied by the backend's GEMM, or the 4-bit
// matrix-vector op for one or two rows. The frozen base gets no weight gradient.
//
// Shapes: N rows (tokens), K in features, M out features; W is (M, K) as in HF checkpoints.

import Foundation
import SFTKernels

extension Ops {
    /// y = x Wᵀ (+ bias) for a 4-bit W (M, K). x: (…, K) → (…, M). Records dX = dY W for
    /// backward (W is frozen; bias gets its gradient when it trains).
    public static func quantizedLinear(_ x: Tensor, _ w: QuantizedWeight, bias: Tensor? = nil) throws -> Tensor {
        let M = w.shape[0], K = w.shape[1]
        try check(w.shape.count == 2 && x.shape.last == K, "linear4bit", "x \(x.shape) · 4-bit weight \(w.shape)ᵀ")
        try check(x.dtype == .f32, "linear4bit", "x is \(x.dtype), expected f32")
        try check(w.packed.device == x.device, "linear4bit", "x is on \(x.device), the 4-bit weight on \(w.packed.device)")
        if let bias { try check(bias.shape == [M], "linear4bit", "bias \(bias.shape) for \(M) outputs") }
        let N = x.count / max(1, K), be = x.backend, form = w.matrix
        let y = try Tensor(empty: Array(x.shape.dropLast()) + [M], on: be)
        try be.linear4bit(x: x.storage, weight: form, bias: bias?.storage, y: y.storage, N: N)
        var inputs = [x]
        if let bias { inputs.append(bias) }
        Autograd.record(y, op: "linear4bit", inputs: inputs) { g in
            var dx: Tensor? = nil
            if x.requiresGrad {
                let t = try Tensor(empty: x.shape, on: be)
                try be.linear4bitInputGradient(dy: g.storage, weight: w.matrix, dx: t.storage, N: N)
                dx = t
            }
            if let bias, bias.requiresGrad {
                let db = try bias.gradBuffer()
                for r in 0..<N { try be.axpy(alpha: 1, g.storage.advanced(byBytes: r * M * 4), db.storage, count: M) }
            }
            return [dx, nil]
        }
        return y
    }
}
