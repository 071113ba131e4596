// The argument checks of each op, written once for every backend: an op calls its check first,
// so a bad size or a short buffer gets the same error (op name and shapes) on CPU and CUDA.
// The checks of one view (check(_:count:), check(_:rows:width:ld:), …) are in Backend.swift.
// (Error texts are built only when one is thrown: the checks run on every call.)

extension Backend {
    /// Throws unless each view holds `n` 4-byte elements.
    func check(count n: Int, _ op: String, _ views: KeyValuePairs<String, BufferView>) throws {
        for (name, view) in views { try check(view, count: n, op, name) }
    }

    func checkCast(_ x: BufferView, from: DType, into y: BufferView, to: DType, count n: Int) throws {
        let storage: Set<DType> = [.f32, .bf16, .f16]
        guard storage.contains(from), storage.contains(to) else {
            throw KernelError.invalidArgument(op: "cast", message: "cannot cast \(from) to \(to) (storage types: f32, bf16, f16)")
        }
        guard n >= 0 else { throw KernelError.invalidArgument(op: "cast", message: "negative count \(n)") }
        try check(x, bytes: n * from.size, "cast", "x")
        try check(y, bytes: n * to.size, "cast", "y")
        guard x.byteOffset % from.size == 0, y.byteOffset % to.size == 0 else {
            throw KernelError.invalidArgument(op: "cast", message: "x or y offset is not aligned to its element size")
        }
    }

    func checkDropout(_ x: BufferView, into y: BufferView, mask: BufferView?, count n: Int, p: Float) throws {
        guard p >= 0, p < 1 else {
            throw KernelError.invalidArgument(op: "dropout", message: "p = \(p) must be in [0, 1)")
        }
        try check(x, count: n, "dropout", "x")
        try check(y, count: n, "dropout", "y")
        if let mask { try check(mask, bytes: n, "dropout", "mask") }
    }

    // MARK: normalization

    /// The checks of rmsnorm (no bias, no mean) and layernorm, forward.
    func checkNormForward(_ op: String, x: BufferView, weight: BufferView, bias: BufferView?, y: BufferView,
                          mean: BufferView?, rstd: BufferView, N: Int, C: Int) throws {
        try nonNegative(op, ["N": N, "C": C])
        try check(x, count: N * C, op, "x (N=\(N), C=\(C))")
        try check(weight, count: C, op, "weight (C=\(C))")
        if let bias { try check(bias, count: C, op, "bias (C=\(C))") }
        try check(y, count: N * C, op, "y (N=\(N), C=\(C))")
        if let mean { try check(mean, count: N, op, "mean (N=\(N))") }
        try check(rstd, count: N, op, "rstd (N=\(N))")
    }

    /// The checks of rmsnorm (no mean, no dbias) and layernorm, backward.
    func checkNormBackward(_ op: String, dy: BufferView, x: BufferView, weight: BufferView, mean: BufferView?,
                           rstd: BufferView, dx: BufferView, dweight: BufferView?, dbias: BufferView?,
                           N: Int, C: Int) throws {
        try nonNegative(op, ["N": N, "C": C])
        try check(dy, count: N * C, op, "dy (N=\(N), C=\(C))")
        try check(x, count: N * C, op, "x (N=\(N), C=\(C))")
        try check(weight, count: C, op, "weight (C=\(C))")
        if let mean { try check(mean, count: N, op, "mean (N=\(N))") }
        try check(rstd, count: N, op, "rstd (N=\(N))")
        try check(dx, count: N * C, op, "dx (N=\(N), C=\(C))")
        if let dweight { try check(dweight, count: C, op, "dweight (C=\(C))") }
        if let dbias { try check(dbias, count: C, op, "dbias (C=\(C))") }
    }

    /// RoPE's arguments, with x and y in `dtype` (f32, or bf16 activations).
    func checkRope(x: BufferView, ldx: Int, y: BufferView, ldy: Int, positions: BufferView,
                   invFreq: BufferView, N: Int, H: Int, D: Int, dtype: DType = .f32) throws {
        let op = "rope"
        try nonNegative(op, ["N": N, "H": H, "D": D])
        guard D % 2 == 0 else {
            throw KernelError.invalidArgument(op: op, message: "head dim D=\(D) must be even (rotate-half pairs i with i+D/2)")
        }
        let (bytes, tag) = dtype == .bf16 ? (2, " bf16") : (4, "")
        for (view, ld, name) in [(x, ldx, "x"), (y, ldy, "y")] {
            guard ld >= H * D else {
                throw KernelError.invalidArgument(op: op, message: "\(name)\(tag): row stride \(ld) < row width H·D=\(H * D)")
            }
            try check(view, bytes: Self.span(rows: N, width: H * D, ld: ld) * bytes, op, "\(name)\(tag) (N=\(N), H=\(H), D=\(D))")
        }
        try check(positions, count: N, op, "positions (N=\(N))")
        try check(invFreq, count: D / 2, op, "invFreq (D/2=\(D / 2))")
    }

    // MARK: embedding

    func checkEmbeddingForward(ids: BufferView, table: BufferView, out: BufferView, N: Int, C: Int,
                               V: Int) throws {
        let op = "embeddingForward"
        try nonNegative(op, ["N": N, "C": C, "V": V])
        try check(ids, count: N, op, "ids (N=\(N))")
        try check(table, count: V * C, op, "table (V=\(V), C=\(C))")
        try check(out, count: N * C, op, "out (N=\(N), C=\(C))")
    }

    /// dtable is only checked to be a view of this device: its row count is whatever fits in
    /// its buffer, and the backend checks the ids against that.
    func checkEmbeddingBackward(ids: BufferView, dout: BufferView, dtable: BufferView, N: Int,
                                C: Int) throws {
        let op = "embeddingBackward"
        try nonNegative(op, ["N": N, "C": C])
        try check(ids, count: N, op, "ids (N=\(N))")
        try check(dout, count: N * C, op, "dout (N=\(N), C=\(C))")
        try check(dtable, count: 0, op, "dtable")
    }

    // MARK: GEMM and the LM head

    /// Checks a gemm's sizes, leading dimensions and strides, naming `shape` in errors; returns
    /// the elements that A, B and C span, or nil when C is empty (nothing to do).
    func checkGEMM(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, lda: Int, strideA: Int, ldb: Int,
                   strideB: Int, ldc: Int, strideC: Int, batch: Int, shape: String) throws -> (a: Int, b: Int, c: Int)? {
        func fail(_ m: String) -> KernelError { .invalidArgument(op: "gemm", message: "\(m) (\(shape))") }
        guard M >= 0, N >= 0, K >= 0, batch >= 0 else { throw fail("sizes must be non-negative") }
        // Stored (rows, cols) of each operand, row-major: op(A) is M×K, so A is K×M when transposed.
        let (aRows, aCols) = transA ? (K, M) : (M, K)
        let (bRows, bCols) = transB ? (N, K) : (K, N)
        guard lda >= max(1, aCols) else { throw fail("lda=\(lda) < \(aCols) columns of A") }
        guard ldb >= max(1, bCols) else { throw fail("ldb=\(ldb) < \(bCols) columns of B") }
        guard ldc >= max(1, N) else { throw fail("ldc=\(ldc) < N=\(N)") }
        guard strideA >= 0, strideB >= 0, strideC >= 0 else { throw fail("strides must be non-negative") }
        if batch > 1, M > 0, N > 0, strideC < (M - 1) * ldc + N {
            throw fail("strideC=\(strideC) makes batch entries of C overlap")
        }
        if batch == 0 || M == 0 || N == 0 { return nil }
        func extent(_ rows: Int, _ cols: Int, _ ld: Int, _ stride: Int) -> Int {
            rows == 0 || cols == 0 ? 0 : (batch - 1) * stride + (rows - 1) * ld + cols
        }
        return (extent(aRows, aCols, lda, strideA), extent(bRows, bCols, ldb, strideB), extent(M, N, ldc, strideC))
    }

    func checkCrossEntropyLMHead(x: BufferView, weight: BufferView, targets: BufferView, N: Int, C: Int,
                                 V: Int, chunk: Int, softcap: Float = 0, dx: BufferView?, dweight: BufferView?,
                                 compute: DType = .f32, weightType: DType = .f32) throws {
        let op = "crossEntropyLMHead"
        guard compute == .f32 || compute == .bf16 else {
            throw KernelError.invalidArgument(op: op, message: "compute dtype \(compute) (use f32 or bf16)")
        }
        guard weightType == .f32 || (weightType == .bf16 && compute == .bf16 && dweight == nil) else {
            throw KernelError.invalidArgument(op: op, message: "a \(weightType) weight needs compute bf16 and no weight gradient")
        }
        try nonNegative(op, ["N": N, "C": C, "V": V])
        guard V > 0, chunk > 0 else {
            throw KernelError.invalidArgument(op: op, message: "V=\(V) and chunk=\(chunk) must be positive")
        }
        guard softcap >= 0, softcap.isFinite else {
            throw KernelError.invalidArgument(op: op, message: "softcap \(softcap) must be ≥ 0 (0 = off)")
        }
        try check(x, count: N * C, op, "x (N=\(N), C=\(C))")
        if weightType == .bf16 {
            try check(weight, bytes: V * C * 2, op, "weight (V=\(V), C=\(C), bf16)")
        } else {
            try check(weight, count: V * C, op, "weight (V=\(V), C=\(C))")
        }
        try check(targets, count: N, op, "targets (N=\(N))")
        if let dx { try check(dx, count: N * C, op, "dx (N=\(N), C=\(C))") }
        if let dweight { try check(dweight, count: V * C, op, "dweight (V=\(V), C=\(C))") }
    }

    /// The rows of the LM head whose target counts (is not `ignoreIndex`), in order; throws on a
    /// target outside [0, V).
    func countedRows(_ targets: some Collection<Int32>, V: Int, ignoreIndex: Int32) throws -> [Int32] {
        var active: [Int32] = []
        active.reserveCapacity(targets.count)
        for (i, t) in targets.enumerated() where t != ignoreIndex {
            guard t >= 0, Int(t) < V else {
                throw KernelError.invalidArgument(op: "crossEntropyLMHead", message: "target \(t) at row \(i) is outside [0, \(V)) and is not the ignore index \(ignoreIndex)")
            }
            active.append(Int32(i))
        }
        return active
    }

    // MARK: optimizer

    func checkAdamW(param: BufferView, grad: BufferView, m: BufferView, v: BufferView, count n: Int,
                    step: AdamWStep) throws {
        try check(count: n, "adamw", ["param": param, "grad": grad, "m": m, "v": v])
        guard step.biasCorrection1 > 0, step.biasCorrection2 > 0 else {
            throw KernelError.invalidArgument(op: "adamw", message: "bias corrections must be positive (step >= 1)")
        }
    }
}
