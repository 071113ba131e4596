// Storage casts: bf16 and f16 against the definitions (round to nearest, ties to even;
// overflow to infinity; NaN stays NaN), exhaustively for the 16-bit to f32 direction.

import SFTKernels
import XCTest

final class CastTests: XCTestCase {
    let cpu = CPUBackend.shared

    /// Values that probe rounding: exact ties (even and odd), just above/below ties, the largest
    /// finite values, overflow, subnormals, zeros, infinities, NaN.
    func probes() -> [Float] {
        var xs: [Float] = [0, -0, 1, -1, .infinity, -.infinity, .nan, .greatestFiniteMagnitude,
                           -.greatestFiniteMagnitude, .leastNonzeroMagnitude, .leastNormalMagnitude,
                           65504, 65519.99, 65520, 65536, -65520, 6.0e-8, 2.98e-8, 2.99e-8, 1e-7, 6.1e-5,
                           Float(bitPattern: 0x7f7f_8000), Float(bitPattern: 0x7f7f_7fff),
                           Float(bitPattern: 0x3f80_8000), Float(bitPattern: 0x3f81_8000),
                           Float(bitPattern: 0x3f80_8001), Float(bitPattern: 0x3f80_7fff),
                           Float(bitPattern: 0x3f80_1000), Float(bitPattern: 0x3f80_3000),
                           Float(bitPattern: 0x3380_0000), Float(bitPattern: 0x3300_0000),
                           Float(bitPattern: 0x3300_0001), Float(bitPattern: 0x7fc0_0001)]
        var rng = RNG(7)
        for _ in 0..<120_000 { xs.append(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))) }   // > 2 cores' grain
        for _ in 0..<20_000 { xs.append(rng.float(70000)) }
        for _ in 0..<5_000 { xs.append(rng.float(1e-4)) }
        return xs
    }

    func testBF16RoundsToNearestEven() throws {
        let xs = probes()
        let vx = try Dev.upload(xs), vh = try Dev.bytes(xs.count * 2)
        try forEachISA { isa in
            try cpu.cast(vx, from: .f32, into: vh, to: .bf16, count: xs.count)
            let got = try Dev.halves(vh, xs.count)
            var bad: [String] = []
            for (i, x) in xs.enumerated() {
                let want = Ref.bf16(x)
                let ok = x.isNaN ? (got[i] & 0x7f80 == 0x7f80 && got[i] & 0x7f != 0 && got[i] & 0x8000 == want & 0x8000)
                                 : got[i] == want
                if !ok && bad.count < 5 { bad.append("\(x) (0x\(String(x.bitPattern, radix: 16))): got 0x\(String(got[i], radix: 16)) want 0x\(String(want, radix: 16))") }
            }
            XCTAssertTrue(bad.isEmpty, "f32->bf16 \(isa): \(bad)")
        }
    }

    func testF16RoundsToNearestEven() throws {
        let xs = probes()
        let vx = try Dev.upload(xs), vh = try Dev.bytes(xs.count * 2)
        try forEachISA { isa in
            try cpu.cast(vx, from: .f32, into: vh, to: .f16, count: xs.count)
            let got = try Dev.halves(vh, xs.count)
            var bad: [String] = []
            for (i, x) in xs.enumerated() {
                let want = Float16(x).bitPattern   // Swift's conversion: IEEE round to nearest even
                let ok = x.isNaN ? Float16(bitPattern: got[i]).isNaN : got[i] == want
                if !ok && bad.count < 5 { bad.append("\(x) (0x\(String(x.bitPattern, radix: 16))): got 0x\(String(got[i], radix: 16)) want 0x\(String(want, radix: 16))") }
            }
            XCTAssertTrue(bad.isEmpty, "f32->f16 \(isa): \(bad)")
        }
    }

    func testEvery16BitPatternWidensExactly() throws {
        let all = (0...0xffff).map { UInt16($0) }
        let vh = try Dev.upload(all), vf = try Dev.zeros(all.count), vback = try Dev.bytes(all.count * 2)
        try forEachISA { isa in
            try cpu.cast(vh, from: .f16, into: vf, to: .f32, count: all.count)
            var got = try Dev.floats(vf, all.count)
            var bad = all.indices.filter { i in
                let w = Float(Float16(bitPattern: all[i]))
                return !(got[i].bitPattern == w.bitPattern || (got[i].isNaN && w.isNaN))
            }
            XCTAssertTrue(bad.isEmpty, "f16->f32 \(isa): first bad patterns \(bad.prefix(5))")
            // and back again: every f16 survives the round trip bit for bit (NaN: stays NaN)
            try cpu.cast(vf, from: .f32, into: vback, to: .f16, count: all.count)
            var back = try Dev.halves(vback, all.count)
            bad = all.indices.filter { back[$0] != all[$0] && !Float16(bitPattern: all[$0]).isNaN }
            XCTAssertTrue(bad.isEmpty, "f16 round trip \(isa): first bad \(bad.prefix(5))")

            try cpu.cast(vh, from: .bf16, into: vf, to: .f32, count: all.count)
            got = try Dev.floats(vf, all.count)
            bad = all.indices.filter { got[$0].bitPattern != UInt32(all[$0]) << 16 }
            XCTAssertTrue(bad.isEmpty, "bf16->f32 \(isa): first bad \(bad.prefix(5))")
            try cpu.cast(vf, from: .f32, into: vback, to: .bf16, count: all.count)
            back = try Dev.halves(vback, all.count)
            bad = all.indices.filter { back[$0] != all[$0] && !Float(bitPattern: UInt32(all[$0]) << 16).isNaN }
            XCTAssertTrue(bad.isEmpty, "bf16 round trip \(isa): first bad \(bad.prefix(5))")
        }
    }

    func testBF16ToF16GoesThroughF32() throws {
        let xs: [Float] = [1, -2.5, 65504, 1e6, 3.0e-6, .infinity]
        let bf = xs.map(Ref.bf16)
        let vb = try Dev.upload(bf), vh = try Dev.bytes(xs.count * 2)
        try cpu.cast(vb, from: .bf16, into: vh, to: .f16, count: xs.count)
        let got = try Dev.halves(vh, xs.count)
        XCTAssertEqual(got, bf.map { Float16(Float(bitPattern: UInt32($0) << 16)).bitPattern })
        XCTAssertThrowsError(try cpu.cast(vb, from: .i32, into: vh, to: .f32, count: 1))
    }
}
