// Fused LM head + cross-entropy: loss against the Double reference; dx and dweight against
// finite differences (with gradScale, dweight accumulating); every chunk size gives the
// unchunked answer; ignored tokens (-100) cost nothing; bad targets are errors naming the row.

import SFTKernels
import XCTest

final class CrossEntropyTests: XCTestCase {
    let cpu = CPUBackend.shared

    struct Result { var loss: Double, count: Int, dx: [Float], dw: [Float] }

    func run(x: [Float], w: [Float], targets: [Int32], N: Int, C: Int, V: Int, chunk: Int, gradScale: Float,
             dw0: [Float]) throws -> Result {
        let vdx = try Dev.upload([Float](repeating: .nan, count: N * C)), vdw = try Dev.upload(dw0)
        let (loss, count) = try cpu.crossEntropyLMHead(x: try Dev.upload(x), weight: try Dev.upload(w),
                                                       targets: try Dev.upload(targets), N: N, C: C, V: V,
                                                       ignoreIndex: -100, chunk: chunk, gradScale: gradScale,
                                                       dx: vdx, dweight: vdw)
        return Result(loss: loss, count: count, dx: try Dev.floats(vdx, N * C), dw: try Dev.floats(vdw, V * C))
    }

    func testLossAndGradientsMatchReferenceAndFiniteDifferences() throws {
        var rng = RNG(70)
        let (N, C, V) = (7, 6, 11)
        let x = rng.floats(N * C, scale: 2), w = rng.floats(V * C, scale: 2), dw0 = rng.floats(V * C)
        let targets: [Int32] = [3, -100, 0, 10, -100, 5, 5]
        let gradScale: Float = 0.37
        try forEachISA { isa in
            let got = try run(x: x, w: w, targets: targets, N: N, C: C, V: V, chunk: 3, gradScale: gradScale, dw0: dw0)
            let loss = { (x: [Double], w: [Double]) in Ref.lmHeadLoss(x: x, w: w, targets: targets, N: N, C: C, V: V, ignore: -100) }
            XCTAssertEqual(got.loss, loss(x.doubles, w.doubles), accuracy: 1e-5 * abs(got.loss), "loss \(isa)")
            XCTAssertEqual(got.count, 5)
            let nx = numericGradient(x.doubles, at: Array(0..<N * C)) { loss($0, w.doubles) }.map { $0 * Double(gradScale) }
            let nw = numericGradient(w.doubles, at: Array(0..<V * C)) { loss(x.doubles, $0) }.map { $0 * Double(gradScale) }
            assertGradient(got.dx.doubles, nx, "lm head dx \(isa)")
            assertGradient((0..<V * C).map { Double(got.dw[$0]) - Double(dw0[$0]) }, nw, "lm head dweight \(isa)")
            // ignored rows get exactly zero gradient
            XCTAssertEqual(Array(got.dx[C..<2 * C]), [Float](repeating: 0, count: C), "dx of an ignored row \(isa)")
        }
    }

    func testEveryChunkSizeGivesTheUnchunkedResult() throws {
        var rng = RNG(71)
        let (N, C, V) = (23, 33, 577)
        let x = rng.floats(N * C), w = rng.floats(V * C), dw0 = rng.floats(V * C)
        let targets = (0..<N).map { i in i % 4 == 1 ? Int32(-100) : Int32(rng.int(0..<V)) }
        let whole = try run(x: x, w: w, targets: targets, N: N, C: C, V: V, chunk: N, gradScale: 0.5, dw0: dw0)
        XCTAssertEqual(whole.loss, Ref.lmHeadLoss(x: x.doubles, w: w.doubles, targets: targets, N: N, C: C, V: V, ignore: -100),
                       accuracy: 1e-5 * whole.loss)
        for chunk in [1, 3, N, N + 10] {
            let got = try run(x: x, w: w, targets: targets, N: N, C: C, V: V, chunk: chunk, gradScale: 0.5, dw0: dw0)
            // OpenBLAS may sum a 1-row GEMM in another order: logits agree to f32 rounding.
            XCTAssertEqual(got.loss, whole.loss, accuracy: 1e-6 * whole.loss, "loss chunk=\(chunk)")
            XCTAssertEqual(got.count, whole.count)
            assertClose(got.dx, whole.dx.doubles, rtol: 1e-5, atol: 1e-7, "dx chunk=\(chunk)")
            assertClose(got.dw, whole.dw.doubles, rtol: 1e-5, atol: 1e-7, "dweight chunk=\(chunk)")
        }
        // Loss only (no gradients) is the same number.
        let (loss, count) = try cpu.crossEntropyLMHead(x: try Dev.upload(x), weight: try Dev.upload(w), targets: try Dev.upload(targets),
                                                       N: N, C: C, V: V, ignoreIndex: -100, chunk: 5, gradScale: 1, dx: nil, dweight: nil)
        XCTAssertEqual(loss, whole.loss, accuracy: 1e-6 * whole.loss)
        XCTAssertEqual(count, whole.count)
    }

    func testLargeVocabularyMatchesReference() throws {
        // Enough logits per chunk that the softmax rows are split over cores.
        var rng = RNG(74)
        let (N, C, V) = (40, 8, 5000)
        let x = rng.floats(N * C, scale: 2), w = rng.floats(V * C, scale: 2)
        let targets = (0..<N).map { i in i % 7 == 3 ? Int32(-100) : Int32(rng.int(0..<V)) }
        let got = try run(x: x, w: w, targets: targets, N: N, C: C, V: V, chunk: 32, gradScale: 1,
                          dw0: [Float](repeating: 0, count: V * C))
        let want = Ref.lmHeadLoss(x: x.doubles, w: w.doubles, targets: targets, N: N, C: C, V: V, ignore: -100)
        XCTAssertEqual(got.loss, want, accuracy: 1e-5 * want)
        // dx row i = sum_j (softmax_ij - onehot_ij) W_j, from the reference in Double
        for i in [0, 1, 2, 4, 39] {
            var z = [Double](repeating: 0, count: V)
            for j in 0..<V { for c in 0..<C { z[j] += Double(x[i * C + c]) * Double(w[j * C + c]) } }
            let m = z.max()!, sum = z.map { exp($0 - m) }.reduce(0, +)
            var dx = [Double](repeating: 0, count: C)
            for j in 0..<V {
                let g = exp(z[j] - m) / sum - (j == Int(targets[i]) ? 1 : 0)
                for c in 0..<C { dx[c] += g * Double(w[j * C + c]) }
            }
            assertClose(Array(got.dx[i * C..<(i + 1) * C]), dx, rtol: 1e-3, atol: 1e-5, "dx row \(i)")
        }
    }

    func testAllIgnoredAndBadTargets() throws {
        let (N, C, V) = (3, 4, 5)
        var rng = RNG(72)
        let x = rng.floats(N * C), w = rng.floats(V * C), dw0 = rng.floats(V * C)
        let none = try run(x: x, w: w, targets: [-100, -100, -100], N: N, C: C, V: V, chunk: 2, gradScale: 1, dw0: dw0)
        XCTAssertEqual(none.loss, 0)
        XCTAssertEqual(none.count, 0)
        XCTAssertEqual(none.dx, [Float](repeating: 0, count: N * C))
        XCTAssertEqual(none.dw, dw0)
        XCTAssertThrowsError(try run(x: x, w: w, targets: [0, 5, 1], N: N, C: C, V: V, chunk: 2, gradScale: 1, dw0: dw0)) {
            XCTAssertTrue("\($0)".contains("row 1"), "\($0)")
        }
    }

    func testScratchMemoryDependsOnChunkNotTokens() throws {
        let backend = CPUBackend()
        let (C, V) = (16, 1000)
        func peak(N: Int) throws -> Int {
            var rng = RNG(73)
            let x = try backend.allocate(bytes: N * C * 4), w = try backend.allocate(bytes: V * C * 4)
            let t = try backend.allocate(bytes: N * 4)
            try backend.upload(rng.floats(N * C), to: BufferView(x), bytes: N * C * 4)
            try backend.upload(rng.floats(V * C), to: BufferView(w), bytes: V * C * 4)
            try backend.upload((0..<N).map { Int32($0 % V) }, to: BufferView(t), bytes: N * 4)
            backend.resetPeakMemory()
            let before = backend.memoryStats.currentBytes
            _ = try backend.crossEntropyLMHead(x: BufferView(x), weight: BufferView(w), targets: BufferView(t), N: N, C: C,
                                               V: V, ignoreIndex: -100, chunk: 8, gradScale: 1, dx: nil, dweight: nil)
            return backend.memoryStats.peakBytes - before
        }
        let small = try peak(N: 64), large = try peak(N: 4096)
        XCTAssertEqual(small, large, "scratch for 64 vs 4096 tokens")
        XCTAssertLessThan(large, 64 * V * 4, "scratch must be far below N × V floats")
    }
}
