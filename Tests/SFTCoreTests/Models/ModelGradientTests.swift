// Model-level autograd: gradients through a whole (tiny) Llama match finite differences, and
// the training invariants the trainer relies on hold — packing, accumulation, checkpointing.
import XCTest
import SFTCore
import SFTKernels

final class ModelGradientTests: XCTestCase {
    let be = CPUBackend.shared

    /// When set, the losses and gradients are computed in training mode (dropout) on this stream.
    var stream: RandomStream? = nil
    /// When set, every loss evaluation draws the same dropout masks (finite differences with dropout).
    var fixedDropoutOffset: UInt64? = nil

    func inMode<R>(_ body: () throws -> R) rethrows -> R {
        guard let stream else { return try body() }
        if let o = fixedDropoutOffset { stream.offset = o }
        return try Autograd.training(stream, body)
    }

    func lossValue(_ m: LlamaModel, _ ids: [Int32]) throws -> Double {
        let input = try ModelInput(tokens: ids, on: be)
        let targets = try Tensor(ints: Array(ids.dropFirst()) + [-100], shape: [ids.count], on: be)
        return Double(try inMode { try Autograd.withNoGrad { try m.loss(input, targets: targets).loss.item() } })
    }

    func gradients(_ m: LlamaModel, _ ids: [Int32], checkpointing: Bool = false) throws -> [String: [Float]] {
        m.zeroGrad()
        let input = try ModelInput(tokens: ids, on: be)
        let targets = try Tensor(ints: Array(ids.dropFirst()) + [-100], shape: [ids.count], on: be)
        try inMode {
            let (l, _) = try m.loss(input, targets: targets, checkpointing: checkpointing)
            try Autograd.backward(l)
        }
        var g: [String: [Float]] = [:]
        for (n, p) in m.trainableParameters { g[n] = try p.value.grad?.floats() ?? [Float](repeating: 0, count: p.value.count) }
        return g
    }

    /// Central differences on a few entries of each trainable parameter.
    func checkFiniteDifferences(_ m: LlamaModel, _ ids: [Int32], probes: Int = 3) throws {
        let g = try gradients(m, ids)
        var rng = SeededRandom(seed: 3)
        var checked = 0
        for (name, p) in m.trainableParameters {
            var w = try p.value.floats()
            for _ in 0..<probes {
                let i = Int(rng.next() % UInt64(w.count))
                let eps: Float = 3e-3, orig = w[i]
                w[i] = orig + eps; try p.value.assign(w); let up = try lossValue(m, ids)
                w[i] = orig - eps; try p.value.assign(w); let down = try lossValue(m, ids)
                w[i] = orig; try p.value.assign(w)
                let fd = (up - down) / Double(2 * eps), an = Double(g[name]![i])
                XCTAssertEqual(an, fd, accuracy: 2e-3 + 3e-2 * abs(fd), "\(name)[\(i)]: analytic \(an), finite difference \(fd)")
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 0)
    }

    func testFullFinetuningGradientsMatchFiniteDifferences() throws {
        let m = try TinyLlama.make()
        m.setTrainable(true)
        try checkFiniteDifferences(m, TinyLlama.tokens(11, seed: 5))
    }

    func testLoRAGradientsMatchFiniteDifferences() throws {
        let m = try TinyLlama.make()
        try m.applyLoRA(LoRAConfig(r: 4, alpha: 8, dropout: 0), seed: 9)
        try TinyLlama.randomizeLoRA(m)
        XCTAssertEqual(m.trainableParameters.count, 2 * 7 * 2)  // A and B on 7 linears × 2 layers
        try checkFiniteDifferences(m, TinyLlama.tokens(9, seed: 6))
    }

    func testLoRAWithDropoutGradientsMatchFiniteDifferencesUnderTheSameMasks() throws {
        let m = try TinyLlama.make()
        try m.applyLoRA(LoRAConfig(r: 4, alpha: 8, dropout: 0.3), seed: 9)
        try TinyLlama.randomizeLoRA(m)
        stream = RandomStream(seed: 0x5f7_5eed)
        fixedDropoutOffset = 77
        defer { stream = nil; fixedDropoutOffset = nil }
        try checkFiniteDifferences(m, TinyLlama.tokens(9, seed: 6))
        // The masks matter: with dropout the loss differs from the no-dropout loss.
        let withDrop = try lossValue(m, TinyLlama.tokens(9, seed: 6))
        stream = nil
        XCTAssertNotEqual(withDrop, try lossValue(m, TinyLlama.tokens(9, seed: 6)), accuracy: 1e-6)
    }

    func testCheckpointingGivesIdenticalGradientsEvenWithDropout() throws {
        let m = try TinyLlama.make()
        try m.applyLoRA(LoRAConfig(r: 4, alpha: 8, dropout: 0.3), seed: 9)
        try TinyLlama.randomizeLoRA(m)
        let ids = TinyLlama.tokens(12, seed: 8)
        let random = RandomStream(seed: 0x5f7_5eed, offset: 100)
        stream = random
        defer { stream = nil }
        let plain = try gradients(m, ids)
        random.offset = 100
        let ckpt = try gradients(m, ids, checkpointing: true)
        XCTAssertEqual(random.offset > 100, true)
        for (name, g) in plain {
            let c = ckpt[name]!
            XCTAssertEqual(g.count, c.count)
            let maxDiff = zip(g, c).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(maxDiff, 1e-6, "\(name)")
        }
        XCTAssertTrue(plain.values.contains { $0.contains { $0 != 0 } })
    }

    /// Two documents packed in one row (restarting positions, document ids) give the same loss
    /// and gradients as the two documents run as separate rows.
    func testPackedRowsGiveTheSameLossAndGradientsAsUnpacked() throws {
        let m = try TinyLlama.make()
        m.setTrainable(true)
        let a = TinyLlama.tokens(7, seed: 21), b = TinyLlama.tokens(5, seed: 22)
        let normalizer = Float(a.count - 1 + b.count - 1)

        func run(_ rows: [([Int32], [Int32], [Int32], [Int32])], T: Int) throws -> (Double, [String: [Float]]) {
            m.zeroGrad()
            var total = 0.0
            for (ids, pos, doc, tgt) in rows {
                let n = ids.count
                let input = ModelInput(ids: try Tensor(ints: ids, shape: [n], on: be), positions: try Tensor(ints: pos, shape: [n], on: be),
                                       docIds: try Tensor(ints: doc, shape: [n], on: be), B: 1, T: n)
                let (l, _) = try m.loss(input, targets: try Tensor(ints: tgt, shape: [n], on: be), normalizer: normalizer)
                try Autograd.backward(l)
                total += Double(try l.item())
            }
            var g: [String: [Float]] = [:]
            for (n, p) in m.trainableParameters { g[n] = try p.value.grad!.floats() }
            return (total, g)
        }
        func targets(_ x: [Int32]) -> [Int32] { Array(x.dropFirst()) + [-100] }
        let separate = try run([(a, (0..<7).map(Int32.init), [Int32](repeating: 0, count: 7), targets(a)),
                                (b, (0..<5).map(Int32.init), [Int32](repeating: 0, count: 5), targets(b))], T: 7)
        let packed = try run([(a + b, (0..<7).map(Int32.init) + (0..<5).map(Int32.init),
                               [Int32](repeating: 0, count: 7) + [Int32](repeating: 1, count: 5), targets(a) + targets(b))], T: 12)
        XCTAssertEqual(separate.0, packed.0, accuracy: 1e-5)
        for (name, g) in separate.1 {
            let maxDiff = zip(g, packed.1[name]!).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(maxDiff, 2e-5, name)
        }
    }
}
