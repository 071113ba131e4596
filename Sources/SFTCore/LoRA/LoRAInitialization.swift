// The adapter initializations that start from the base weight (PEFT's `init_lora_weights`):
//
// - PiSSA: W ≈ U S Vᵀ; A = diag(√(S_r / s)) V_rᵀ, B = U_r diag(√(S_r / s)), and the base keeps the
//   residual W − s·B·A, so the model's output is unchanged at step 0. The top-r singular triplets
//   come from a randomized subspace iteration (Halko et al.; what torch.svd_lowrank does):
//   "pissa_niter_K" runs K iterations with r columns, as PEFT does; "pissa" oversamples by 10
//   columns and iterates until the top-r singular values settle (float precision), then as many
//   iterations again for the vectors (which converge at half the rate): the exact top-r for any
//   matrix whose r-th and (r+1)-th singular values differ.
// - OLoRA: W = Q R (QR of the columns); B = Q[:, :r], A = R[:r, :], residual W − s·B·A. Modified
//   Gram–Schmidt gives R a positive diagonal; LAPACK's Householder QR (PEFT) may flip the sign of
//   a column of Q together with the row of R, which leaves B·A and training unchanged.
//
// The large products (W times a thin matrix) run through the backend's GEMM; the thin matrices
// (orthonormalization, the small symmetric eigenproblem) are on the host.
// Saving such an adapter converts it to plain LoRA on the original base (PEFTAdapter.swift).

import Foundation
import SFTKernels

extension Linear {
    func initializeFromBase(_ kind: LoRAInit, name: String, rng: inout SeededRandom) throws {
        guard let lora else { return }
        guard quantized == nil else {
            throw SFTError.config(field: "init_lora_weights", message: "\(kind) needs a dense base weight (\(name) is 4-bit): use method lora, or quantize the residual afterwards")
        }
        let M = outFeatures, K = inFeatures, r = lora.rank
        guard r <= min(M, K) else {
            throw SFTError.config(field: "init_lora_weights", message: "\(kind) with rank \(r) on \(name) (\(M)×\(K)): the rank exceeds the matrix")
        }
        let be = weight.value.backend
        let (aValues, bValues): ([Float], [Float]) = try Autograd.withNoGrad {
            let w = weight.value.detached()
            let wt = try Tensor(Self.transpose(try w.floats(), rows: M, cols: K), shape: [K, M], on: be)
            switch kind {
            case .pissa(let niter): return try Self.pissa(w: w, wt: wt, M: M, K: K, r: r, niter: niter, scaling: lora.scaling, rng: &rng)
            case .olora: return try Self.olora(w: w, wt: wt, M: M, K: K, r: r)
            default: throw SFTError.unsupported("initialization \(kind) from the base weight")
            }
        }
        try lora.a.weight.value.assign(aValues)
        try lora.b.weight.value.assign(bValues)
        lora.initialAB = (try lora.a.weight.value.copy(), try lora.b.weight.value.copy())
        // W ← W − s·B·A, with B·A as one GEMM (B (M, r) times Aᵀ stored as (K, r)).
        try Autograd.withNoGrad {
            let at = try Tensor(Self.transpose(aValues, rows: r, cols: K), shape: [K, r], on: be)
            let ba = try Ops.linear(try Tensor(bValues, shape: [M, r], on: be), at)
            try be.axpy(alpha: -lora.scaling, ba.storage, weight.value.storage, count: M * K)
        }
    }

    static func transpose(_ x: [Float], rows: Int, cols: Int) -> [Float] {
        var t = [Float](repeating: 0, count: x.count)
        for i in 0..<rows { for j in 0..<cols { t[j * rows + i] = x[i * cols + j] } }
        return t
    }

    /// Orthonormalizes the rows of x (q, n) in place (modified Gram–Schmidt, twice).
    static func orthonormalizeRows(_ x: inout [Double], q: Int, n: Int) {
        for _ in 0..<2 {
            for i in 0..<q {
                for j in 0..<i {
                    var d = 0.0
                    for t in 0..<n { d += x[i * n + t] * x[j * n + t] }
                    for t in 0..<n { x[i * n + t] -= d * x[j * n + t] }
                }
                var norm = 0.0
                for t in 0..<n { norm += x[i * n + t] * x[i * n + t] }
                norm = norm.squareRoot()
                for t in 0..<n { x[i * n + t] = norm > 0 ? x[i * n + t] / norm : 0 }
            }
        }
    }

    /// Eigen-decomposition of a symmetric (n, n) matrix by cyclic Jacobi rotations: eigenvalues
    /// descending, eigenvectors as the columns of the returned (n, n) matrix.
    static func symmetricEigen(_ a: [Double], n: Int) -> (values: [Double], vectors: [Double]) {
        var a = a, v = [Double](repeating: 0, count: n * n)
        for i in 0..<n { v[i * n + i] = 1 }
        for _ in 0..<100 {
            var off = 0.0
            for p in 0..<n { for q in (p + 1)..<max(p + 1, n) { off += a[p * n + q] * a[p * n + q] } }
            if off < 1e-30 { break }
            for p in 0..<n {
                for q in (p + 1)..<max(p + 1, n) where abs(a[p * n + q]) > 1e-300 {
                    let theta = (a[q * n + q] - a[p * n + p]) / (2 * a[p * n + q])
                    let t = (theta >= 0 ? 1.0 : -1.0) / (abs(theta) + (theta * theta + 1).squareRoot())
                    let c = 1 / (t * t + 1).squareRoot(), s = t * c
                    for k in 0..<n {  // A ← A J (columns p, q)
                        let akp = a[k * n + p], akq = a[k * n + q]
                        a[k * n + p] = c * akp - s * akq; a[k * n + q] = s * akp + c * akq
                    }
                    for k in 0..<n {  // A ← Jᵀ A (rows p, q)
                        let apk = a[p * n + k], aqk = a[q * n + k]
                        a[p * n + k] = c * apk - s * aqk; a[q * n + k] = s * apk + c * aqk
                    }
                    for k in 0..<n {
                        let vkp = v[k * n + p], vkq = v[k * n + q]
                        v[k * n + p] = c * vkp - s * vkq; v[k * n + q] = s * vkp + c * vkq
                    }
                }
            }
        }
        let order = (0..<n).sorted { a[$0 * n + $0] > a[$1 * n + $1] }
        var vectors = [Double](repeating: 0, count: n * n)
        for (j, o) in order.enumerated() { for k in 0..<n { vectors[k * n + j] = v[k * n + o] } }
        return (order.map { a[$0 * n + $0] }, vectors)
    }

    /// Rows of `rowsT` (q, n) times a matrix given as `w` (m, n) on the backend: (q, m).
    static func product(_ rowsT: [Double], q: Int, n: Int, _ w: Tensor) throws -> [Double] {
        let t = try Tensor(rowsT.map(Float.init), shape: [q, n], on: w.backend)
        return try Ops.linear(t, w).floats().map(Double.init)
    }

    static func pissa(w: Tensor, wt: Tensor, M: Int, K: Int, r: Int, niter: Int?, scaling: Float,
                      rng: inout SeededRandom) throws -> ([Float], [Float]) {
        let q = niter == nil ? min(min(M, K), r + 10) : r
        var g = (0..<(q * K)).map { _ in rng.nextNormal() }          // Gᵀ (q, K)
        var qt = try product(g, q: q, n: K, w)                        // (W G)ᵀ (q, M)
        orthonormalizeRows(&qt, q: q, n: M)
        var previous: [Double] = []
        var bs: [Double] = [], values: [Double] = [], vectors: [Double] = []
        var stopAt: Int? = niter
        for it in 0... {
            bs = try product(qt, q: q, n: M, wt)                      // (Wᵀ Q)ᵀ = Qᵀ W (q, K)
            var c = [Double](repeating: 0, count: q * q)               // Bs Bsᵀ
            for i in 0..<q { for j in i..<q {
                var s = 0.0
                for t in 0..<K { s += bs[i * K + t] * bs[j * K + t] }
                c[i * q + j] = s; c[j * q + i] = s
            } }
            (values, vectors) = symmetricEigen(c, n: q)
            let top = values.prefix(r).map { max(0, $0).squareRoot() }
            let settled = previous.count == r && zip(top, previous).allSatisfy { abs($0 - $1) <= 1e-7 * max(1e-30, top[0]) }
            // Singular values converge at twice the rate of the vectors: once they have settled
            // after k iterations, k more bring the vectors to the same precision.
            if niter == nil, stopAt == nil, settled || it >= 200 { stopAt = 2 * it }
            if let stopAt, it >= stopAt { break }
            previous = top
            g = bs
            orthonormalizeRows(&g, q: q, n: K)
            qt = try product(g, q: q, n: K, w)
            orthonormalizeRows(&qt, q: q, n: M)
        }
        // Bs = Us Σ Vᵀ: σ_j = √λ_j, V_jᵀ = Us_jᵀ Bs / σ_j; U = Q Us.
        var a = [Float](repeating: 0, count: r * K), b = [Float](repeating: 0, count: M * r)
        for j in 0..<r {
            let sigma = max(0, values[j]).squareRoot()
            let root = (sigma / Double(scaling)).squareRoot()
            for t in 0..<K {
                var s = 0.0
                for i in 0..<q { s += vectors[i * q + j] * bs[i * K + t] }
                a[j * K + t] = Float(sigma > 0 ? s / sigma * root : 0)
            }
            for m in 0..<M {
                var s = 0.0
                for i in 0..<q { s += qt[i * M + m] * vectors[i * q + j] }
                b[m * r + j] = Float(s * root)
            }
        }
        return (a, b)
    }

    static func olora(w: Tensor, wt: Tensor, M: Int, K: Int, r: Int) throws -> ([Float], [Float]) {
        let wv = try w.floats()
        var qt = [Double](repeating: 0, count: r * M)                 // the first r columns of W, as rows
        for j in 0..<r { for m in 0..<M { qt[j * M + m] = Double(wv[m * K + j]) } }
        orthonormalizeRows(&qt, q: r, n: M)
        let rRows = try product(qt, q: r, n: M, wt)                   // R[:r] = Q_rᵀ W (r, K)
        var b = [Float](repeating: 0, count: M * r)
        for j in 0..<r { for m in 0..<M { b[m * r + j] = Float(qt[j * M + m]) } }
        return (rRows.map(Float.init), b)
    }
}
