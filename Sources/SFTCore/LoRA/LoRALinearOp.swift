// The LoRA layer as one fused op: y = x Wᵀ (+ b) + s · (dropout(x) Aᵀ) Bᵀ, with the adapter's
// product accumulated straight into y by the GEMM (beta = 1) — no separate scale, add or
// (N × out) temporary, in forward or backward.
//
// Backward, with h = s · dropout(x) Aᵀ (N × r, the scaling folded in once) saved from forward:
//   dB += gᵀ h            dh = s g B          dA += dhᵀ dropout(x)
//   dx  = g W + dropoutᵀ(dh A)                 dW += gᵀ x  (only when the base trains)
//
// Precision bf16: the base weight's GEMMs are bf16 (f32 accumulation) and y is stored bf16; a
// bf16 x (a bf16 activation) feeds them and h = s x Aᵀ as it is, and is widened for dA; the
// adapter's other GEMMs (dh, dA, dB) stay f32 (PEFT keeps adapters f32). Without a bias, the
// adapter's product joins its Linear's in one bf16 GEMM (`Backend.gemmBF16Pair`, the two summed
// along K in one pass over C, as torch.autocast runs it in bf16 too): y = x Wᵀ + h Bᵀ, rounded
// to bf16 once, and (without dropout) dx = g W + dh A.

import Foundation
import SFTKernels

extension Ops {
    /// y = x Wᵀ (+ b) + s · dropout(x) Aᵀ Bᵀ as one fused op, forward and backward, with the
    /// adapter product accumulated into y by the GEMM. Returns (N, M).
    /// - Parameters:
    ///   - x: Input, (N, K).
    ///   - weight: W, (M, K); takes a gradient only when it requires one.
    ///   - bias: b, (M), or nil.
    ///   - a: A, (r, K).
    ///   - b: B, (M, r).
    ///   - s: The LoRA scaling.
    ///   - p: Dropout probability on the adapter's input (applied only while training).
    ///   - precision: What the base product computes in.
    /// - Throws: `SFTError.shape` naming "lora_linear" when the shapes do not fit.
    public static func loraLinear(_ x: Tensor, weight: Tensor, bias: Tensor?, a: Tensor, b: Tensor,
                                  scaling s: Float, dropout p: Float, precision: Precision = .f32) throws -> Tensor {
        let K = weight.shape.last ?? 0, M = weight.shape.first ?? 0, r = a.shape.first ?? 0
        try check(weight.shape.count == 2 && x.shape.last == K && a.shape == [r, K] && b.shape == [M, r],
                  "lora_linear", "x \(x.shape), weight \(weight.shape), A \(a.shape), B \(b.shape)")
        let N = x.count / max(1, K), be = x.backend, xt = x.dtype
        /// x as f32 (a bf16 x widened into a new buffer), for the adapter's f32 GEMMs.
        func wide(_ x: Tensor) throws -> Tensor {
            guard x.dtype == .bf16 else { return x }
            let t = try Tensor(empty: x.shape, on: be)
            try be.cast(x.storage, from: .bf16, into: t.storage, to: .f32, count: x.count)
            return t
        }
        // The adapter's input: dropout(x), with a mask drawn from the (seed, offset) counter.
        var xdTensor: Tensor? = nil
        let random = p > 0 ? Autograd.random : nil, seed = random?.seed ?? 0
        let dropping = random != nil
        var dropOffset: UInt64 = 0
        let h = try Tensor(empty: [N, r], on: be)                                         // (N, r)
        if let random {
            let xAdapter = try wide(x), t = try Tensor(empty: x.shape, on: be)
            dropOffset = random.take(x.count)
            try be.dropout(xAdapter.storage, into: t.storage, mask: nil, count: x.count, p: p, seed: seed, offset: dropOffset)
            xdTensor = t
            try be.gemm(transA: false, transB: true, M: N, N: r, K: K, alpha: s, A: t.storage, lda: K, strideA: 0,
                        B: a.storage, ldb: K, strideB: 0, beta: 0, C: h.storage, ldc: r, strideC: 0, batch: 1)
        } else {
            // f32, or for a bf16 x the bf16 GEMM (x read as it is, A rounded as autocast does).
            try linearGEMM(be, .f32, transA: false, transB: true, M: N, N: r, K: K, alpha: s,
                           A: x.storage, aType: xt, lda: K, B: a.storage, ldb: K, beta: 0, C: h.storage, ldc: r)
        }
        let wt = weight.dtype, yShape = Array(x.shape.dropLast()) + [M]
        // One bf16 GEMM for the Linear and its adapter (y stored bf16 as it is summed).
        let paired = precision == .bf16 && bias == nil && r <= 512
        let y = try Tensor(empty: yShape, dtype: paired ? .bf16 : .f32, on: be)
        if paired {
            try be.gemmBF16Pair(transA: false, transB: true, M: N, N: M, K: K, alpha: 1, A: x.storage, aType: xt, lda: K,
                                B: weight.storage, bType: wt, ldb: K, K2: r, A2: h.storage, a2Type: .f32, lda2: r,
                                B2: b.storage, b2Type: .f32, ldb2: r, beta: 0, C: y.storage, cType: .bf16, ldc: M)
        } else {
            if let bias {
                for row in 0..<N { try be.copy(bias.storage, to: y.storage.advanced(byBytes: row * M * 4), bytes: M * 4) }
            }
            try linearGEMM(be, precision, transA: false, transB: true, M: N, N: M, K: K, A: x.storage, aType: xt, lda: K,
                           B: weight.storage, bType: wt, ldb: K, beta: bias == nil ? 0 : 1, C: y.storage, ldc: M)
            try be.gemm(transA: false, transB: true, M: N, N: M, K: r, alpha: 1, A: h.storage, lda: r, strideA: 0,
                        B: b.storage, ldb: r, strideB: 0, beta: 1, C: y.storage, ldc: M, strideC: 0, batch: 1)
        }

        var inputs = [x, weight, a, b]
        if let bias { inputs.append(bias) }
        let xNeedsGrad = x.requiresGrad, xShape = x.shape
        let savedX: Tensor? = weight.requiresGrad || (a.requiresGrad && !dropping) ? x : nil
        let trainsBias = bias?.requiresGrad ?? false
        Autograd.record(y, op: "lora_linear", inputs: inputs) { g in
            if b.requiresGrad {  // dB += gᵀ h
                try be.gemm(transA: true, transB: false, M: M, N: r, K: N, alpha: 1, A: g.storage, lda: M, strideA: 0,
                            B: h.storage, ldb: r, strideB: 0, beta: 1, C: try b.gradBuffer().storage, ldc: r, strideC: 0, batch: 1)
            }
            let dh = try Tensor(empty: [N, r], on: be)                                    // s g B
            try be.gemm(transA: false, transB: false, M: N, N: r, K: M, alpha: s, A: g.storage, lda: M, strideA: 0,
                        B: b.storage, ldb: r, strideB: 0, beta: 0, C: dh.storage, ldc: r, strideC: 0, batch: 1)
            if a.requiresGrad {  // dA += dhᵀ dropout(x)
                let xin = try xdTensor ?? wide(savedX!)
                try be.gemm(transA: true, transB: false, M: r, N: K, K: N, alpha: 1, A: dh.storage, lda: r, strideA: 0,
                            B: xin.storage, ldb: K, strideB: 0, beta: 1, C: try a.gradBuffer().storage, ldc: K, strideC: 0, batch: 1)
            }
            if let savedX, weight.requiresGrad {  // dW += gᵀ x
                try linearGEMM(be, precision, transA: true, transB: false, M: M, N: K, K: N, A: g.storage, lda: M,
                               B: savedX.storage, bType: xt, ldb: K, beta: 1, C: try weight.gradBuffer().storage, ldc: K)
            }
            if trainsBias, let bias {
                let db = try bias.gradBuffer()
                for row in 0..<N { try be.axpy(alpha: 1, g.storage.advanced(byBytes: row * M * 4), db.storage, count: M) }
            }
            guard xNeedsGrad else { return [nil, nil, nil, nil, nil] }
            let dx = try Tensor(empty: xShape, on: be)                                     // g W
            if paired && !dropping {  // + dh A in the same bf16 GEMM
                try be.gemmBF16Pair(transA: false, transB: false, M: N, N: K, K: M, alpha: 1, A: g.storage, aType: .f32, lda: M,
                                    B: weight.storage, bType: wt, ldb: K, K2: r, A2: dh.storage, a2Type: .f32, lda2: r,
                                    B2: a.storage, b2Type: .f32, ldb2: K, beta: 0, C: dx.storage, cType: .f32, ldc: K)
                return [dx, nil, nil, nil, nil]
            }
            try linearGEMM(be, precision, transA: false, transB: false, M: N, N: K, K: M, A: g.storage, lda: M,
                           B: weight.storage, bType: wt, ldb: K, beta: 0, C: dx.storage, ldc: K)
            if dropping {  // + dropoutᵀ(dh A): the same mask, redrawn
                let t = try Tensor(empty: xShape, on: be)
                try be.gemm(transA: false, transB: false, M: N, N: K, K: r, alpha: 1, A: dh.storage, lda: r, strideA: 0,
                            B: a.storage, ldb: K, strideB: 0, beta: 0, C: t.storage, ldc: K, strideC: 0, batch: 1)
                try be.dropout(t.storage, into: t.storage, mask: nil, count: t.count, p: p, seed: seed, offset: dropOffset)
                try be.axpy(alpha: 1, t.storage, dx.storage, count: dx.count)
            } else {
                try be.gemm(transA: false, transB: false, M: N, N: K, K: r, alpha: 1, A: dh.storage, lda: r, strideA: 0,
                            B: a.storage, ldb: K, strideB: 0, beta: 1, C: dx.storage, ldc: K, strideC: 0, batch: 1)
            }
            return [dx, nil, nil, nil, nil]
        }
        return try activation(y, precision)
    }
}
