// Final-logit softcapping (Gemma 2) in the fused LM head + cross-entropy: with y = cap tanh(x Wᵀ / cap),
// loss = logsumexp(y) − y[target]. The loss against a naive Double reference written out here;
// dx and dweight against its finite differences (gradScale applied, dweight accumulating), on
// every instruction set; chunking does not change the result; a softcap changes the loss.

import SFTKernels
import XCTest

final class SoftcapCrossEntropyTests: XCTestCase {
    let cpu = CPUBackend.shared

    /// Sum over rows with target != ignore of logsumexp(y) − y[target], y = cap tanh(x Wᵀ / cap).
    static func reference(x: [Double], w: [Double], targets: [Int32], N: Int, C: Int, V: Int, cap: Double) -> Double {
        var loss = 0.0
        for n in 0..<N where targets[n] != -100 {
            var y = [Double](repeating: 0, count: V)
            for j in 0..<V {
                var z = 0.0
                for c in 0..<C { z += x[n * C + c] * w[j * C + c] }
                y[j] = cap * tanh(z / cap)
            }
            let m = y.max()!
            loss += m + log(y.map { exp($0 - m) }.reduce(0, +)) - y[Int(targets[n])]
        }
        return loss
    }

    func run(x: [Float], w: [Float], targets: [Int32], N: Int, C: Int, V: Int, chunk: Int, gradScale: Float, cap: Float,
             dw0: [Float]) throws -> (loss: Double, count: Int, dx: [Float], dw: [Float]) {
        let vdx = try Dev.upload([Float](repeating: .nan, count: N * C)), vdw = try Dev.upload(dw0)
        let (loss, count) = try cpu.crossEntropyLMHead(x: try Dev.upload(x), weight: try Dev.upload(w),
                                                       targets: try Dev.upload(targets), N: N, C: C, V: V,
                                                       ignoreIndex: -100, chunk: chunk, gradScale: gradScale, softcap: cap,
                                                       dx: vdx, dweight: vdw)
        return (loss, count, try Dev.floats(vdx, N * C), try Dev.floats(vdw, V * C))
    }

    func testSoftcappedLossAndGradientsMatchReferenceAndFiniteDifferences() throws {
        var rng = RNG(150)
        let (N, C, V) = (7, 6, 11)
        let x = rng.floats(N * C, scale: 2), w = rng.floats(V * C, scale: 2), dw0 = rng.floats(V * C)
        let targets: [Int32] = [3, -100, 0, 10, -100, 5, 5]
        let gradScale: Float = 0.37, cap: Float = 1.7
        try forEachISA { isa in
            let got = try run(x: x, w: w, targets: targets, N: N, C: C, V: V, chunk: 3, gradScale: gradScale, cap: cap, dw0: dw0)
            let loss = { (x: [Double], w: [Double]) in
                Self.reference(x: x, w: w, targets: targets, N: N, C: C, V: V, cap: Double(cap))
            }
            XCTAssertEqual(got.loss, loss(x.doubles, w.doubles), accuracy: 1e-5 * abs(got.loss), "loss \(isa)")
            XCTAssertEqual(got.count, 5)
            let nx = numericGradient(x.doubles, at: Array(0..<N * C)) { loss($0, w.doubles) }.map { $0 * Double(gradScale) }
            let nw = numericGradient(w.doubles, at: Array(0..<V * C)) { loss(x.doubles, $0) }.map { $0 * Double(gradScale) }
            assertGradient(got.dx.doubles, nx, "softcapped lm head dx \(isa)")
            assertGradient((0..<V * C).map { Double(got.dw[$0]) - Double(dw0[$0]) }, nw, "softcapped lm head dweight \(isa)")
            XCTAssertEqual(Array(got.dx[C..<2 * C]), [Float](repeating: 0, count: C), "dx of an ignored row \(isa)")
            let uncapped = try run(x: x, w: w, targets: targets, N: N, C: C, V: V, chunk: 3, gradScale: gradScale, cap: 0, dw0: dw0)
            XCTAssertGreaterThan(abs(uncapped.loss - got.loss), 0.1 * abs(got.loss), "the softcap changes the loss \(isa)")
        }
    }

    func testChunksAndLossOnlyAgree() throws {
        var rng = RNG(151)
        let (N, C, V) = (23, 33, 577)
        let x = rng.floats(N * C), w = rng.floats(V * C), dw0 = rng.floats(V * C)
        let targets = (0..<N).map { i in i % 4 == 1 ? Int32(-100) : Int32(rng.int(0..<V)) }
        let whole = try run(x: x, w: w, targets: targets, N: N, C: C, V: V, chunk: N, gradScale: 0.5, cap: 3, dw0: dw0)
        XCTAssertEqual(whole.loss, Self.reference(x: x.doubles, w: w.doubles, targets: targets, N: N, C: C, V: V, cap: 3),
                       accuracy: 1e-5 * whole.loss)
        let got = try run(x: x, w: w, targets: targets, N: N, C: C, V: V, chunk: 4, gradScale: 0.5, cap: 3, dw0: dw0)
        XCTAssertEqual(got.loss, whole.loss, accuracy: 1e-6 * whole.loss)
        assertClose(got.dx, whole.dx.doubles, rtol: 1e-5, atol: 1e-7, "dx chunk=4")
        assertClose(got.dw, whole.dw.doubles, rtol: 1e-5, atol: 1e-7, "dweight chunk=4")
        let (loss, _) = try cpu.crossEntropyLMHead(x: try Dev.upload(x), weight: try Dev.upload(w), targets: try Dev.upload(targets),
                                                   N: N, C: C, V: V, ignoreIndex: -100, chunk: 5, gradScale: 1, softcap: 3,
                                                   dx: nil, dweight: nil)
        XCTAssertEqual(loss, whole.loss, accuracy: 1e-6 * whole.loss)
        XCTAssertThrowsError(try cpu.crossEntropyLMHead(x: try Dev.upload(x), weight: try Dev.upload(w), targets: try Dev.upload(targets),
                                                        N: N, C: C, V: V, ignoreIndex: -100, chunk: 5, gradScale: 1, softcap: -1,
                                                        dx: nil, dweight: nil))
    }
}
