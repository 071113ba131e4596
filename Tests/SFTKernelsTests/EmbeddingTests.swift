// Embedding: gather against the reference, ids outside the table are an error naming the row,
// and the scatter-add backward (repeated ids accumulate) matches finite differences.

import SFTKernels
import XCTest

final class EmbeddingTests: XCTestCase {
    let cpu = CPUBackend.shared

    func testGatherMatchesReferenceAndRejectsBadIds() throws {
        var rng = RNG(50)
        let (N, C, V) = (37, 33, 11)
        let table = rng.floats(V * C), ids = (0..<N).map { _ in Int32(rng.int(0..<V)) }
        let vt = try Dev.upload(table), vo = try Dev.zeros(N * C)
        try cpu.embeddingForward(ids: try Dev.upload(ids), table: vt, out: vo, N: N, C: C, V: V)
        XCTAssertEqual(try Dev.floats(vo, N * C), Ref.embedding(ids: ids, table: table.doubles, C: C).map { Float($0) })
        var bad = ids
        bad[5] = Int32(V)
        XCTAssertThrowsError(try cpu.embeddingForward(ids: try Dev.upload(bad), table: vt, out: vo, N: N, C: C, V: V)) {
            XCTAssertTrue("\($0)".contains("row 5"), "\($0)")
        }
        XCTAssertThrowsError(try cpu.embeddingBackward(ids: try Dev.upload(bad), dout: vo, dtable: vt, N: N, C: C))
    }

    func testScatterAddMatchesFiniteDifferences() throws {
        var rng = RNG(51)
        let (N, C, V) = (9, 7, 4)
        let table = rng.floats(V * C), r = rng.floats(N * C), d0 = rng.floats(V * C)
        let ids: [Int32] = [3, 1, 3, 3, 0, 1, 2, 3, 1]
        let vdt = try Dev.upload(d0)
        try forEachISA { isa in
            try cpu.upload(d0, to: vdt, bytes: d0.count * 4)
            try cpu.embeddingBackward(ids: try Dev.upload(ids), dout: try Dev.upload(r), dtable: vdt, N: N, C: C)
            let got = try Dev.floats(vdt, V * C)
            let numeric = numericGradient(table.doubles, at: Array(0..<V * C)) { dotLoss(Ref.embedding(ids: ids, table: $0, C: C), r) }
            assertGradient((0..<V * C).map { Double(got[$0]) - Double(d0[$0]) }, numeric, "embedding dtable \(isa)")
        }
    }
}
