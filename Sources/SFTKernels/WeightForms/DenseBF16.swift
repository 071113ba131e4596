// The bf16 dense weight form (`WeightFormKind.denseBF16`, mixed precision): a weight matrix
// stored as bf16 values (half the memory of f32) and multiplied by `Backend.gemmBF16` — bf16
// products, f32 accumulation, f32 output. The same GEMM takes f32 operands too (activations,
// f32 master weights), rounded to bf16 to nearest even as they are read, so `precision: bf16`
// runs every matmul of a Linear in bf16 whether its weight is stored bf16 (frozen) or f32
// (trained). CPU: sft_gemm_bf16 (gemm_bf16.c, vdpbf16ps where the CPU has AVX512_BF16).
// CUDA: cuBLASLt with bf16 inputs and f32 compute, f32 operands cast to bf16 first.

extension Backend {
    /// The checks of `gemmBF16`, the same on every backend: returns the operands' extents in
    /// elements, or nil when there is nothing to compute (M or N is 0).
    func checkGEMMBF16(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, A: BufferView, aType: DType, lda: Int,
                       B: BufferView, bType: DType, ldb: Int, C: BufferView, ldc: Int) throws -> (a: Int, b: Int, c: Int)? {
        let shape = "M=\(M) N=\(N) K=\(K) transA=\(transA) transB=\(transB) A \(aType) B \(bType)"
        for (name, t) in [("A", aType), ("B", bType)] where t != .f32 && t != .bf16 {
            throw KernelError.invalidArgument(op: "gemmBF16", message: "\(name) is \(t); the bf16 GEMM takes f32 or bf16 (\(shape))")
        }
        let checked: (a: Int, b: Int, c: Int)?
        do {
            checked = try checkGEMM(transA: transA, transB: transB, M: M, N: N, K: K, lda: lda, strideA: 0,
                                    ldb: ldb, strideB: 0, ldc: ldc, strideC: 0, batch: 1, shape: shape)
        } catch KernelError.invalidArgument(_, let message) {
            throw KernelError.invalidArgument(op: "gemmBF16", message: message)
        }
        guard let extent = checked else { return nil }
        func operand(_ v: BufferView, _ t: DType, _ count: Int, _ name: String) throws {
            guard v.byteOffset % t.size == 0 else {
                throw KernelError.invalidArgument(op: "gemmBF16", message: "\(name): offset \(v.byteOffset) not aligned to \(t) (\(shape))")
            }
            try check(v, bytes: count * t.size, "gemmBF16", "\(name) (\(shape), ld=\(name == "A" ? lda : name == "B" ? ldb : ldc))")
        }
        try operand(A, aType, extent.a, "A")
        try operand(B, bType, extent.b, "B")
        try operand(C, .f32, extent.c, "C")
        return extent
    }
}
