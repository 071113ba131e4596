// The bf16 GEMM (mixed precision): every micro-kernel this CPU can run (avx512bf16, avx512,
// avx2, generic), all four transposes, f32 and bf16 operands, leading dimensions wider than the
// matrices, alpha / beta, edge tiles, K odd and K across several depth blocks — against the
// Double reference on the bf16-rounded inputs (tight: only f32 summation order differs) and on
// the f32 inputs (bf16 tolerance); bad arguments throw naming gemmBF16.

import SFTKernels
import XCTest

final class GemmBF16Tests: XCTestCase {
    let cpu = CPUBackend.shared

    /// Runs body once per bf16 micro-kernel the CPU supports, then restores automatic choice.
    func forEachVariant(_ body: (String) throws -> Void) throws {
        defer { try? CPUBackend.setGEMMBF16Variant("auto") }
        var ran: [String] = []
        for v in ["avx512bf16", "avx512", "avx2", "generic"] {
            guard (try? CPUBackend.setGEMMBF16Variant(v)) != nil else { continue }
            XCTAssertEqual(CPUBackend.gemmBF16Variant, v)
            ran.append(v)
            try body(v)
        }
        XCTAssertTrue(ran.contains("generic"), "the generic bf16 GEMM runs everywhere")
    }

    func roundedToBF16(_ x: [Float]) -> [Float] { x.map { Float(bitPattern: UInt32(Ref.bf16($0)) << 16) } }

    func testEveryVariantMatchesReferenceOnBF16Inputs() throws {
        var rng = RNG(16)
        try forEachVariant { variant in
            for (M, N, K) in [(1, 1, 1), (5, 7, 9), (12, 32, 2), (13, 33, 3), (37, 70, 300), (100, 40, 513), (64, 260, 600)] {
                for transA in [false, true] {
                    for transB in [false, true] {
                        for (aType, bType) in [(DType.f32, DType.f32), (.f32, .bf16), (.bf16, .f32), (.bf16, .bf16)] {
                            let (aRows, aCols) = transA ? (K, M) : (M, K)
                            let (bRows, bCols) = transB ? (N, K) : (K, N)
                            let lda = aCols + rng.int(0..<3), ldb = bCols + rng.int(0..<3), ldc = N + rng.int(0..<3)
                            let A = rng.floats(aRows * lda), B = rng.floats(bRows * ldb), C0 = rng.floats(M * ldc)
                            let (alpha, beta): (Float, Float) = (0.75, rng.pick([0, -0.5]))
                            func operand(_ x: [Float], _ t: DType) throws -> BufferView {
                                t == .bf16 ? try Dev.upload(x.map { Ref.bf16($0) }) : try Dev.upload(x)
                            }
                            // beta = 0 must not read C: NaN there must not leak into the result.
                            let vc = try Dev.upload(beta == 0 ? [Float](repeating: .nan, count: C0.count) : C0)
                            try cpu.gemmBF16(transA: transA, transB: transB, M: M, N: N, K: K, alpha: alpha,
                                             A: try operand(A, aType), aType: aType, lda: lda, B: try operand(B, bType),
                                             bType: bType, ldb: ldb, beta: beta, C: vc, ldc: ldc)
                            let got = try Dev.floats(vc, M * ldc)
                            let what = "\(variant) M=\(M) N=\(N) K=\(K) transA=\(transA) transB=\(transB) A \(aType) B \(bType) beta \(beta)"
                            let exact = Ref.gemm(transA: transA, transB: transB, M: M, N: N, K: K, alpha: Double(alpha),
                                                 A: roundedToBF16(A), aOffset: 0, lda: lda, B: roundedToBF16(B), bOffset: 0,
                                                 ldb: ldb, beta: Double(beta), C: C0, cOffset: 0, ldc: ldc)
                            let f32 = Ref.gemm(transA: transA, transB: transB, M: M, N: N, K: K, alpha: Double(alpha),
                                               A: A, aOffset: 0, lda: lda, B: B, bOffset: 0, ldb: ldb, beta: Double(beta),
                                               C: C0, cOffset: 0, ldc: ldc)
                            var gotC: [Float] = []
                            for r in 0..<M { gotC += got[r * ldc..<r * ldc + N] }
                            // f32 accumulation of exact bf16 products: only the order of the sums differs.
                            assertClose(gotC, exact, rtol: 1e-4, atol: 1e-5 * Double(K), what + " vs bf16-rounded reference")
                            // Against the f32 product: each input rounded by ≤ 2⁻⁹ relative.
                            assertClose(gotC, f32, rtol: 1e-2, atol: 0.02 * Double(K).squareRoot(), what + " vs f32 reference")
                            if beta == 0 { XCTAssertFalse(gotC.contains { $0.isNaN }, what + ": NaN from an unread C") }
                            for r in 0..<M where ldc > N {   // padding columns of C are left alone
                                XCTAssertEqual(Array(got[r * ldc + N..<r * ldc + ldc]).map(\.bitPattern),
                                               Array((beta == 0 ? [Float](repeating: .nan, count: C0.count) : C0)[r * ldc + N..<r * ldc + ldc]).map(\.bitPattern), what)
                            }
                        }
                    }
                }
            }
        }
    }

    func testResultDoesNotDependOnThreadCount() throws {
        var rng = RNG(3)
        let (M, N, K) = (300, 520, 700)
        let A = try Dev.upload(rng.floats(M * K)), B = try Dev.upload(rng.floats(N * K).map { Ref.bf16($0) })
        func run() throws -> [Float] {
            let c = try Dev.zeros(M * N)
            try cpu.gemmBF16(transA: false, transB: true, M: M, N: N, K: K, alpha: 1, A: A, aType: .f32, lda: K,
                             B: B, bType: .bf16, ldb: K, beta: 0, C: c, ldc: N)
            return try Dev.floats(c, M * N)
        }
        let before = cpu.threads
        defer { cpu.setThreads(before) }
        cpu.setThreads(1)
        let one = try run()
        cpu.setThreads(max(2, before))
        XCTAssertEqual(try run().map(\.bitPattern), one.map(\.bitPattern))
    }

    /// The fused LM head + loss with bf16 GEMMs: loss, dx and dW within bf16 tolerance of f32
    /// (and not equal to it: the bf16 path ran), on every micro-kernel.
    func testLMHeadInBF16TracksF32() throws {
        var rng = RNG(21)
        let (N, C, V) = (40, 48, 300)
        let x = try Dev.upload(rng.floats(N * C)), w = try Dev.upload(rng.floats(V * C, scale: 0.5))
        let targets = try Dev.upload((0..<N).map { $0 % 7 == 3 ? Int32(-100) : Int32(rng.int(0..<V)) })
        func run(_ compute: DType) throws -> (Double, [Float], [Float]) {
            let dx = try Dev.zeros(N * C), dw = try Dev.zeros(V * C)
            let (loss, count) = try cpu.crossEntropyLMHead(x: x, weight: w, targets: targets, N: N, C: C, V: V, ignoreIndex: -100,
                                                           chunk: 16, gradScale: 0.5, dx: dx, dweight: dw, compute: compute)
            XCTAssertEqual(count, N - (0..<N).filter { $0 % 7 == 3 }.count)
            return (loss, try Dev.floats(dx, N * C), try Dev.floats(dw, V * C))
        }
        let (l32, dx32, dw32) = try run(.f32)
        try forEachVariant { v in
            let (l16, dx16, dw16) = try run(.bf16)
            XCTAssertNotEqual(l16, l32, v)
            XCTAssertEqual(l16, l32, accuracy: 1e-2 * abs(l32), v)
            for (g, f, name) in [(dx16, dx32, "dx"), (dw16, dw32, "dW")] {
                let scale = f.map { abs($0) }.max()!
                XCTAssertLessThan(zip(g, f).map { abs($0 - $1) }.max()!, 2e-2 * scale, "\(v) \(name)")
            }
        }
        XCTAssertThrowsError(try cpu.crossEntropyLMHead(x: x, weight: w, targets: targets, N: N, C: C, V: V, ignoreIndex: -100,
                                                        chunk: 16, gradScale: 1, dx: nil, dweight: nil, compute: .f16))
    }

    /// The pair (a Linear's product and its LoRA adapter's in one pass over C) on every
    /// micro-kernel: against the Double reference of both products on the bf16-rounded inputs,
    /// and against two `gemmBF16` (the unfused default) — f32 C with beta, and bf16 C rounded
    /// once; K across depth blocks, K = 0, K2 = 0, odd K and K2, all four transposes.
    func testPairMatchesTwoGEMMsOnEveryVariant() throws {
        var rng = RNG(61)
        try forEachVariant { variant in
            for (M, N, K, K2) in [(5, 7, 9, 3), (13, 33, 3, 1), (37, 70, 600, 16), (30, 40, 0, 16), (12, 32, 2, 0),
                                  (100, 40, 1200, 33)] {
                for transA in [false, true] {
                    for transB in [false, true] {
                        for cType in [DType.f32, .bf16] {
                            let (aType, bType): (DType, DType) = rng.pick([(.f32, .bf16), (.bf16, .f32), (.bf16, .bf16)])
                            let lda = max(1, (transA ? M : K) + rng.int(0..<3)), ldb = max(1, (transB ? K : N) + rng.int(0..<3))
                            let lda2 = (transA ? M : K2) + 1, ldb2 = (transB ? K2 : N) + 1, ldc = N + rng.int(0..<3)
                            let A = rng.floats((transA ? K : M) * lda), B = rng.floats((transB ? N : K) * ldb)
                            let A2 = rng.floats((transA ? K2 : M) * lda2), B2 = rng.floats((transB ? N : K2) * ldb2)
                            let C0 = rng.floats(M * ldc), beta: Float = cType == .bf16 ? 0 : rng.pick([0, -0.5])
                            func operand(_ x: [Float], _ t: DType) throws -> BufferView {
                                t == .bf16 ? try Dev.upload(x.map { Ref.bf16($0) }) : try Dev.upload(x)
                            }
                            let (va, vb, va2, vb2) = (try operand(A, aType), try operand(B, bType), try Dev.upload(A2), try Dev.upload(B2))
                            func run(fused: Bool) throws -> [Float] {
                                let c = try operand(C0, cType)
                                if fused {
                                    try cpu.gemmBF16Pair(transA: transA, transB: transB, M: M, N: N, K: K, alpha: 0.75, A: va,
                                                         aType: aType, lda: lda, B: vb, bType: bType, ldb: ldb, K2: K2, A2: va2,
                                                         a2Type: .f32, lda2: lda2, B2: vb2, b2Type: .f32, ldb2: ldb2, beta: beta,
                                                         C: c, cType: cType, ldc: ldc)
                                } else {
                                    try cpu.gemmBF16PairUnfused(transA: transA, transB: transB, M: M, N: N, K: K, alpha: 0.75, A: va,
                                                                aType: aType, lda: lda, B: vb, bType: bType, ldb: ldb, K2: K2, A2: va2,
                                                                a2Type: .f32, lda2: lda2, B2: vb2, b2Type: .f32, ldb2: ldb2, beta: beta,
                                                                C: c, cType: cType, ldc: ldc)
                                }
                                let raw = cType == .bf16 ? try Dev.halves(c, M * ldc).map { Float(bitPattern: UInt32($0) << 16) }
                                    : try Dev.floats(c, M * ldc)
                                return (0..<M).flatMap { raw[$0 * ldc..<$0 * ldc + N] }
                            }
                            let what = "\(variant) M=\(M) N=\(N) K=\(K) K2=\(K2) transA=\(transA) transB=\(transB) C \(cType) beta \(beta)"
                            let first = Ref.gemm(transA: transA, transB: transB, M: M, N: N, K: K, alpha: 0.75,
                                                 A: roundedToBF16(A), aOffset: 0, lda: lda, B: roundedToBF16(B), bOffset: 0,
                                                 ldb: ldb, beta: Double(beta), C: C0, cOffset: 0, ldc: ldc)
                            let second = Ref.gemm(transA: transA, transB: transB, M: M, N: N, K: K2, alpha: 0.75,
                                                  A: roundedToBF16(A2), aOffset: 0, lda: lda2, B: roundedToBF16(B2), bOffset: 0,
                                                  ldb: ldb2, beta: 0, C: C0, cOffset: 0, ldc: ldc)
                            let exact = zip(first, second).map { $0 + $1 }
                            let fused = try run(fused: true), two = try run(fused: false)
                            // A bf16 C is rounded once: within half a bf16 step (2⁻⁹ relative) of the sum.
                            let rtol = cType == .bf16 ? 4e-3 : 1e-4
                            assertClose(fused, exact, rtol: rtol, atol: 1e-5 * Double(K + K2), what + " vs reference")
                            assertClose(fused, two.doubles, rtol: cType == .bf16 ? 8e-3 : 1e-4, atol: 1e-5 * Double(K + K2),
                                        what + " vs two GEMMs")
                        }
                    }
                }
            }
        }
        // The second product really enters: with it the result moves.
        let x = try Dev.upload([Float](repeating: 1, count: 16)), c = try Dev.zeros(4)
        try cpu.gemmBF16Pair(transA: false, transB: true, M: 2, N: 2, K: 4, alpha: 1, A: x, aType: .f32, lda: 4,
                             B: x, bType: .f32, ldb: 4, K2: 2, A2: x, a2Type: .f32, lda2: 2, B2: x, b2Type: .f32, ldb2: 2,
                             beta: 0, C: c, cType: .f32, ldc: 2)
        XCTAssertEqual(try Dev.floats(c, 4), [6, 6, 6, 6])
    }

    func testPairBadArgumentsThrow() throws {
        let x = try Dev.zeros(4096)
        func call(K2: Int = 2, beta: Float = 0, cType: DType = .bf16) throws {
            try cpu.gemmBF16Pair(transA: false, transB: true, M: 4, N: 4, K: 4, alpha: 1, A: x, aType: .f32, lda: 4,
                                 B: x, bType: .f32, ldb: 4, K2: K2, A2: x, a2Type: .f32, lda2: max(K2, 1), B2: x,
                                 b2Type: .f32, ldb2: max(K2, 1), beta: beta, C: x, cType: cType, ldc: 4)
        }
        XCTAssertNoThrow(try call())
        for bad in [{ try call(K2: 600) }, { try call(beta: 1) }, { try call(cType: .f16) }] {
            XCTAssertThrowsError(try bad()) { XCTAssertTrue("\($0)".contains("gemmBF16"), "\($0)") }
        }
    }

    func testBadArgumentsThrowNamingGemmBF16() throws {
        let x = try Dev.zeros(64)
        func call(aType: DType = .f32, bType: DType = .bf16, K: Int = 4, lda: Int = 4) throws {
            try cpu.gemmBF16(transA: false, transB: true, M: 4, N: 4, K: K, alpha: 1, A: x, aType: aType, lda: lda,
                             B: x, bType: bType, ldb: K, beta: 0, C: x, ldc: 4)
        }
        XCTAssertNoThrow(try call())
        for bad in [{ try call(aType: .f16) }, { try call(bType: .i32) }, { try call(lda: 3) }, { try call(K: 40, lda: 40) }] {
            XCTAssertThrowsError(try bad()) { XCTAssertTrue("\($0)".contains("gemmBF16"), "\($0)") }
        }
    }
}
