// The 4-bit linear op (bitsandbytes' Linear4bit behaviour) on any backend: y = x Wᵀ (+ b)
// with W kept in NF4/FP4 and decoded on the fly, a tile of rows at a time, into one reused f32
// scratch (never a full-size f32 copy of W) that the backend's GEMM reads. The same tiles
// give the input gradient dX = dY W; the frozen base gets no weight gradient. A few rows
// (generation) skip the tiles: the backend's 4-bit matrix-vector op decodes and multiplies in
// one pass. Each backend decodes tiles on its own device (`dequantize4bit`), or through the
// CPU fallback with explicit transfers (BackendFallbacks.swift).
//
// Shapes: N rows (tokens), K = w.cols in features, M = w.rows out features, row-major.

import Synchronization

extension Backend {
    /// Rows of x at or below which the matrix-vector op beats decode + GEMM.
    public static var linear4bitMatVecMaxRows: Int { 2 }

    /// Rows per decoded tile: at least 64 rows so the GEMM stays efficient, and about 1 M
    /// values on the CPU (the tile stays in cache) or 16 M on an accelerator (fewer, larger
    /// GEMMs: 64 MB of f32 scratch, 32 MB in 16 bits).
    public func linear4bitTileRows(M: Int, K: Int) -> Int {
        let values = device == .cpu ? 1 << 20 : Linear4bitTiling.acceleratorTileValues
        return min(M, max(64, values / max(1, K)))
    }

    /// y (N, M) = x (N, K) · Wᵀ (+ bias (M) on every row): f32 tiles. A 16-bit compute dtype
    /// is an error here off the CPU (which computes f16 in f32): a backend that implements
    /// 16-bit tiles overrides this op (CUDABackend+Quantized.swift, CPUBackend+BF16.swift).
    public func linear4bit(x: BufferView, weight w: QuantizedMatrix, bias: BufferView?, y: BufferView, N: Int) throws {
        try require32BitCompute(w, "linear4bit")
        try linear4bitF32(x: x, weight: w, bias: bias, y: y, N: N)
    }

    /// dx (N, K) = dy (N, M) · W, f32 tiles (overwrites dx); 16-bit compute as in `linear4bit`.
    public func linear4bitInputGradient(dy: BufferView, weight w: QuantizedMatrix, dx: BufferView, N: Int) throws {
        try require32BitCompute(w, "linear4bitInputGradient")
        try linear4bitInputGradientF32(dy: dy, weight: w, dx: dx, N: N)
    }

    func require32BitCompute(_ w: QuantizedMatrix, _ op: String) throws {
        guard w.computeDType == .f32 || device == .cpu else {
            throw KernelError.invalidArgument(op: op, message: "compute dtype \(w.computeDType) is not implemented on \(device) (use f32)")
        }
    }

    /// y (N, M) = x (N, K) · Wᵀ (+ bias (M) on every row), f32.
    func linear4bitF32(x: BufferView, weight w: QuantizedMatrix, bias: BufferView?, y: BufferView, N: Int) throws {
        let M = w.rows, K = w.cols
        try w.check(on: self, "linear4bit")
        try check(x, count: N * K, "linear4bit", "x")
        try check(y, count: N * M, "linear4bit", "y")
        if let bias { try check(bias, count: M, "linear4bit", "bias") }
        if N <= Self.linear4bitMatVecMaxRows {
            try matVec4bit(w, x: x, y: y, n: N)
            if let bias { for r in 0..<N { try axpy(alpha: 1, bias, y.advanced(byBytes: r * M * 4), count: M) } }
        } else {
            if let bias { for r in 0..<N { try copy(bias, to: y.advanced(byBytes: r * M * 4), bytes: M * 4) } }
            try linear4bitTiles(x: x, weight: w, hasBias: bias != nil, y: y, N: N)
        }
    }

    /// dx (N, K) = dy (N, M) · W, f32 (overwrites dx).
    func linear4bitInputGradientF32(dy: BufferView, weight w: QuantizedMatrix, dx: BufferView, N: Int) throws {
        let M = w.rows, K = w.cols
        try w.check(on: self, "linear4bitInputGradient")
        try check(dy, count: N * M, "linear4bitInputGradient", "dy")
        try check(dx, count: N * K, "linear4bitInputGradient", "dx")
        if M == 0 { return try fill(dx, value: 0, count: N * K) }
        try forEach4bitTile(of: w) { r0, rows, tile in
            // dX (+)= dY[:, r0 ..< r0+rows] · tile
            try gemm(transA: false, transB: false, M: N, N: K, K: rows, alpha: 1,
                     A: dy.advanced(byBytes: r0 * 4), lda: M, strideA: 0, B: tile, ldb: K, strideB: 0,
                     beta: r0 == 0 ? 0 : 1, C: dx, ldc: K, strideC: 0, batch: 1)
        }
    }

    /// y[:, tile rows] (+)= x · tileᵀ for every tile; with `hasBias`, y already holds the bias.
    func linear4bitTiles(x: BufferView, weight w: QuantizedMatrix, hasBias: Bool, y: BufferView, N: Int) throws {
        let M = w.rows, K = w.cols
        try forEach4bitTile(of: w) { r0, rows, tile in
            try gemm(transA: false, transB: true, M: N, N: rows, K: K, alpha: 1, A: x, lda: K, strideA: 0,
                     B: tile, ldb: K, strideB: 0, beta: hasBias ? 1 : 0,
                     C: y.advanced(byBytes: r0 * 4), ldc: M, strideC: 0, batch: 1)
        }
    }

    /// Calls body(r0, rows, tile) for consecutive row tiles of W decoded into one scratch.
    func forEach4bitTile(of w: QuantizedMatrix, _ body: (Int, Int, BufferView) throws -> Void) throws {
        let M = w.rows, K = w.cols
        let R = linear4bitTileRows(M: M, K: K)
        if M == 0 { return }
        let scratch = BufferView(try allocate(bytes: max(1, R * K) * 4))
        var r0 = 0
        while r0 < M {
            let rows = min(R, M - r0)
            try dequantize4bit(w, rows: r0, count: rows, into: scratch)
            try body(r0, rows, scratch)
            r0 += rows
        }
    }
}

/// The tile budget of the 4-bit linear op on accelerators (values per decoded tile). Tests
/// lower it to run several tiles on small matrices; nothing else needs to change it.
public enum Linear4bitTiling {
    private static let values = Atomic<Int>(1 << 24)

    /// Most weight values decoded into one f32 tile (default 2^24 = 64 MiB); an atomic, settable
    /// from any thread.
    public static var acceleratorTileValues: Int {
        get { values.load(ordering: .relaxed) }
        set { values.store(newValue, ordering: .relaxed) }
    }
}
