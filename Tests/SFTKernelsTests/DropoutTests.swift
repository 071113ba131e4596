// Dropout: the mask is the documented counter hash of (seed, offset + i), the same however the
// array is split into calls; y = x * mask / (1 - p); and backward (the same call on dy) is the
// exact gradient.

import SFTKernels
import XCTest

final class DropoutTests: XCTestCase {
    let cpu = CPUBackend.shared

    func testMaskIsTheDocumentedHashAndScalesKeptValues() throws {
        var rng = RNG(3)
        let n = 100_003, p: Float = 0.3, seed: UInt64 = 0x1234_5678_9abc_def0, offset: UInt64 = (1 << 32) - 50_000
        let x = rng.floats(n)
        let vx = try Dev.upload(x), vy = try Dev.zeros(n), vm = try Dev.bytes(n)
        try forEachISA { isa in
            try cpu.dropout(vx, into: vy, mask: vm, count: n, p: p, seed: seed, offset: offset)
            let y = try Dev.floats(vy, n), mask = try Dev.bytes(vm, n)
            let want = (0..<n).map { Ref.dropoutKeep(seed: seed, index: offset + UInt64($0), p: p) }
            XCTAssertEqual(mask.map { $0 == 1 }, want, "mask \(isa) (offset crosses 2^32)")
            assertClose(y, (0..<n).map { want[$0] ? Double(x[$0]) / (1 - Double(p)) : 0 }, rtol: 1e-6, "y \(isa)")
            let kept = Double(mask.reduce(0) { $0 + Int($1) }) / Double(n)
            XCTAssertEqual(kept, 1 - Double(p), accuracy: 4 * (0.21 / Double(n)).squareRoot(), "kept fraction \(isa)")
        }
    }

    func testSplittingTheArrayDrawsTheSameMask() throws {
        var rng = RNG(4)
        let n = 5000, cut = 1234, seed: UInt64 = 99
        let x = rng.floats(n)
        let vx = try Dev.upload(x), whole = try Dev.zeros(n), parts = try Dev.zeros(n)
        try cpu.dropout(vx, into: whole, mask: nil, count: n, p: 0.5, seed: seed, offset: 7)
        try cpu.dropout(vx, into: parts, mask: nil, count: cut, p: 0.5, seed: seed, offset: 7)
        try cpu.dropout(vx.advanced(byBytes: cut * 4), into: parts.advanced(byBytes: cut * 4), mask: nil,
                        count: n - cut, p: 0.5, seed: seed, offset: 7 + UInt64(cut))
        XCTAssertEqual(try Dev.floats(whole, n), try Dev.floats(parts, n))
        // A different seed draws a different mask.
        try cpu.dropout(vx, into: parts, mask: nil, count: n, p: 0.5, seed: seed + 1, offset: 7)
        XCTAssertNotEqual(try Dev.floats(whole, n), try Dev.floats(parts, n))
    }

    func testBackwardIsTheSameCallOnTheGradient() throws {
        var rng = RNG(5)
        let n = 64, p: Float = 0.25, seed: UInt64 = 11
        let x = rng.floats(n), r = rng.floats(n)
        // analytic: dL/dx for L = sum(dropout(x) * r) is dropout(r) with the same seed and offset
        let vr = try Dev.upload(r), vdx = try Dev.zeros(n)
        try cpu.dropout(vr, into: vdx, mask: nil, count: n, p: p, seed: seed, offset: 0)
        let analytic = try Dev.floats(vdx, n).doubles
        let numeric = numericGradient(x.doubles, at: Array(0..<n)) { xs in
            dotLoss(xs.enumerated().map { i, v in
                Ref.dropoutKeep(seed: seed, index: UInt64(i), p: p) ? v / (1 - Double(p)) : 0
            }, r)
        }
        assertGradient(analytic, numeric, "dropout dx")
        XCTAssertThrowsError(try cpu.dropout(vr, into: vdx, mask: nil, count: n, p: 1, seed: 0, offset: 0))
    }
}
