// AdamW: several steps against the Double reference (moments, bias correction, decoupled
// weight decay).

import SFTKernels
import XCTest

final class AdamWTests: XCTestCase {
    func testSeveralStepsMatchReference() throws {
        let cpu = CPUBackend.shared
        var rng = RNG(60)
        let n = 100_003
        try forEachISA { isa in
            let p0 = rng.floats(n)
            var (p, m, v) = (p0.doubles, [Double](repeating: 0, count: n), [Double](repeating: 0, count: n))
            let vp = try Dev.upload(p0), vm = try Dev.zeros(n), vv = try Dev.zeros(n)
            for step in 1...5 {
                let g = rng.floats(n, scale: step == 3 ? 100 : 0.01)
                let s = AdamWStep(lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step: step)
                try cpu.adamw(param: vp, grad: try Dev.upload(g), m: vm, v: vv, count: n, step: s)
                // The kernel gets f32 hyper-parameters (0.999 is 0.99899995 in f32): so does the reference.
                Ref.adamw(p: &p, g: g.doubles, m: &m, v: &v, lr: Double(s.lr), b1: Double(s.beta1), b2: Double(s.beta2),
                          eps: Double(s.eps), wd: Double(s.weightDecay), step: step)
                assertClose(try Dev.floats(vp, n), p, rtol: 1e-5, atol: 1e-6, "adamw param \(isa) step \(step)")
                assertClose(try Dev.floats(vm, n), m, rtol: 1e-5, atol: 1e-7, "adamw m \(isa) step \(step)")
                assertClose(try Dev.floats(vv, n), v, rtol: 1e-5, atol: 1e-9, "adamw v \(isa) step \(step)")
            }
        }
    }
}
