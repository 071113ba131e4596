// The CPU backend's bf16 GEMM (mixed precision, see WeightForms/DenseBF16.swift): sft_gemm_bf16
// (gemm_bf16.c) split into blocks of C on the backend's pool, each part packing its own bf16
// panels, and its pair (a LoRA adapter's product in its Linear's, sft_gemm_bf16_pair). Readable
// references: sft_gemm_bf16_ref, sft_gemm_bf16_pair_ref.

import CSFTKernels
import Foundation

extension CPUBackend {
    public func gemmBF16(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float,
                         A: BufferView, aType: DType, lda: Int, B: BufferView, bType: DType, ldb: Int,
                         beta: Float, C: BufferView, ldc: Int) throws {
        guard try checkGEMMBF16(transA: transA, transB: transB, M: M, N: N, K: K, A: A, aType: aType, lda: lda,
                                B: B, bType: bType, ldb: ldb, C: C, ldc: ldc) != nil else { return }
        try runGEMMBF16(transA: transA, transB: transB, M: M, N: N, K: K, alpha: alpha, A: A, aType: aType, lda: lda,
                        B: B, bType: bType, ldb: ldb, K2: 0, A2: A, a2Type: .f32, lda2: 1, B2: B, b2Type: .f32, ldb2: 1,
                        beta: beta, C: C, cType: .f32, ldc: ldc)
    }

    public func gemmBF16Pair(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float,
                             A: BufferView, aType: DType, lda: Int, B: BufferView, bType: DType, ldb: Int,
                             K2: Int, A2: BufferView, a2Type: DType, lda2: Int, B2: BufferView, b2Type: DType, ldb2: Int,
                             beta: Float, C: BufferView, cType: DType, ldc: Int) throws {
        guard try checkGEMMBF16Pair(transA: transA, transB: transB, M: M, N: N, K: K, A: A, aType: aType, lda: lda,
                                    B: B, bType: bType, ldb: ldb, K2: K2, A2: A2, a2Type: a2Type, lda2: lda2, B2: B2,
                                    b2Type: b2Type, ldb2: ldb2, beta: beta, C: C, cType: cType, ldc: ldc) != nil else { return }
        try runGEMMBF16(transA: transA, transB: transB, M: M, N: N, K: K, alpha: alpha, A: A, aType: aType, lda: lda,
                        B: B, bType: bType, ldb: ldb, K2: K2, A2: A2, a2Type: a2Type, lda2: lda2, B2: B2, b2Type: b2Type,
                        ldb2: ldb2, beta: beta, C: C, cType: cType, ldc: ldc)
    }

    /// sft_gemm_bf16_pair (K2 = 0: one product) on the pool, arguments checked, profiled as
    /// "gemm bf16 M×N×K" (+K2 for a pair).
    private func runGEMMBF16(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float,
                             A: BufferView, aType: DType, lda: Int, B: BufferView, bType: DType, ldb: Int,
                             K2: Int, A2: BufferView, a2Type: DType, lda2: Int, B2: BufferView, b2Type: DType, ldb2: Int,
                             beta: Float, C: BufferView, cType: DType, ldc: Int) throws {
        let profileStart = OpProfile.begin()
        defer {
            if profileStart > 0 {
                OpProfile.end("gemm bf16 \(M)×\(N)×\(K)\(K2 > 0 ? "+\(K2)" : "")\(transA ? " Aᵀ" : "")\(transB ? " Bᵀ" : "")",
                              profileStart, flops: 2 * Double(M) * Double(N) * Double(K + K2))
            }
        }
        let (pa, pb, pa2, pb2) = (UnsafeRawPointer(A.raw), UnsafeRawPointer(B.raw), UnsafeRawPointer(A2.raw), UnsafeRawPointer(B2.raw))
        let pc = C.raw
        // One part per core, each with at least 2M multiply-adds and one 32-column tile.
        let nparts = max(1, min(gemmParts(M * N * max(K + K2, 1)), max(M, N) / 32))
        try runParts(nparts, op: "gemmBF16") { p, np in
            sft_gemm_bf16_pair(transA ? 1 : 0, transB ? 1 : 0, Int64(M), Int64(N), Int64(K), alpha,
                               pa, aType == .bf16 ? 1 : 0, Int64(lda), pb, bType == .bf16 ? 1 : 0, Int64(ldb),
                               Int64(K2), pa2, a2Type == .bf16 ? 1 : 0, Int64(lda2), pb2, b2Type == .bf16 ? 1 : 0, Int64(ldb2),
                               beta, pc, cType == .bf16 ? 1 : 0, Int64(ldc), Int32(p), Int32(np))
        }
    }

    /// The bf16 GEMM's micro-kernel in use ("avx512bf16", "avx512", "avx2", "generic").
    public static var gemmBF16Variant: String { String(cString: sft_gemm_bf16_variant()) }

    /// Forces the bf16 GEMM's micro-kernel ("auto" to undo), for tests and benchmarks of every
    /// variant on one machine; throws when this CPU cannot run it.
    public static func setGEMMBF16Variant(_ name: String) throws {
        if sft_gemm_bf16_set_variant(name) != 0 {
            throw KernelError.invalidArgument(op: "gemmBF16", message: String(cString: sft_last_error()))
        }
    }
}

extension CPUBackend {
    /// The vdpbf16ps peak of this CPU in GFLOP/s: a register-only loop (sft_dpbf16_peak) of
    /// `iterations` rounds on each of `threads` cores of the pool at once, the best of `repeats`
    /// such runs (short runs, so one that another process did not interrupt is likely). nil
    /// without AVX512_BF16.
    public func dpbf16PeakGFLOPS(threads n: Int, iterations: Int = 2_000_000, repeats: Int = 10) -> Double? {
        var sink: Float = 0
        guard sft_dpbf16_peak(1, &sink) > 0 else { return nil }
        let parts = max(1, min(n, threads))
        var best = 0.0
        for _ in 0..<max(1, repeats) {
            var flops = [Double](repeating: 0, count: parts)
            let t0 = DispatchTime.now().uptimeNanoseconds
            flops.withUnsafeMutableBufferPointer { out in
                let o = out.baseAddress!
                parallel(parts) { p, _ in
                    var s: Float = 0
                    o[Int(p)] = sft_dpbf16_peak(Int64(iterations), &s)
                }
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
            best = max(best, flops.reduce(0, +) / seconds * 1e-9)
        }
        return best
    }
}

extension CPUBackend {
    /// The 4-bit linear op (Backend+Linear4bit.swift) on the CPU. f32 compute (and f16, which
    /// the CPU computes in f32): the shared f32 tile loop. bf16 compute (QLoRA's compute_dtype,
    /// set by `precision: bf16`): each tile of W is decoded and rounded to bf16 (nearest even)
    /// as the bf16 GEMM packs it, x likewise, products exact and sums f32 — the values of
    /// "dequantize to f32, round to bf16, multiply", as CUDA's bf16 tiles compute them. Decode
    /// rows (N ≤ 2) keep the f32 matrix-vector product, as on CUDA.
    public func linear4bit(x: BufferView, weight w: QuantizedMatrix, bias: BufferView?, y: BufferView, N: Int) throws {
        guard w.computeDType == .bf16, N > Self.linear4bitMatVecMaxRows else {
            return try linear4bitF32(x: x, weight: w, bias: bias, y: y, N: N)
        }
        let M = w.rows, K = w.cols
        try w.check(on: self, "linear4bit")
        try check(x, count: N * K, "linear4bit", "x")
        try check(y, count: N * M, "linear4bit", "y")
        if let bias { try check(bias, count: M, "linear4bit", "bias") }
        if let bias { for r in 0..<N { try copy(bias, to: y.advanced(byBytes: r * M * 4), bytes: M * 4) } }
        try forEach4bitTile(of: w) { r0, rows, tile in
            // y[:, r0 ..< r0+rows] (+)= x · tileᵀ
            try gemmBF16(transA: false, transB: true, M: N, N: rows, K: K, alpha: 1, A: x, aType: .f32, lda: K,
                         B: tile, bType: .f32, ldb: K, beta: bias == nil ? 0 : 1, C: y.advanced(byBytes: r0 * 4), ldc: M)
        }
    }

    /// dx = dy · W; bf16 compute: dy and each decoded tile rounded to bf16 by the bf16 GEMM.
    public func linear4bitInputGradient(dy: BufferView, weight w: QuantizedMatrix, dx: BufferView, N: Int) throws {
        let M = w.rows, K = w.cols
        guard w.computeDType == .bf16, M > 0 else { return try linear4bitInputGradientF32(dy: dy, weight: w, dx: dx, N: N) }
        try w.check(on: self, "linear4bitInputGradient")
        try check(dy, count: N * M, "linear4bitInputGradient", "dy")
        try check(dx, count: N * K, "linear4bitInputGradient", "dx")
        try forEach4bitTile(of: w) { r0, rows, tile in
            // dX (+)= dY[:, r0 ..< r0+rows] · tile
            try gemmBF16(transA: false, transB: false, M: N, N: K, K: rows, alpha: 1, A: dy.advanced(byBytes: r0 * 4),
                         aType: .f32, lda: M, B: tile, bType: .f32, ldb: K, beta: r0 == 0 ? 0 : 1, C: dx, ldc: K)
        }
    }
}
