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
                       B: BufferView, bType: DType, ldb: Int, C: BufferView, cType: DType = .f32,
                       ldc: Int) throws -> (a: Int, b: Int, c: Int)? {
        let shape = "M=\(M) N=\(N) K=\(K) transA=\(transA) transB=\(transB) A \(aType) B \(bType) C \(cType)"
        guard cType == .f32 || cType == .bf16 else {
            throw KernelError.invalidArgument(op: "gemmBF16", message: "C is \(cType); the bf16 GEMM writes f32 or bf16 (\(shape))")
        }
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
        try operand(C, cType, extent.c, "C")
        return extent
    }

    /// The checks of `gemmBF16Pair`: both products' (the second with K2 over the same C), K2 in
    /// [0, 512], beta 0 for a bf16 C. Returns nil when there is nothing to compute.
    func checkGEMMBF16Pair(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, A: BufferView, aType: DType, lda: Int,
                           B: BufferView, bType: DType, ldb: Int, K2: Int, A2: BufferView, a2Type: DType, lda2: Int,
                           B2: BufferView, b2Type: DType, ldb2: Int, beta: Float, C: BufferView, cType: DType,
                           ldc: Int) throws -> (a: Int, b: Int, c: Int)? {
        guard (0...512).contains(K2) else {
            throw KernelError.invalidArgument(op: "gemmBF16Pair", message: "K2=\(K2); the second product's depth is 0 to 512")
        }
        guard cType == .f32 || beta == 0 else {
            throw KernelError.invalidArgument(op: "gemmBF16Pair", message: "a bf16 C takes beta 0 (got \(beta))")
        }
        _ = try checkGEMMBF16(transA: transA, transB: transB, M: M, N: N, K: K2, A: A2, aType: a2Type, lda: lda2,
                              B: B2, bType: b2Type, ldb: ldb2, C: C, cType: cType, ldc: ldc)
        return try checkGEMMBF16(transA: transA, transB: transB, M: M, N: N, K: K, A: A, aType: aType, lda: lda,
                                 B: B, bType: bType, ldb: ldb, C: C, cType: cType, ldc: ldc)
    }

    /// What a backend without a fused pair runs (the CUDA backend): `gemmBF16PairUnfused`.
    public func gemmBF16Pair(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float,
                             A: BufferView, aType: DType, lda: Int, B: BufferView, bType: DType, ldb: Int,
                             K2: Int, A2: BufferView, a2Type: DType, lda2: Int, B2: BufferView, b2Type: DType, ldb2: Int,
                             beta: Float, C: BufferView, cType: DType, ldc: Int) throws {
        try gemmBF16PairUnfused(transA: transA, transB: transB, M: M, N: N, K: K, alpha: alpha, A: A, aType: aType,
                                lda: lda, B: B, bType: bType, ldb: ldb, K2: K2, A2: A2, a2Type: a2Type, lda2: lda2,
                                B2: B2, b2Type: b2Type, ldb2: ldb2, beta: beta, C: C, cType: cType, ldc: ldc)
    }

    /// `gemmBF16Pair` as two `gemmBF16` into C (or, for a bf16 C, into an f32 scratch that is
    /// then cast): the default, and the reference a fused pair is tested against.
    public func gemmBF16PairUnfused(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float,
                                    A: BufferView, aType: DType, lda: Int, B: BufferView, bType: DType, ldb: Int,
                                    K2: Int, A2: BufferView, a2Type: DType, lda2: Int, B2: BufferView, b2Type: DType,
                                    ldb2: Int, beta: Float, C: BufferView, cType: DType, ldc: Int) throws {
        guard try checkGEMMBF16Pair(transA: transA, transB: transB, M: M, N: N, K: K, A: A, aType: aType, lda: lda,
                                    B: B, bType: bType, ldb: ldb, K2: K2, A2: A2, a2Type: a2Type, lda2: lda2, B2: B2,
                                    b2Type: b2Type, ldb2: ldb2, beta: beta, C: C, cType: cType, ldc: ldc) != nil else { return }
        let scratch = cType == .f32 ? nil : try allocate(bytes: M * N * 4)
        let out = scratch.map { BufferView($0) } ?? C, ldo = scratch == nil ? ldc : N
        try gemmBF16(transA: transA, transB: transB, M: M, N: N, K: K, alpha: alpha, A: A, aType: aType, lda: lda,
                     B: B, bType: bType, ldb: ldb, beta: beta, C: out, ldc: ldo)
        if K2 > 0 {
            try gemmBF16(transA: transA, transB: transB, M: M, N: N, K: K2, alpha: alpha, A: A2, aType: a2Type, lda: lda2,
                         B: B2, bType: b2Type, ldb: ldb2, beta: 1, C: out, ldc: ldo)
        }
        guard scratch != nil else { return }
        if ldc == N {
            try cast(out, from: .f32, into: C, to: .bf16, count: M * N)
        } else {
            for row in 0..<M {
                try cast(out.advanced(byBytes: row * N * 4), from: .f32, into: C.advanced(byBytes: row * ldc * 2),
                         to: .bf16, count: N)
            }
        }
        withExtendedLifetime(scratch) {}
    }
}
