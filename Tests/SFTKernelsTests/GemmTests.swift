// GEMM: all four transpose combinations, batched, with leading dimensions and batch strides
// larger than the matrices, alpha and beta, against the Double reference; bad arguments throw
// naming gemm and the shapes.

import SFTKernels
import XCTest

final class GemmTests: XCTestCase {
    let cpu = CPUBackend.shared

    func testAllTransposesBatchedStridedMatchReference() throws {
        var rng = RNG(80)
        // The last shapes are large enough to be split over cores: by columns (N >= M), by rows,
        // and (batch 6) by whole batch entries.
        for (M, N, K, batch) in [(5, 7, 9, 3), (1, 1, 1, 3), (1, 50, 9, 2), (33, 17, 64, 3), (64, 96, 3, 3),
                                 (40, 1100, 100, 1), (1100, 37, 110, 1), (300, 80, 90, 6)] {
            for transA in [false, true] {
                for transB in [false, true] {
                    let (aRows, aCols) = transA ? (K, M) : (M, K)
                    let (bRows, bCols) = transB ? (N, K) : (K, N)
                    let lda: Int = aCols + rng.int(0..<4)
                    let ldb: Int = bCols + rng.int(0..<4)
                    let ldc: Int = N + rng.int(0..<4)
                    let strideA: Int = aRows * lda + rng.int(0..<8)
                    let strideB: Int = bRows * ldb + 5
                    let strideC: Int = M * ldc + 3
                    let A = rng.floats(batch * strideA), B = rng.floats(batch * strideB), C0 = rng.floats(batch * strideC)
                    let vc = try Dev.upload(C0)
                    let (alpha, beta): (Float, Float) = (0.75, -0.5)
                    try cpu.gemm(transA: transA, transB: transB, M: M, N: N, K: K, alpha: alpha,
                                 A: try Dev.upload(A), lda: lda, strideA: strideA, B: try Dev.upload(B), ldb: ldb, strideB: strideB,
                                 beta: beta, C: vc, ldc: ldc, strideC: strideC, batch: batch)
                    let got = try Dev.floats(vc, batch * strideC)
                    for i in 0..<batch {
                        let want = Ref.gemm(transA: transA, transB: transB, M: M, N: N, K: K, alpha: Double(alpha),
                                            A: A, aOffset: i * strideA, lda: lda, B: B, bOffset: i * strideB, ldb: ldb,
                                            beta: Double(beta), C: C0, cOffset: i * strideC, ldc: ldc)
                        var gotC: [Float] = []
                        for r in 0..<M {
                            let row: Int = i * strideC + r * ldc
                            gotC += got[row..<row + N]
                        }
                        assertClose(gotC, want, rtol: 1e-4, atol: 1e-5,
                                    "gemm M=\(M) N=\(N) K=\(K) transA=\(transA) transB=\(transB) batch \(i)")
                        // padding columns of C are left alone
                        for r in 0..<M {
                            let row: Int = i * strideC + r * ldc
                            let pad = row + N..<row + ldc
                            XCTAssertEqual(Array(got[pad]), Array(C0[pad]))
                        }
                    }
                }
            }
        }
    }

    func testEmptyProductsScaleCByBeta() throws {
        let c0: [Float] = [1, 2, 3, 4, 5, 6]
        let c = try Dev.upload(c0), a = try Dev.zeros(8)
        // K = 0: op(A) op(B) is a zero matrix, so C = beta C
        try cpu.gemm(transA: false, transB: false, M: 2, N: 3, K: 0, alpha: 1, A: a, lda: 1, strideA: 0, B: a, ldb: 3,
                     strideB: 0, beta: 0.5, C: c, ldc: 3, strideC: 6, batch: 1)
        XCTAssertEqual(try Dev.floats(c, 6), c0.map { $0 * 0.5 })
        // M = 0 or batch = 0: nothing to do
        try cpu.gemm(transA: false, transB: false, M: 0, N: 3, K: 2, alpha: 1, A: a, lda: 2, strideA: 0, B: a, ldb: 3,
                     strideB: 0, beta: 0, C: c, ldc: 3, strideC: 0, batch: 4)
        try cpu.gemm(transA: false, transB: false, M: 2, N: 3, K: 2, alpha: 1, A: a, lda: 2, strideA: 0, B: a, ldb: 3,
                     strideB: 0, beta: 0, C: c, ldc: 3, strideC: 6, batch: 0)
        XCTAssertEqual(try Dev.floats(c, 6), c0.map { $0 * 0.5 })
    }

    func testBadArgumentsThrowNamingGemmAndShapes() throws {
        let x = try Dev.zeros(100)
        func call(M: Int = 4, N: Int = 4, K: Int = 4, lda: Int = 4, ldb: Int = 4, ldc: Int = 4, batch: Int = 1,
                  strideC: Int = 16, transA: Bool = false) throws {
            try cpu.gemm(transA: transA, transB: false, M: M, N: N, K: K, alpha: 1, A: x, lda: lda, strideA: 16, B: x,
                         ldb: ldb, strideB: 16, beta: 0, C: x, ldc: ldc, strideC: strideC, batch: batch)
        }
        XCTAssertNoThrow(try call())
        for bad in [{ try call(lda: 3) }, { try call(ldb: 2) }, { try call(ldc: 3) }, { try call(M: -1) },
                    { try call(batch: 2, strideC: 4) }, { try call(batch: 7) }, { try call(M: 8, lda: 4, transA: true) }] {
            XCTAssertThrowsError(try bad()) { error in
                XCTAssertTrue("\(error)".hasPrefix("gemm:") && "\(error)".contains("K="), "\(error)")
            }
        }
    }
}
