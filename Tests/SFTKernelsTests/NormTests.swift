// RMSNorm and LayerNorm (with and without bias): forward against the Double reference, backward
// (dx, dweight, dbias) against central differences of the reference, including sizes large
// enough to be split over cores (rows for dx, columns for dweight).

import SFTKernels
import XCTest

final class NormTests: XCTestCase {
    let cpu = CPUBackend.shared
    let eps: Float = 1e-5
    let shapes = [(N: 1, C: 7), (N: 5, C: 33), (N: 3, C: 576), (N: 130, C: 576)]

    func testRMSNormForwardMatchesReference() throws {
        var rng = RNG(10)
        try forEachISA { isa in
            for (N, C) in shapes {
                let x = rng.floats(N * C, scale: 2), w = rng.floats(C)
                let vy = try Dev.zeros(N * C), vr = try Dev.zeros(N)
                try cpu.rmsnormForward(x: try Dev.upload(x), weight: try Dev.upload(w), y: vy, rstd: vr, N: N, C: C, eps: eps)
                assertClose(try Dev.floats(vy, N * C), Ref.rmsnorm(x.doubles, w.doubles, N: N, C: C, eps: Double(eps)),
                            rtol: 1e-5, atol: 1e-6, "rmsnorm \(isa) N=\(N) C=\(C)")
            }
        }
    }

    func testRMSNormBackwardMatchesFiniteDifferences() throws {
        var rng = RNG(11)
        try forEachISA { isa in
            for (N, C) in shapes {
                let x = rng.floats(N * C, scale: 2), w = rng.floats(C), r = rng.floats(N * C)
                let dw0 = rng.floats(C)   // backward accumulates into dweight
                let vx = try Dev.upload(x), vw = try Dev.upload(w)
                let vy = try Dev.zeros(N * C), vr = try Dev.zeros(N), vdx = try Dev.zeros(N * C), vdw = try Dev.upload(dw0)
                try cpu.rmsnormForward(x: vx, weight: vw, y: vy, rstd: vr, N: N, C: C, eps: eps)
                try cpu.rmsnormBackward(dy: try Dev.upload(r), x: vx, weight: vw, rstd: vr, dx: vdx, dweight: vdw, N: N, C: C)
                let xi = rng.indices(40, of: N * C), wi = rng.indices(40, of: C)
                let nx = numericGradient(x.doubles, at: xi) { dotLoss(Ref.rmsnorm($0, w.doubles, N: N, C: C, eps: Double(self.eps)), r) }
                let nw = numericGradient(w.doubles, at: wi) { dotLoss(Ref.rmsnorm(x.doubles, $0, N: N, C: C, eps: Double(self.eps)), r) }
                let dx = try Dev.floats(vdx, N * C), dw = try Dev.floats(vdw, C)
                assertGradient(xi.map { Double(dx[$0]) }, nx, "rmsnorm dx \(isa) N=\(N) C=\(C)")
                assertGradient(wi.map { Double(dw[$0]) - Double(dw0[$0]) }, nw, "rmsnorm dweight \(isa) N=\(N) C=\(C)")
            }
        }
    }

    func testLayerNormForwardMatchesReference() throws {
        var rng = RNG(12)
        try forEachISA { isa in
            for (N, C) in shapes {
                for withBias in [false, true] {
                    let x = rng.floats(N * C, scale: 3).map { $0 + 1.5 }, w = rng.floats(C), b = rng.floats(C)
                    let vy = try Dev.zeros(N * C), vm = try Dev.zeros(N), vr = try Dev.zeros(N)
                    try cpu.layernormForward(x: try Dev.upload(x), weight: try Dev.upload(w), bias: withBias ? try Dev.upload(b) : nil,
                                             y: vy, mean: vm, rstd: vr, N: N, C: C, eps: eps)
                    assertClose(try Dev.floats(vy, N * C),
                                Ref.layernorm(x.doubles, w.doubles, withBias ? b.doubles : nil, N: N, C: C, eps: Double(eps)),
                                rtol: 1e-4, atol: 1e-5, "layernorm \(isa) N=\(N) C=\(C) bias=\(withBias)")
                }
            }
        }
    }

    func testLayerNormBackwardMatchesFiniteDifferences() throws {
        var rng = RNG(13)
        try forEachISA { isa in
            for (N, C) in shapes {
                for withBias in [false, true] {
                    let x = rng.floats(N * C, scale: 3).map { $0 + 0.5 }, w = rng.floats(C), b = rng.floats(C), r = rng.floats(N * C)
                    let dw0 = rng.floats(C), db0 = rng.floats(C)
                    let vx = try Dev.upload(x), vw = try Dev.upload(w), vb = withBias ? try Dev.upload(b) : nil
                    let vy = try Dev.zeros(N * C), vm = try Dev.zeros(N), vr = try Dev.zeros(N), vdx = try Dev.zeros(N * C)
                    let vdw = try Dev.upload(dw0), vdb = withBias ? try Dev.upload(db0) : nil
                    try cpu.layernormForward(x: vx, weight: vw, bias: vb, y: vy, mean: vm, rstd: vr, N: N, C: C, eps: eps)
                    try cpu.layernormBackward(dy: try Dev.upload(r), x: vx, weight: vw, mean: vm, rstd: vr, dx: vdx,
                                              dweight: vdw, dbias: vdb, N: N, C: C)
                    let bias = withBias ? b.doubles : nil
                    func loss(_ x: [Double], _ w: [Double], _ b: [Double]?) -> Double {
                        dotLoss(Ref.layernorm(x, w, b, N: N, C: C, eps: Double(eps)), r)
                    }
                    let xi = rng.indices(40, of: N * C), wi = rng.indices(40, of: C)
                    let dx = try Dev.floats(vdx, N * C), dw = try Dev.floats(vdw, C)
                    let tag = "\(isa) N=\(N) C=\(C) bias=\(withBias)"
                    assertGradient(xi.map { Double(dx[$0]) }, numericGradient(x.doubles, at: xi) { loss($0, w.doubles, bias) }, "layernorm dx \(tag)")
                    assertGradient(wi.map { Double(dw[$0]) - Double(dw0[$0]) },
                                   numericGradient(w.doubles, at: wi) { loss(x.doubles, $0, bias) }, "layernorm dweight \(tag)")
                    if let vdb {
                        let db = try Dev.floats(vdb, C)
                        assertGradient(wi.map { Double(db[$0]) - Double(db0[$0]) },
                                       numericGradient(b.doubles, at: wi) { loss(x.doubles, w.doubles, $0) }, "layernorm dbias \(tag)")
                    }
                }
            }
        }
    }

    func testFrozenWeightsNeedNoGradientBuffer() throws {
        var rng = RNG(14)
        let (N, C) = (4, 9)
        let x = try Dev.upload(rng.floats(N * C)), w = try Dev.upload(rng.floats(C)), dy = try Dev.upload(rng.floats(N * C))
        let y = try Dev.zeros(N * C), r = try Dev.zeros(N), m = try Dev.zeros(N), dx = try Dev.zeros(N * C)
        try cpu.rmsnormForward(x: x, weight: w, y: y, rstd: r, N: N, C: C, eps: eps)
        try cpu.rmsnormBackward(dy: dy, x: x, weight: w, rstd: r, dx: dx, dweight: nil, N: N, C: C)
        try cpu.layernormForward(x: x, weight: w, bias: nil, y: y, mean: m, rstd: r, N: N, C: C, eps: eps)
        try cpu.layernormBackward(dy: dy, x: x, weight: w, mean: m, rstd: r, dx: dx, dweight: nil, dbias: nil, N: N, C: C)
        XCTAssertThrowsError(try cpu.rmsnormForward(x: x, weight: w, y: y, rstd: r, N: N + 1, C: C, eps: eps)) {
            XCTAssertTrue("\($0)".contains("rmsnormForward") && "\($0)".contains("N=5"), "\($0)")
        }
    }
}
