// GELU and GeGLU, exact (erf) and tanh forms: forward against the Double formula, backward
// against central differences of it, with and without the `up` operand, on every instruction set.

import SFTKernels
import XCTest

final class GELUTests: XCTestCase {
    static func gelu(_ x: Double, tanhForm: Bool) -> Double {
        tanhForm ? 0.5 * x * (1 + tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x)))
                 : 0.5 * x * (1 + erf(x / 2.0.squareRoot()))
    }

    func testGELUAndGeGLUMatchTheFormulaAndItsDerivative() throws {
        var rng = RNG(17)
        let n = 1000
        let x = rng.floats(n, scale: 5), u = rng.floats(n, scale: 2), dy = rng.floats(n)
        try forEachISA { isa in
            for tanhForm in [false, true] {
                for gated in [false, true] {
                    let what = "\(isa) \(tanhForm ? "tanh" : "erf") \(gated ? "GeGLU" : "GELU")"
                    let cpu = CPUBackend.shared
                    let vx = try Dev.upload(x), vu = gated ? try Dev.upload(u) : nil, vy = try Dev.zeros(n)
                    try cpu.geluForward(x: vx, up: vu, y: vy, count: n, approximate: tanhForm)
                    let want = (0..<n).map { Self.gelu(Double(x[$0]), tanhForm: tanhForm) * (gated ? Double(u[$0]) : 1) }
                    assertClose(try Dev.floats(vy, n), want, rtol: 2e-6, atol: 2e-6, "\(what) forward")
                    let vdx = try Dev.zeros(n), vdu = gated ? try Dev.zeros(n) : nil
                    try cpu.geluBackward(dy: try Dev.upload(dy), x: vx, up: vu, dx: vdx, dup: vdu, count: n, approximate: tanhForm)
                    let h = 1e-5
                    let dxWant = (0..<n).map { i -> Double in
                        let xi = Double(x[i])
                        let d = (Self.gelu(xi + h, tanhForm: tanhForm) - Self.gelu(xi - h, tanhForm: tanhForm)) / (2 * h)
                        return Double(dy[i]) * d * (gated ? Double(u[i]) : 1)
                    }
                    assertClose(try Dev.floats(vdx, n), dxWant, rtol: 1e-4, atol: 1e-5, "\(what) dx")
                    if let vdu {
                        let duWant = (0..<n).map { Double(dy[$0]) * Self.gelu(Double(x[$0]), tanhForm: tanhForm) }
                        assertClose(try Dev.floats(vdu, n), duWant, rtol: 2e-6, atol: 2e-6, "\(what) du")
                    }
                }
            }
        }
    }
}
