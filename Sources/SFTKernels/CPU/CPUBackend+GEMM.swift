// The CPU backend's GEMM and the fused LM head + cross-entropy built from it: logits are made a
// chunk of rows at a time into one reused scratch buffer, so memory stays at chunk × V however
// many tokens there are.
//
// GEMM threads: OpenBLAS runs single-threaded, and the backend splits a GEMM over cores itself
// (blocks of columns or rows, or whole batch entries), with the same thread pool as every other
// kernel. OpenBLAS's own worker threads keep spinning for about 0.1 s after each call; a
// training step alternates GEMMs with other kernels every few milliseconds, so those spinning
// threads would take a core from every kernel that follows. One pool avoids that.

import COpenBLAS
import CSFTKernels
import Foundation

extension CPUBackend {
    public func gemm(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float,
                     A: BufferView, lda: Int, strideA: Int, B: BufferView, ldb: Int, strideB: Int,
                     beta: Float, C: BufferView, ldc: Int, strideC: Int, batch: Int) throws {
        let profileStart = OpProfile.begin()
        defer {
            if profileStart > 0 {
                OpProfile.end("gemm \(batch > 1 ? "\(batch)×" : "")\(M)×\(N)×\(K)\(transA ? " Aᵀ" : "")\(transB ? " Bᵀ" : "")",
                              profileStart, flops: 2 * Double(M) * Double(N) * Double(K) * Double(batch))
            }
        }
        let shape = "M=\(M) N=\(N) K=\(K) batch=\(batch) transA=\(transA) transB=\(transB)"
        guard let extent = try checkGEMM(transA: transA, transB: transB, M: M, N: N, K: K, lda: lda, strideA: strideA,
                                         ldb: ldb, strideB: strideB, ldc: ldc, strideC: strideC, batch: batch,
                                         shape: shape) else { return }
        try check(A, count: extent.a, "gemm", "A (\(shape), lda=\(lda), strideA=\(strideA))")
        try check(B, count: extent.b, "gemm", "B (\(shape), ldb=\(ldb), strideB=\(strideB))")
        try check(C, count: extent.c, "gemm", "C (\(shape), ldc=\(ldc), strideC=\(strideC))")
        let (pa, pb, pc) = (A.f32(), B.f32(), C.f32())
        let macs = M * N * max(K, 1)
        if batch == 1 || batch < 2 * threads {
            for i in 0..<batch {
                sgemmSplit(transA, transB, M, N, K, alpha, pa + i * strideA, lda, pb + i * strideB, ldb,
                           beta, pc + i * strideC, ldc, parts: gemmParts(macs))
            }
        } else {
            // Enough batch entries to keep every core busy: whole entries, taken as cores free up
            // (in groups when entries are small, so each hand-off carries 2M multiply-adds).
            let group = max(1, (1 << 21) / macs), groups = (batch + group - 1) / group
            parallel(groups) { g, _ in
                for i in Int(g) * group..<min(batch, (Int(g) + 1) * group) {
                    sgemm(transA, transB, M, N, K, alpha, pa + i * strideA, lda, pb + i * strideB, ldb,
                          beta, pc + i * strideC, ldc)
                }
            }
        }
    }

    /// Blocks to split a GEMM of `macs` multiply-adds into: one per core, each with at least
    /// 2M multiply-adds.
    func gemmParts(_ macs: Int) -> Int { max(1, min(threads, macs >> 21)) }

    /// One GEMM split into `parts` blocks of C, run on the cores in turn: column blocks when C is at least
    /// as wide as it is tall (each part reads a slice of B and all of A), row blocks otherwise;
    /// block edges at multiples of 16 columns or rows.
    func sgemmSplit(_ transA: Bool, _ transB: Bool, _ M: Int, _ N: Int, _ K: Int, _ alpha: Float,
                    _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                    _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int, parts: Int) {
        func edge(_ n: Int, _ p: Int, _ np: Int) -> Int { p == np ? n : n * p / np / 16 * 16 }
        if N >= M || M == 1 {
            parallel(parts) { p, np in
                let n0 = edge(N, Int(p), Int(np)), n1 = edge(N, Int(p) + 1, Int(np))
                if n1 > n0 {
                    // B's columns n0..<n1: rows of B when it is stored transposed (N, K).
                    sgemm(transA, transB, M, n1 - n0, K, alpha, a, lda, b + (transB ? n0 * ldb : n0), ldb,
                          beta, c + n0, ldc)
                }
            }
        } else {
            parallel(parts) { p, np in
                let m0 = edge(M, Int(p), Int(np)), m1 = edge(M, Int(p) + 1, Int(np))
                if m1 > m0 {
                    // A's rows m0..<m1: columns of A when it is stored transposed (K, M).
                    sgemm(transA, transB, m1 - m0, N, K, alpha, a + (transA ? m0 : m0 * lda), lda, b, ldb,
                          beta, c + m0 * ldc, ldc)
                }
            }
        }
    }

    /// Row-major cblas_sgemm with Bool transposes, on the calling thread.
    func sgemm(_ transA: Bool, _ transB: Bool, _ M: Int, _ N: Int, _ K: Int, _ alpha: Float,
               _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
               _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        if M == 1 {
            // One row (batch-1 decode): sgemv streams B once; sgemm would first pack all of B.
            let incx = blasint(transA ? lda : 1)
            if transB {  // B stored (N, K): c = B a
                cblas_sgemv(CblasRowMajor, CblasNoTrans, blasint(N), blasint(K), alpha, b, blasint(ldb), a, incx, beta, c, 1)
            } else {     // B stored (K, N): c = Bᵀ a
                cblas_sgemv(CblasRowMajor, CblasTrans, blasint(K), blasint(N), alpha, b, blasint(ldb), a, incx, beta, c, 1)
            }
            return
        }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    blasint(M), blasint(N), blasint(K), alpha, a, blasint(lda), b, blasint(ldb), beta, c,
                    blasint(ldc))
    }

    /// Rows whose target is not `ignoreIndex` are the only ones that cost anything: they are
    /// gathered into chunks of `chunk` rows (prompt tokens masked out in SFT are often half the
    /// batch), and ignored rows get dx = 0.
    public func crossEntropyLMHead(x: BufferView, weight: BufferView, weightType: DType, targets: BufferView, N: Int,
                                   C: Int, V: Int, ignoreIndex: Int32, chunk: Int, gradScale: Float, softcap: Float,
                                   dx: BufferView?, dweight: BufferView?, compute: DType) throws -> (loss: Double, count: Int) {
        let profileStart = OpProfile.begin()
        defer { OpProfile.end("crossEntropyLMHead\(compute == .bf16 ? " bf16" : "")", profileStart) }
        try checkCrossEntropyLMHead(x: x, weight: weight, targets: targets, N: N, C: C, V: V, chunk: chunk, softcap: softcap, dx: dx,
                                    dweight: dweight, compute: compute, weightType: weightType)
        let pt = targets.i32()
        let active = try countedRows(UnsafeBufferPointer(start: pt, count: N), V: V, ignoreIndex: ignoreIndex)
        if let dx { try fill(dx, value: 0, count: N * C) }
        if active.isEmpty { return (0, 0) }

        let rows = min(chunk, active.count)
        let wantGrad = dx != nil || dweight != nil
        // Scratch: logits (rows, V), gathered x (rows, C), gathered targets, dx of the chunk.
        let logits = try allocate(bytes: rows * V * 4)
        let xs = try allocate(bytes: rows * C * 4)
        let ts = try allocate(bytes: rows * 4)
        let dxs = try allocate(bytes: dx == nil ? 0 : rows * C * 4)
        let (pl, pxs, pts, pdxs) = (BufferView(logits).f32(), BufferView(xs).f32(), BufferView(ts).i32(), BufferView(dxs).f32())
        let (px, pw) = (x.f32(), weight.f32())
        // bf16: the weight rounded once per call (not once per GEMM and chunk), and the three
        // GEMMs through the bf16 GEMM; `mm` is the GEMM each one calls.
        let w16 = weightType == .bf16 ? weight : compute == .bf16 ? BufferView(try allocate(bytes: V * C * 2)) : nil
        if let w16, weightType == .f32 { try cast(weight, from: .f32, into: w16, to: .bf16, count: V * C) }
        func mm(_ transA: Bool, _ transB: Bool, _ M: Int, _ N: Int, _ K: Int, _ a: UnsafeMutablePointer<Float>, _ lda: Int,
                weightB: Bool, _ b: UnsafeMutablePointer<Float>, _ ldb: Int, _ beta: Float, _ c: UnsafeMutablePointer<Float>,
                _ ldc: Int, parts: Int) throws {
            guard let w16 else {
                sgemmSplit(transA, transB, M, N, K, 1, a, lda, b, ldb, beta, c, ldc, parts: parts)
                return
            }
            let bv = weightB ? UnsafeRawPointer(w16.raw) : UnsafeRawPointer(b)
            let nparts = max(1, min(parts, max(M, N) / 32))
            try runParts(nparts, op: "crossEntropyLMHead") { p, np in
                sft_gemm_bf16(transA ? 1 : 0, transB ? 1 : 0, Int64(M), Int64(N), Int64(K), 1, UnsafeRawPointer(a), 0,
                              Int64(lda), bv, weightB ? 1 : 0, Int64(ldb), beta, c, Int64(ldc), Int32(p), Int32(np))
            }
        }

        var loss = 0.0, count = 0
        var r0 = 0
        while r0 < active.count {
            let n = min(rows, active.count - r0)
            for j in 0..<n {
                let i = Int(active[r0 + j])
                (pxs + j * C).update(from: px + i * C, count: C)
                pts[j] = pt[i]
            }
            // logits (n, V) = xs (n, C) · Wᵀ
            let split = gemmParts(n * V * C)
            try mm(false, true, n, V, C, pxs, C, weightB: true, pw, C, 0, pl, V, parts: split)
            let nparts = parts(work: n * V, grain: 1 << 15)
            var partLoss = [Double](repeating: 0, count: nparts)
            var partCount = [Int64](repeating: 0, count: nparts)
            partLoss.withUnsafeMutableBufferPointer { lossOut in
                partCount.withUnsafeMutableBufferPointer { countOut in
                    let (lo, co) = (lossOut.baseAddress!, countOut.baseAddress!)
                    parallel(nparts) { p, np in
                        lo[Int(p)] = sft_xent_rows_f32(pl, pts, Int64(n), Int64(V), ignoreIndex, gradScale,
                                                       wantGrad ? 1 : 0, softcap, co + Int(p), p, np)
                    }
                }
            }
            loss += partLoss.reduce(0, +)
            count += Int(partCount.reduce(0, +))
            if let dx {
                // dx rows = dlogits (n, V) · W (V, C), scattered back to their rows
                try mm(false, false, n, C, V, pl, V, weightB: true, pw, C, 0, pdxs, C, parts: split)
                let pdx = dx.f32()
                for j in 0..<n {
                    (pdx + Int(active[r0 + j]) * C).update(from: pdxs + j * C, count: C)
                }
            }
            if let dweight {
                // dW (V, C) += dlogitsᵀ (V, n) · xs (n, C)
                try mm(true, false, V, C, n, pl, V, weightB: false, pxs, C, 1, dweight.f32(), C, parts: split)
            }
            r0 += n
        }
        return (loss, count)
    }
}
