// Activation ops the zoo uses beyond SwiGLU: GELU (MPT, exact erf form), GeGLU (Gemma:
// gelu_pytorch_tanh(gate) · up) and clamp (MPT's clip_qkv), each with its backward.

import Foundation
import SFTKernels

extension Ops {
    /// x clamped to [−limit, limit] (MPT's `clip_qkv`); the gradient passes inside the range.
    public static func clamp(_ x: Tensor, limit: Float) throws -> Tensor {
        let x = try widened(x), be = x.backend, n = x.count
        let y = try Tensor(empty: x.shape, on: be)
        try be.clampForward(x.storage, into: y.storage, count: n, limit: limit)
        Autograd.record(y, op: "clamp", inputs: [x]) { g in
            let dx = try Tensor(empty: x.shape, on: be)
            try be.clampBackward(dy: g.storage, x: x.storage, dx: dx.storage, count: n, limit: limit)
            return [dx]
        }
        return y
    }

    /// gelu(x), or gelu(gate) · up (GeGLU) when `up` is given. `approximate`: the tanh form
    /// (`gelu_pytorch_tanh`, `gelu_new`), else the exact erf form (`gelu`). bf16 x and up (bf16
    /// activations) give a bf16 y; gradients are f32.
    public static func gelu(_ x: Tensor, up: Tensor? = nil, approximate: Bool) throws -> Tensor {
        try check(up == nil || up!.count == x.count, "gelu", "x \(x.shape), up \(up?.shape ?? [])")
        let (operands, at) = try sharedType(up.map { [x, $0] } ?? [x])
        let x = operands[0], up = operands.count > 1 ? operands[1] : nil
        let be = x.backend, n = x.count
        let y = try Tensor(empty: x.shape, dtype: at, on: be)
        try be.geluForward(x: x.storage, up: up?.storage, y: y.storage, count: n, approximate: approximate, dtype: at)
        var inputs = [x]
        if let up { inputs.append(up) }
        Autograd.record(y, op: "gelu", inputs: inputs) { g in
            let dx = try Tensor(empty: x.shape, on: be)
            let du = up == nil ? nil : try Tensor(empty: x.shape, on: be)
            try be.geluBackward(dy: g.storage, x: x.storage, up: up?.storage, dx: dx.storage, dup: du?.storage,
                                count: n, approximate: approximate, dtype: at)
            return up == nil ? [dx] : [dx, du]
        }
        return y
    }
}
