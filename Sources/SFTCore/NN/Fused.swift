// Slices of fused projections (Phi-3's qkv_proj and gate_up_proj, MPT's Wqkv): columns of a
// row-major (N, W) activation as their own (N, width) tensor, with the gradient scattered back.

import Foundation
import SFTKernels

extension Ops {
    /// Columns [from, from + count) of x (N, W) as an (N, count) tensor of x's type. A bf16 x
    /// (a bf16 activation) is copied as it is when W, from and count are even (pairs of bf16
    /// moved as one 4-byte word), else widened first; the gradient is f32.
    public static func columns(_ x: Tensor, from start: Int, count width: Int) throws -> Tensor {
        let W = x.shape.last ?? 0, N = x.count / max(1, W)
        try check(start >= 0 && width >= 0 && start + width <= W, "columns", "columns \(start)..<\(start + width) of x \(x.shape)")
        let pairs = x.dtype == .bf16 && W % 2 == 0 && start % 2 == 0 && width % 2 == 0
        let x = pairs ? x : try widened(x), be = x.backend
        let y = try Tensor(empty: Array(x.shape.dropLast()) + [width], dtype: x.dtype, on: be)
        if pairs {
            try be.copyColumns(x.storage.advanced(byBytes: start * 2), ldSrc: W / 2, into: y.storage, ldDst: width / 2,
                               rows: N, width: width / 2)
        } else {
            try be.copyColumns(x.storage.advanced(byBytes: start * 4), ldSrc: W, into: y.storage, ldDst: width, rows: N, width: width)
        }
        let shape = x.shape
        Autograd.record(y, op: "columns", inputs: [x]) { g in
            let dx = try Tensor.zeros(shape, on: be)
            try be.copyColumns(g.storage, ldSrc: width, into: dx.storage.advanced(byBytes: start * 4), ldDst: W, rows: N, width: width)
            return [dx]
        }
        return y
    }
}
