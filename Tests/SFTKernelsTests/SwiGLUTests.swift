// SwiGLU: forward against the Double reference (including large |gate| where exp saturates),
// backward against finite differences.

import SFTKernels
import XCTest

final class SwiGLUTests: XCTestCase {
    let cpu = CPUBackend.shared

    func testForwardMatchesReference() throws {
        var rng = RNG(40)
        try forEachISA { isa in
            for n in [1, 7, 33, 576, 100_003] {
                var g = rng.floats(n, scale: 6)
                if n > 10 { g[0] = 90; g[1] = -90; g[2] = 30; g[3] = -30; g[4] = 0 }
                let u = rng.floats(n, scale: 2)
                let vh = try Dev.zeros(n)
                try cpu.swigluForward(gate: try Dev.upload(g), up: try Dev.upload(u), h: vh, count: n)
                assertClose(try Dev.floats(vh, n), Ref.swiglu(g.doubles, u.doubles), rtol: 2e-6, atol: 1e-7,
                            "swiglu \(isa) n=\(n)")
            }
        }
    }

    func testBackwardMatchesFiniteDifferences() throws {
        var rng = RNG(41)
        let n = 200
        let g = rng.floats(n, scale: 8), u = rng.floats(n, scale: 2), r = rng.floats(n)
        let vdg = try Dev.zeros(n), vdu = try Dev.zeros(n)
        try forEachISA { isa in
            try cpu.swigluBackward(dh: try Dev.upload(r), gate: try Dev.upload(g), up: try Dev.upload(u),
                                   dgate: vdg, dup: vdu, count: n)
            let all = Array(0..<n)
            assertGradient(try Dev.floats(vdg, n).doubles,
                           numericGradient(g.doubles, at: all) { dotLoss(Ref.swiglu($0, u.doubles), r) }, "swiglu dgate \(isa)")
            assertGradient(try Dev.floats(vdu, n).doubles,
                           numericGradient(u.doubles, at: all) { dotLoss(Ref.swiglu(g.doubles, $0), r) }, "swiglu dup \(isa)")
        }
    }
}
