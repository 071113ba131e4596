// The bf16-activation ops (Backend `dtype:` variants) on CUDA against the CPU backend on the same
// bf16 inputs: the residual add, RoPE on strided slices, SwiGLU, GELU / GeGLU forward and
// backward, and attention forward and backward. bf16 outputs agree within one bf16 step (both
// round an f32 result whose last bits may differ), f32 outputs within f32 tolerances. Runs
// where a GPU (or the emulated one) is usable; elsewhere skipped.

import Foundation
import SFTKernels
import XCTest

final class CUDAActivationBF16ParityTests: XCTestCase {
    var gpu: CUDABackend!

    override func setUpWithError() throws {
        if let why = Device.cuda(0).unavailableReason { throw XCTSkip("no usable CUDA device: \(why)") }
        gpu = try CUDABackend.shared(ordinal: 0)
    }

    let cpu = CPUBackend.shared
    func put<T>(_ b: any Backend, _ a: [T]) throws -> BufferView {
        let v = BufferView(try b.allocate(bytes: max(1, a.count * MemoryLayout<T>.stride)))
        try a.withUnsafeBytes { if $0.count > 0 { try b.upload($0.baseAddress!, to: v, bytes: $0.count) } }
        return v
    }
    func get<T: Numeric>(_ b: any Backend, _ v: BufferView, _ n: Int, as: T.Type) throws -> [T] {
        var a = [T](repeating: 0, count: n)
        try a.withUnsafeMutableBytes { if $0.count > 0 { try b.download(v, to: $0.baseAddress!, bytes: $0.count) } }
        return a
    }
    /// n values poisoned (NaN in f32, a bf16 NaN pattern) so unwritten outputs fail.
    func poisoned(_ b: any Backend, _ n: Int, bf16: Bool) throws -> BufferView {
        bf16 ? try put(b, [UInt16](repeating: 0x7fc1, count: n)) : try put(b, [Float](repeating: .nan, count: n))
    }

    /// Runs `body` on both backends; outputs come back as (values, isBF16).
    func parity(_ what: String, rtol: Double = 1e-5, atol: Double = 1e-6,
                _ body: (any Backend) throws -> [([Float], [UInt16]?)]) throws {
        let want = try body(cpu), got = try body(gpu)
        for (i, (g, w)) in zip(got, want).enumerated() {
            if let gb = g.1, let wb = w.1 {
                assertBF16Rounding(gb, of: wb.map(bf16Value), "\(what) bf16 output \(i)")
            } else {
                XCTAssertFalse(w.0.contains { $0.isNaN }, "\(what): CPU output \(i) has NaN (test bug)")
                assertClose(g.0, w.0.doubles, rtol: rtol, atol: atol, "\(what) output \(i)")
            }
        }
    }

    func testElementwiseBF16OpsMatchCPU() throws {
        var rng = RNG(120)
        for n in [1, 1000, 70_001] {
            let a = rng.floats(n, scale: 3)
            let (gb, _) = bf16Randoms(&rng, n, scale: 6), (ub, _) = bf16Randoms(&rng, n, scale: 2)
            let dh = rng.floats(n)
            try parity("add f32 + bf16 n=\(n)", rtol: 0, atol: 0) { be in
                let y = try poisoned(be, n, bf16: false)
                try be.add(try put(be, a), try put(be, gb), bType: .bf16, into: y, count: n)
                return [(try get(be, y, n, as: Float.self), nil)]
            }
            try parity("swiglu bf16 n=\(n)") { be in
                let h = try poisoned(be, n, bf16: true), dg = try poisoned(be, n, bf16: false), du = try poisoned(be, n, bf16: false)
                let (g, u) = (try put(be, gb), try put(be, ub))
                try be.swigluForward(gate: g, up: u, h: h, count: n, dtype: .bf16)
                try be.swigluBackward(dh: try put(be, dh), gate: g, up: u, dgate: dg, dup: du, count: n, dtype: .bf16)
                return [([], try get(be, h, n, as: UInt16.self)), (try get(be, dg, n, as: Float.self), nil),
                        (try get(be, du, n, as: Float.self), nil)]
            }
            for tanhForm in [false, true] {
                try parity("geglu bf16 n=\(n) tanh=\(tanhForm)", rtol: 1e-5, atol: 1e-5) { be in
                    let y = try poisoned(be, n, bf16: true), dx = try poisoned(be, n, bf16: false), du = try poisoned(be, n, bf16: false)
                    let (x, u) = (try put(be, gb), try put(be, ub))
                    try be.geluForward(x: x, up: u, y: y, count: n, approximate: tanhForm, dtype: .bf16)
                    try be.geluBackward(dy: try put(be, dh), x: x, up: u, dx: dx, dup: du, count: n, approximate: tanhForm, dtype: .bf16)
                    return [([], try get(be, y, n, as: UInt16.self)), (try get(be, dx, n, as: Float.self), nil),
                            (try get(be, du, n, as: Float.self), nil)]
                }
            }
        }
    }

    func testRopeAndAttentionBF16MatchCPU() throws {
        var rng = RNG(121)
        let (B, T, H, KV, D) = (2, 19, 4, 2, 32)
        let N = B * T, ld = (H + 2 * KV) * D
        let (qkv, _) = bf16Randoms(&rng, N * ld, scale: 2)
        let positions = (0..<N).map { Int32($0 % T) }, invFreq = Ref.invFreq(D: D)
        let doc = packedDocs(&rng, B: B, T: T), dout = rng.floats(N * H * D)
        let shape = AttentionShape(B: B, T: T, H: H, KV: KV, D: D, ldq: ld, ldk: ld, ldv: ld, ldo: H * D)
        let (oIn, _) = bf16Randoms(&rng, N * H * D)
        try parity("rope bf16 in place on the fused buffer") { be in
            let x = try put(be, qkv)
            try be.rope(x: x, ldx: ld, y: x, ldy: ld, positions: try put(be, positions), invFreq: try put(be, invFreq),
                        N: N, H: H + KV, D: D, inverse: false, dtype: .bf16)
            return [([], try get(be, x, N * ld, as: UInt16.self))]
        }
        // Attention over the q, k, v slices of the fused bf16 buffer; backward from the same
        // (given) bf16 o on both, so its f32 gradients compare at f32 tolerance.
        try parity("attention bf16", rtol: 2e-4, atol: 2e-5) { be in
            let x = try put(be, qkv)
            let o = try poisoned(be, N * H * D, bf16: true), lse = try poisoned(be, B * H * T, bf16: false)
            let (q, k, v) = (x, x.advanced(byBytes: H * D * 2), x.advanced(byBytes: (H + KV) * D * 2))
            let docIds = try put(be, doc)
            try be.attentionForward(q: q, k: k, v: v, o: o, lse: lse, docIds: docIds, alibi: nil, shape: shape, dtype: .bf16)
            let dqkv = try put(be, [Float](repeating: 0, count: N * ld))
            try be.attentionBackward(q: q, k: k, v: v, o: try put(be, oIn), dout: try put(be, dout), lse: lse, docIds: docIds,
                                     alibi: nil, dq: dqkv, dk: dqkv.advanced(byBytes: H * D * 4),
                                     dv: dqkv.advanced(byBytes: (H + KV) * D * 4), shape: shape, dtype: .bf16)
            return [([], try get(be, o, N * H * D, as: UInt16.self)), (try get(be, lse, B * H * T, as: Float.self), nil),
                    (try get(be, dqkv, N * ld, as: Float.self), nil)]
        }
    }
}
