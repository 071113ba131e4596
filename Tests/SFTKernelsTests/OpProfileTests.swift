// OpProfile: the CPU backend records each op's calls, time and (GEMMs) flops only while
// profiling is on, one row per GEMM shape.

import SFTKernels
import XCTest

final class OpProfileTests: XCTestCase {
    func testRecordsOpsOnlyWhileEnabled() throws {
        let cpu = CPUBackend.shared
        let a = try Dev.upload([Float](repeating: 1, count: 2 * 4)), b = try Dev.upload([Float](repeating: 2, count: 3 * 4))
        let c = try Dev.zeros(2 * 3)
        func gemm() throws {
            try cpu.gemm(transA: false, transB: true, M: 2, N: 3, K: 4, alpha: 1, A: a, lda: 4, strideA: 0,
                         B: b, ldb: 4, strideB: 0, beta: 0, C: c, ldc: 3, strideC: 0, batch: 1)
        }
        defer { OpProfile.enabled = false; OpProfile.reset() }
        OpProfile.reset()
        try gemm()
        XCTAssertTrue(OpProfile.entries.isEmpty, "profiling is off: nothing recorded")

        OpProfile.enabled = true
        try gemm(); try gemm()
        try cpu.add(c, c, into: c, count: 6)
        OpProfile.enabled = false
        try cpu.add(c, c, into: c, count: 6)

        let rows = Dictionary(uniqueKeysWithValues: OpProfile.entries.map { ($0.name, $0.entry) })
        XCTAssertEqual(Set(rows.keys), ["gemm 2×3×4 Bᵀ", "add"])
        XCTAssertEqual(rows["gemm 2×3×4 Bᵀ"]?.calls, 2)
        XCTAssertEqual(rows["gemm 2×3×4 Bᵀ"]?.flops, 2 * 2 * (2 * 3 * 4))
        XCTAssertEqual(rows["add"]?.calls, 1)
        XCTAssertGreaterThan(rows["add"]?.seconds ?? 0, 0)
        XCTAssertEqual(try Dev.floats(c, 6), [Float](repeating: 8 * 4, count: 6), "ops still compute while profiled")
    }
}
