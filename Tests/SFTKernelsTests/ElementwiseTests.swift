// Elementwise ops (fill, add, axpy, scale, mul, sum of squares) against Double references,
// on lengths that leave vector tails and on lengths long enough to be split over cores.

import SFTKernels
import XCTest

final class ElementwiseTests: XCTestCase {
    let cpu = CPUBackend.shared
    let lengths = [0, 1, 7, 33, 1000, 300_007]

    func testElementwiseOpsMatchReference() throws {
        var rng = RNG(1)
        try forEachISA { isa in
            for n in lengths {
                let a = rng.floats(n), b = rng.floats(n)
                let (va, vb, vy) = (try Dev.upload(a), try Dev.upload(b), try Dev.zeros(n))
                let tag = "\(isa) n=\(n)"

                try cpu.fill(vy, value: 2.5, count: n)
                assertClose(try Dev.floats(vy, n), [Double](repeating: 2.5, count: n), "fill \(tag)")

                try cpu.add(va, vb, into: vy, count: n)
                assertClose(try Dev.floats(vy, n), (0..<n).map { Double(a[$0]) + Double(b[$0]) }, "add \(tag)")

                try cpu.mul(va, vb, into: vy, count: n)
                assertClose(try Dev.floats(vy, n), (0..<n).map { Double(a[$0]) * Double(b[$0]) }, "mul \(tag)")

                try cpu.scale(alpha: -1.5, va, into: vy, count: n)
                assertClose(try Dev.floats(vy, n), a.map { -1.5 * Double($0) }, "scale \(tag)")

                try cpu.upload(b, to: vy, bytes: n * 4)
                try cpu.axpy(alpha: 0.25, va, vy, count: n)
                assertClose(try Dev.floats(vy, n), (0..<n).map { Double(b[$0]) + 0.25 * Double(a[$0]) }, "axpy \(tag)")

                // In place: y = y + b
                try cpu.add(vy, vb, into: vy, count: n)
                assertClose(try Dev.floats(vy, n), (0..<n).map { 2 * Double(b[$0]) + 0.25 * Double(a[$0]) },
                            rtol: 1e-5, atol: 1e-6, "add in place \(tag)")

                let ss = try cpu.sumOfSquares(va, count: n)
                let want = a.reduce(0.0) { $0 + Double($1) * Double($1) }
                XCTAssertEqual(ss, want, accuracy: 1e-9 * max(1, want), "sumOfSquares \(tag)")
            }
        }
    }

    func testOutOfBoundsViewsThrowNamingTheOp() throws {
        let small = try Dev.zeros(10)
        XCTAssertThrowsError(try cpu.add(small, small, into: small, count: 11)) { error in
            XCTAssertTrue("\(error)".hasPrefix("add:"), "\(error)")
        }
        XCTAssertThrowsError(try cpu.fill(small.advanced(byBytes: 2), value: 0, count: 1))
    }
}
