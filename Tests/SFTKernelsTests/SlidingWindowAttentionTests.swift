// Sliding-window attention (Mistral, Gemma): token t sees keys s with t − window < s ≤ t in its
// own document. Forward (o, lse) and backward (dq, dk, dv) of the CPU kernel against a naive
// Double reference written out here, over windows shorter and longer than the kernel's
// 64-token tiles, with and without packed documents, GQA and ALiBi, on every instruction set;
// the backward also against finite differences of the reference forward.

import CSFTKernels
import SFTKernels
import XCTest

final class SlidingWindowAttentionTests: XCTestCase {
    /// Attention where t sees s in [max(start of t's document, t − W + 1), t]; returns o, lse
    /// and, for L = sum(o · dout), dq, dk, dv.
    static func reference(q: [Double], k: [Double], v: [Double], dout: [Double], doc: [Int32]?, alibi: [Double]?,
                          window W: Int, B: Int, T: Int, H: Int, KV: Int, D: Int, scale: Double)
        -> (o: [Double], lse: [Double], dq: [Double], dk: [Double], dv: [Double]) {
        var o = [Double](repeating: 0, count: q.count), lse = [Double](repeating: 0, count: B * H * T)
        var dq = [Double](repeating: 0, count: q.count)
        var dk = [Double](repeating: 0, count: k.count), dv = [Double](repeating: 0, count: v.count)
        func qi(_ b: Int, _ t: Int, _ h: Int) -> Int { ((b * T + t) * H + h) * D }
        func ki(_ b: Int, _ s: Int, _ g: Int) -> Int { ((b * T + s) * KV + g) * D }
        for b in 0..<B {
            for h in 0..<H {
                let g = h / (H / KV), slope = alibi?[h] ?? 0
                for t in 0..<T {
                    var first = t
                    while first > 0, first > t - W + 1, doc.map({ $0[b * T + first - 1] == $0[b * T + t] }) ?? true { first -= 1 }
                    let keys = Array(first...t)
                    let scores = keys.map { s in
                        scale * (0..<D).reduce(0.0) { $0 + q[qi(b, t, h) + $1] * k[ki(b, s, g) + $1] } - slope * Double(t - s)
                    }
                    let m = scores.max()!
                    let sum = scores.map { exp($0 - m) }.reduce(0, +)
                    lse[(b * H + h) * T + t] = m + log(sum)
                    let p = scores.map { exp($0 - m) / sum }
                    for (j, s) in keys.enumerated() {
                        for d in 0..<D { o[qi(b, t, h) + d] += p[j] * v[ki(b, s, g) + d] }
                    }
                    let dp = keys.map { s in (0..<D).reduce(0.0) { $0 + dout[qi(b, t, h) + $1] * v[ki(b, s, g) + $1] } }
                    let delta = zip(p, dp).map { $0 * $1 }.reduce(0, +)
                    for (j, s) in keys.enumerated() {
                        let ds = p[j] * (dp[j] - delta)
                        for d in 0..<D {
                            dq[qi(b, t, h) + d] += scale * ds * k[ki(b, s, g) + d]
                            dk[ki(b, s, g) + d] += scale * ds * q[qi(b, t, h) + d]
                            dv[ki(b, s, g) + d] += p[j] * dout[qi(b, t, h) + d]
                        }
                    }
                }
            }
        }
        return (o, lse, dq, dk, dv)
    }

    struct Case { var B, T, H, KV, D, window: Int; var docs: Bool; var alibi: Bool }

    func run(_ c: Case, q: [Float], k: [Float], v: [Float], dout: [Float], doc: [Int32]?, alibi: [Float]?) throws
        -> (o: [Float], lse: [Float], dq: [Float], dk: [Float], dv: [Float]) {
        let cpu = CPUBackend.shared, rows = c.B * c.T
        let shape = AttentionShape(B: c.B, T: c.T, H: c.H, KV: c.KV, D: c.D, window: c.window)
        let (vq, vk, vv) = (try Dev.upload(q), try Dev.upload(k), try Dev.upload(v))
        let vo = try Dev.zeros(rows * c.H * c.D), vlse = try Dev.zeros(c.B * c.H * c.T)
        let vdoc = try doc.map { try Dev.upload($0) }, va = try alibi.map { try Dev.upload($0) }
        try cpu.attentionForward(q: vq, k: vk, v: vv, o: vo, lse: vlse, docIds: vdoc, alibi: va, shape: shape)
        let (vdq, vdk, vdv) = (try Dev.zeros(rows * c.H * c.D), try Dev.zeros(rows * c.KV * c.D), try Dev.zeros(rows * c.KV * c.D))
        try cpu.attentionBackward(q: vq, k: vk, v: vv, o: vo, dout: try Dev.upload(dout), lse: vlse, docIds: vdoc, alibi: va,
                                  dq: vdq, dk: vdk, dv: vdv, shape: shape)
        return (try Dev.floats(vo, q.count), try Dev.floats(vlse, c.B * c.H * c.T), try Dev.floats(vdq, q.count),
                try Dev.floats(vdk, k.count), try Dev.floats(vdv, v.count))
    }

    func testWindowedAttentionMatchesTheReference() throws {
        var rng = RNG(91)
        let cases = [
            Case(B: 1, T: 20, H: 2, KV: 1, D: 8, window: 1, docs: false, alibi: false),
            Case(B: 2, T: 37, H: 4, KV: 2, D: 8, window: 5, docs: true, alibi: false),
            Case(B: 1, T: 130, H: 2, KV: 2, D: 16, window: 17, docs: false, alibi: true),
            Case(B: 1, T: 200, H: 3, KV: 1, D: 12, window: 64, docs: true, alibi: false),
            Case(B: 2, T: 150, H: 2, KV: 1, D: 16, window: 100, docs: false, alibi: false),
            Case(B: 1, T: 160, H: 2, KV: 2, D: 8, window: 65, docs: true, alibi: true),
            Case(B: 1, T: 40, H: 2, KV: 1, D: 8, window: 500, docs: false, alibi: false),   // wider than the row
        ]
        try forEachISA { isa in
            for c in cases {
                let q = rng.floats(c.B * c.T * c.H * c.D, scale: 2), k = rng.floats(c.B * c.T * c.KV * c.D, scale: 2)
                let v = rng.floats(c.B * c.T * c.KV * c.D), dout = rng.floats(q.count)
                let doc = c.docs ? packedDocs(&rng, B: c.B, T: c.T) : nil
                let alibi: [Float]? = c.alibi ? (0..<c.H).map { Float(0.05 * Double($0 + 1)) } : nil
                let scale = 1 / Double(c.D).squareRoot()
                let want = Self.reference(q: q.doubles, k: k.doubles, v: v.doubles, dout: dout.doubles, doc: doc,
                                          alibi: alibi?.doubles, window: c.window, B: c.B, T: c.T, H: c.H, KV: c.KV,
                                          D: c.D, scale: scale)
                let got = try run(c, q: q, k: k, v: v, dout: dout, doc: doc, alibi: alibi)
                let what = "\(isa) \(c)"
                assertClose(got.o, want.o, rtol: 1e-4, atol: 1e-5, "\(what) o")
                assertClose(got.lse, want.lse, rtol: 1e-5, atol: 1e-5, "\(what) lse")
                assertClose(got.dq, want.dq, rtol: 1e-4, atol: 1e-4, "\(what) dq")
                assertClose(got.dk, want.dk, rtol: 1e-4, atol: 1e-4, "\(what) dk")
                assertClose(got.dv, want.dv, rtol: 1e-4, atol: 1e-4, "\(what) dv")
            }
        }
    }

    /// The window changes the result (the test above would pass a kernel that ignores it only
    /// if the reference did too), and the kernel's backward is the derivative of the
    /// reference's forward.
    func testWindowedBackwardMatchesFiniteDifferences() throws {
        var rng = RNG(92)
        let c = Case(B: 1, T: 70, H: 2, KV: 1, D: 8, window: 6, docs: true, alibi: false)
        let q = rng.floats(c.T * c.H * c.D), k = rng.floats(c.T * c.KV * c.D), v = rng.floats(c.T * c.KV * c.D)
        let dout = rng.floats(q.count), doc = packedDocs(&rng, B: 1, T: c.T), scale = 1 / Double(c.D).squareRoot()
        let got = try run(c, q: q, k: k, v: v, dout: dout, doc: doc, alibi: nil)
        var full = c
        full.window = c.T
        let unwindowed = try run(full, q: q, k: k, v: v, dout: dout, doc: doc, alibi: nil)
        XCTAssertGreaterThan(zip(got.o, unwindowed.o).map { abs($0 - $1) }.max()!, 1e-3, "the window changes o")
        func loss(_ q: [Double], _ k: [Double], _ v: [Double]) -> Double {
            dotLoss(Self.reference(q: q, k: k, v: v, dout: dout.doubles, doc: doc, alibi: nil, window: c.window, B: 1, T: c.T,
                                   H: c.H, KV: c.KV, D: c.D, scale: scale).o, dout)
        }
        let (qd, kd, vd) = (q.doubles, k.doubles, v.doubles)
        let iq = rng.indices(24, of: q.count), ik = rng.indices(24, of: k.count), iv = rng.indices(24, of: v.count)
        assertGradient(iq.map { Double(got.dq[$0]) }, numericGradient(qd, at: iq) { loss($0, kd, vd) }, "dq")
        assertGradient(ik.map { Double(got.dk[$0]) }, numericGradient(kd, at: ik) { loss(qd, $0, vd) }, "dk")
        assertGradient(iv.map { Double(got.dv[$0]) }, numericGradient(vd, at: iv) { loss(qd, kd, $0) }, "dv")
    }
}
