// The CUDA backend's bf16 GEMM (mixed precision, see WeightForms/DenseBF16.swift): cuBLASLt
// with bf16 A and B, f32 compute and an f32 C. An f32 operand (activations, an f32 master
// weight) is first cast to bf16 (round to nearest even, the same rounding as the CPU's packing)
// into a scratch buffer, so both backends multiply the same bf16 values.

import Foundation

extension CUDABackend {
    public func gemmBF16(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float,
                         A: BufferView, aType: DType, lda: Int, B: BufferView, bType: DType, ldb: Int,
                         beta: Float, C: BufferView, ldc: Int) throws {
        guard let extent = try checkGEMMBF16(transA: transA, transB: transB, M: M, N: N, K: K, A: A, aType: aType,
                                             lda: lda, B: B, bType: bType, ldb: ldb, C: C, ldc: ldc) else { return }
        /// The operand as bf16: itself, or a cast copy of its `count` elements (kept alive by `keep`).
        func bf16(_ v: BufferView, _ t: DType, _ count: Int, _ keep: inout [Buffer]) throws -> BufferView {
            if t == .bf16 || count == 0 { return v }
            let scratch = try allocate(bytes: max(2, count * 2))
            keep.append(scratch)
            try cast(v, from: .f32, into: BufferView(scratch), to: .bf16, count: count)
            return BufferView(scratch)
        }
        var keep: [Buffer] = []
        let a = try bf16(A, aType, extent.a, &keep), b = try bf16(B, bType, extent.b, &keep)
        try gemm(transA: transA, transB: transB, M: M, N: N, K: K, alpha: alpha, A: a, aType: .bf16, lda: lda, strideA: 0,
                 B: b, bType: .bf16, ldb: ldb, strideB: 0, beta: beta, C: C, cType: .f32, ldc: ldc, strideC: 0, batch: 1)
        // The scratch goes back to the caching allocator when `keep` ends; the stream orders
        // its reuse after this GEMM.
        withExtendedLifetime(keep) {}
    }
}
