// Activation ops the zoo's MLPs use beyond SwiGLU: GELU (MPT, exact erf form) and GeGLU
// (Gemma: gelu_pytorch_tanh(gate) · up), each with its backward, over the backend's GELU kernel.

import Foundation

extension Ops {
    /// gelu(x), or gelu(gate) · up (GeGLU) when `up` is given. `approximate`: the tanh form
    /// (`gelu_pytorch_tanh`, `gelu_new`), else the exact erf form (`gelu`).
    public static func gelu(_ x: Tensor, up: Tensor? = nil, approximate: Bool) throws -> Tensor {
        try check(up == nil || up!.count == x.count, "gelu", "x \(x.shape), up \(up?.shape ?? [])")
        let be = x.backend, n = x.count
        let y = try Tensor(empty: x.shape, on: be)
        try be.geluForward(x: x.storage, up: up?.storage, y: y.storage, count: n, approximate: approximate)
        var inputs = [x]
        if let up { inputs.append(up) }
        Autograd.record(y, op: "gelu", inputs: inputs) { g in
            let dx = try Tensor(empty: x.shape, on: be)
            let du = up == nil ? nil : try Tensor(empty: x.shape, on: be)
            try be.geluBackward(dy: g.storage, x: x.storage, up: up?.storage, dx: dx.storage, dup: du?.storage,
                                count: n, approximate: approximate)
            return up == nil ? [dx] : [dx, du]
        }
        return y
    }
}
