// DoRA (weight-decomposed LoRA, Liu et al. 2024) as PEFT computes it. With the adapted weight
// W' = W + s·B·A, its row norms n = ‖W'‖ (one per output; PEFT calls them column norms of the
// (in, out) view) and the trained magnitude m (out), initialized to n at the start:
//
//   y = base(x) + (m/n − 1) ⊙ (x_d Wᵀ) + (m/n) ⊙ s·(x_d Aᵀ Bᵀ),   x_d = dropout(x)
//
// which for x_d = x is  bias + (m/n) ⊙ (x W'ᵀ). n is treated as a constant in backward (the paper's
// §4.3, PEFT's `weight_norm.detach()`), so gradients reach m, A and B through the products only.
//
// n is computed without a second full weight: ‖W'_j‖² = ‖W_j‖² + 2s·(B (A Wᵀ)ᵀ)_jj +
// s²·(B (A Aᵀ) Bᵀ)_jj, from ‖W_j‖² (fixed: the base is frozen, computed once per adapter),
// A Wᵀ (r × out, one GEMM — or the 4-bit matmul for a QLoRA base) and A Aᵀ (r × r).
// Merging folds m/n into the rows: W ← (m/n) ⊙ (W + s·B·A).

import Foundation
import SFTKernels

extension LoRAAdapter {
    /// Squared row norms of `base` (M, K), on the host (DoRA's fixed part of n²).
    static func rowNormsSquared(_ base: [Float], rows: Int, cols: Int) -> [Float] {
        (0..<rows).map { j in
            var s: Double = 0
            for i in 0..<cols { let v = Double(base[j * cols + i]); s += v * v }
            return Float(s)
        }
    }

    /// ‖W + s·B·A‖ per row, given A Wᵀ (r, M) and ‖W_j‖².
    func adaptedRowNorms(aWt: [Float], baseNormsSquared: [Float]) throws -> [Float] {
        let A = try a.weight.value.floats(), B = try b.weight.value.floats()
        let r = rank, K = a.weight.value.shape[1], M = b.weight.value.shape[0]
        var aat = [Double](repeating: 0, count: r * r)  // A Aᵀ
        for k in 0..<r {
            for l in k..<r {
                var s: Double = 0
                for i in 0..<K { s += Double(A[k * K + i]) * Double(A[l * K + i]) }
                aat[k * r + l] = s; aat[l * r + k] = s
            }
        }
        let s = Double(scaling)
        return (0..<M).map { j in
            var cross: Double = 0, quad: Double = 0
            for k in 0..<r {
                let bjk = Double(B[j * r + k])
                cross += bjk * Double(aWt[k * M + j])
                var t: Double = 0
                for l in 0..<r { t += aat[k * r + l] * Double(B[j * r + l]) }
                quad += bjk * t
            }
            return Float(max(0, Double(baseNormsSquared[j]) + 2 * s * cross + s * s * quad).squareRoot())
        }
    }
}

extension Ops {
    /// y = (m ⊙ invNorm) ⊙ z, the scale broadcast over the rows of z (N, M); m (M) trains,
    /// invNorm (M) is a constant. Backward: dz = g ⊙ (m ⊙ invNorm), dm += invNorm ⊙ Σ_rows g ⊙ z.
    static func doraScale(_ z: Tensor, magnitude m: Tensor, invNorm: Tensor) throws -> Tensor {
        let M = m.count, N = z.count / max(1, M), be = z.backend
        try check(z.shape.last == M && invNorm.count == M, "dora_scale", "z \(z.shape), magnitude \(m.shape), norms \(invNorm.shape)")
        let f = try Tensor(empty: [M], on: be)
        try be.mul(m.storage, invNorm.storage, into: f.storage, count: M)
        let ones = try Tensor(empty: [N], on: be)
        try be.fill(ones.storage, value: 1, count: N)
        // F = ones ⊗ f (N, M): the row-broadcast of f as one GEMM, then y = z ⊙ F.
        let F = try Tensor(empty: z.shape, on: be)
        try be.gemm(transA: false, transB: false, M: N, N: M, K: 1, alpha: 1, A: ones.storage, lda: 1, strideA: 0,
                    B: f.storage, ldb: M, strideB: 0, beta: 0, C: F.storage, ldc: M, strideC: 0, batch: 1)
        let y = try Tensor(empty: z.shape, on: be)
        try be.mul(z.storage, F.storage, into: y.storage, count: z.count)
        let zNeedsGrad = z.requiresGrad
        Autograd.record(y, op: "dora_scale", inputs: [z, m]) { g in
            if m.requiresGrad {  // dm += invNorm ⊙ onesᵀ (g ⊙ z)
                let gz = try Tensor(empty: z.shape, on: be)
                try be.mul(g.storage, z.storage, into: gz.storage, count: z.count)
                let col = try Tensor(empty: [M], on: be)
                try be.gemm(transA: false, transB: false, M: 1, N: M, K: N, alpha: 1, A: ones.storage, lda: N, strideA: 0,
                            B: gz.storage, ldb: M, strideB: 0, beta: 0, C: col.storage, ldc: M, strideC: 0, batch: 1)
                try be.mul(col.storage, invNorm.storage, into: col.storage, count: M)
                try be.axpy(alpha: 1, col.storage, try m.gradBuffer().storage, count: M)
            }
            guard zNeedsGrad else { return [nil, nil] }
            let dz = try Tensor(empty: z.shape, on: be)
            try be.mul(g.storage, F.storage, into: dz.storage, count: z.count)
            return [dz, nil]
        }
        return y
    }
}

extension Linear {
    /// ‖W_j‖² of the frozen base, computed once (dequantized a matrix at a time for a 4-bit base).
    func baseRowNormsSquared() throws -> [Float] {
        if let cached = lora?.baseNormsSquared { return cached }
        let w = try quantized?.dequantize() ?? weight.value.floats()
        let n = LoRAAdapter.rowNormsSquared(w, rows: outFeatures, cols: inFeatures)
        lora?.baseNormsSquared = n
        return n
    }

    /// A Wᵀ (r, out) with the base weight in whatever form it is stored.
    func adapterTimesBaseTransposed(_ a: Tensor) throws -> [Float] {
        try Autograd.withNoGrad {
            let t = a.detached()
            return try (quantized.map { try Ops.quantizedLinear(t, $0) } ?? Ops.linear(t, weight.value)).floats()
        }
    }

    /// The current ‖W + s·B·A‖ per output row.
    public func doraNorms() throws -> [Float] {
        guard let lora else { throw SFTError.unsupported("DoRA norms of a layer without an adapter") }
        return try lora.adaptedRowNorms(aWt: try adapterTimesBaseTransposed(lora.a.weight.value),
                                        baseNormsSquared: try baseRowNormsSquared())
    }

    /// Turns the adapter into a DoRA adapter: magnitude = the current row norms of W + s·B·A.
    func addDoRAMagnitude() throws {
        guard let lora else { return }
        let n = try doraNorms()
        lora.magnitude = WeightOnly(Parameter(try Tensor(n, shape: [outFeatures], on: weight.value.backend), trainable: true))
    }

    /// The DoRA forward (see the file comment).
    func doraForward(_ x: Tensor, _ lora: LoRAAdapter, magnitude: Tensor) throws -> Tensor {
        let be = x.backend
        let norms = try doraNorms()
        let invNorm = try Tensor(norms.map { $0 > 0 ? 1 / $0 : 0 }, shape: [outFeatures], on: be)
        let dropping = lora.dropout > 0 && Autograd.isTraining
        let xd = dropping ? try Ops.dropout(x, p: lora.dropout) : x
        // z = x_d Wᵀ + s·x_d Aᵀ Bᵀ
        let z: Tensor
        if let q = quantized {
            let base = try Ops.quantizedLinear(xd, q)
            z = try Ops.add(base, try Ops.linear(try Ops.scale(try Ops.linear(xd, lora.a.weight.value), lora.scaling), lora.b.weight.value))
        } else {
            z = try Ops.loraLinear(xd, weight: weight.value, bias: nil, a: lora.a.weight.value, b: lora.b.weight.value,
                                   scaling: lora.scaling, dropout: 0)
        }
        var y = try Ops.doraScale(z, magnitude: magnitude, invNorm: invNorm)
        if dropping {
            // + base(x) − x_d Wᵀ: the base output sees the un-dropped input, as in PEFT.
            let base = try quantized.map { try Ops.quantizedLinear(x, $0, bias: bias?.value) } ?? Ops.linear(x, weight.value, bias: bias?.value)
            let baseDropped = try quantized.map { try Ops.quantizedLinear(xd, $0) } ?? Ops.linear(xd, weight.value)
            y = try Ops.add(y, try Ops.add(base, try Ops.scale(baseDropped, -1)))
        } else if let bias {
            let rows = y.count / outFeatures
            let ones = try Tensor([Float](repeating: 1, count: rows), shape: [rows, 1], on: be)
            y = try Ops.add(y, try Ops.linear(ones, try bias.value.reshaped([outFeatures, 1])))
        }
        return y
    }
}
