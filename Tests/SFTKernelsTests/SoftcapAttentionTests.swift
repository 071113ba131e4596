// Attention-logit softcapping (Gemma 2): the scaled score x becomes cap · tanh(x / cap) before
// ALiBi and the mask. The CPU kernel's forward (o, lse) and backward (dq, dk, dv) against a naive
// Double reference written out here — with packed documents, sliding windows, GQA and ALiBi,
// over several 64-token tiles, on every instruction set — and the backward against finite
// differences of the reference forward; the cached decode step (softcap and ALiBi) against the
// last rows of the reference.

import CSFTKernels
import SFTKernels
import XCTest

final class SoftcapAttentionTests: XCTestCase {
    /// Attention where t sees s in [max(start of t's document, t − W + 1), t] with
    /// score = cap tanh(scale q·k / cap) − slope (t − s); returns o, lse and, for
    /// L = sum(o · dout), dq, dk, dv (ds = p (dp − delta) (1 − tanh²)).
    static func reference(q: [Double], k: [Double], v: [Double], dout: [Double], doc: [Int32]?, alibi: [Double]?,
                          window W: Int, softcap cap: Double, B: Int, T: Int, H: Int, KV: Int, D: Int, scale: Double)
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
                    let capped = keys.map { s in
                        cap * tanh(scale * (0..<D).reduce(0.0) { $0 + q[qi(b, t, h) + $1] * k[ki(b, s, g) + $1] } / cap)
                    }
                    let scores = zip(keys, capped).map { s, y in y - slope * Double(t - s) }
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
                        let u = capped[j] / cap
                        let ds = p[j] * (dp[j] - delta) * (1 - u * u)
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

    struct Case { var B, T, H, KV, D, window: Int; var softcap: Float; var docs: Bool; var alibi: Bool }

    func run(_ c: Case, q: [Float], k: [Float], v: [Float], dout: [Float], doc: [Int32]?, alibi: [Float]?) throws
        -> (o: [Float], lse: [Float], dq: [Float], dk: [Float], dv: [Float]) {
        let cpu = CPUBackend.shared, rows = c.B * c.T
        let shape = AttentionShape(B: c.B, T: c.T, H: c.H, KV: c.KV, D: c.D, window: c.window, softcap: c.softcap)
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

    func testSoftcappedAttentionMatchesTheReference() throws {
        var rng = RNG(131)
        let cases = [
            Case(B: 1, T: 20, H: 2, KV: 1, D: 8, window: 1000, softcap: 1.5, docs: false, alibi: false),
            Case(B: 2, T: 70, H: 4, KV: 2, D: 16, window: 1000, softcap: 2, docs: true, alibi: false),
            Case(B: 1, T: 130, H: 2, KV: 2, D: 16, window: 17, softcap: 3, docs: false, alibi: true),
            Case(B: 1, T: 200, H: 3, KV: 1, D: 12, window: 64, softcap: 0.5, docs: true, alibi: false),
            Case(B: 2, T: 150, H: 2, KV: 1, D: 64, window: 1000, softcap: 50, docs: false, alibi: false),
            Case(B: 1, T: 160, H: 2, KV: 2, D: 8, window: 65, softcap: 2.5, docs: true, alibi: true),
        ]
        try forEachISA { isa in
            for c in cases {
                let q = rng.floats(c.B * c.T * c.H * c.D, scale: 2), k = rng.floats(c.B * c.T * c.KV * c.D, scale: 2)
                let v = rng.floats(c.B * c.T * c.KV * c.D), dout = rng.floats(q.count)
                let doc = c.docs ? packedDocs(&rng, B: c.B, T: c.T) : nil
                let alibi: [Float]? = c.alibi ? (0..<c.H).map { Float(0.05 * Double($0 + 1)) } : nil
                let scale = 1 / Double(c.D).squareRoot()
                let want = Self.reference(q: q.doubles, k: k.doubles, v: v.doubles, dout: dout.doubles, doc: doc,
                                          alibi: alibi?.doubles, window: c.window, softcap: Double(c.softcap), B: c.B,
                                          T: c.T, H: c.H, KV: c.KV, D: c.D, scale: scale)
                let got = try run(c, q: q, k: k, v: v, dout: dout, doc: doc, alibi: alibi)
                let what = "\(isa) \(c)"
                assertClose(got.o, want.o, rtol: 1e-4, atol: 2e-5, "\(what) o")
                assertClose(got.lse, want.lse, rtol: 1e-5, atol: 2e-5, "\(what) lse")
                assertClose(got.dq, want.dq, rtol: 1e-4, atol: 1e-4, "\(what) dq")
                assertClose(got.dk, want.dk, rtol: 1e-4, atol: 1e-4, "\(what) dk")
                assertClose(got.dv, want.dv, rtol: 1e-4, atol: 1e-4, "\(what) dv")
            }
        }
    }

    /// The softcap changes the result (so the test above would catch a kernel ignoring it), and
    /// the kernel's backward is the derivative of the reference's forward.
    func testSoftcappedBackwardMatchesFiniteDifferences() throws {
        var rng = RNG(132)
        let c = Case(B: 1, T: 70, H: 2, KV: 1, D: 8, window: 1000, softcap: 1, docs: true, alibi: false)
        let q = rng.floats(c.T * c.H * c.D, scale: 2), k = rng.floats(c.T * c.KV * c.D, scale: 2)
        let v = rng.floats(c.T * c.KV * c.D)
        let dout = rng.floats(q.count), doc = packedDocs(&rng, B: 1, T: c.T), scale = 1 / Double(c.D).squareRoot()
        let got = try run(c, q: q, k: k, v: v, dout: dout, doc: doc, alibi: nil)
        var off = c
        off.softcap = 0
        let uncapped = try run(off, q: q, k: k, v: v, dout: dout, doc: doc, alibi: nil)
        XCTAssertGreaterThan(zip(got.o, uncapped.o).map { abs($0 - $1) }.max()!, 1e-2, "the softcap changes o")
        func loss(_ q: [Double], _ k: [Double], _ v: [Double]) -> Double {
            dotLoss(Self.reference(q: q, k: k, v: v, dout: dout.doubles, doc: doc, alibi: nil, window: c.window,
                                   softcap: Double(c.softcap), B: 1, T: c.T, H: c.H, KV: c.KV, D: c.D, scale: scale).o, dout)
        }
        let (qd, kd, vd) = (q.doubles, k.doubles, v.doubles)
        let iq = rng.indices(24, of: q.count), ik = rng.indices(24, of: k.count), iv = rng.indices(24, of: v.count)
        assertGradient(iq.map { Double(got.dq[$0]) }, numericGradient(qd, at: iq) { loss($0, kd, vd) }, "dq")
        assertGradient(ik.map { Double(got.dk[$0]) }, numericGradient(kd, at: ik) { loss(qd, $0, vd) }, "dk")
        assertGradient(iv.map { Double(got.dv[$0]) }, numericGradient(vd, at: iv) { loss(qd, kd, $0) }, "dv")
    }

    /// Tq new queries against a cache of S tokens, with a softcap, ALiBi or both, give the last
    /// Tq rows of the reference (cache row j at position j), on every instruction set and split.
    func testCachedStepWithSoftcapAndALiBiEqualsTheLastRows() throws {
        var rng = RNG(133)
        let cases: [(Tq: Int, S: Int, H: Int, KV: Int, D: Int, softcap: Float, alibi: Bool)] = [
            (1, 1, 2, 1, 16, 2, false), (1, 70, 4, 2, 64, 1.5, false), (3, 33, 6, 2, 40, 0, true),
            (2, 67, 4, 4, 8, 3, true), (1, 300, 3, 1, 16, 0.7, true),
        ]
        try forEachISA { isa in
            for c in cases {
                let scale = 1 / Float(c.D).squareRoot()
                let q = rng.floats(c.S * c.H * c.D, scale: 2), k = rng.floats(c.S * c.KV * c.D, scale: 2)
                let v = rng.floats(c.S * c.KV * c.D)
                let alibi: [Float]? = c.alibi ? (0..<c.H).map { Float(0.1 * Double($0 + 1)) } : nil
                let want = Self.reference(q: q.doubles, k: k.doubles, v: v.doubles, dout: [Double](repeating: 0, count: q.count),
                                          doc: nil, alibi: alibi?.doubles, window: c.S + 1,
                                          softcap: c.softcap > 0 ? Double(c.softcap) : 1e300, B: 1, T: c.S, H: c.H,
                                          KV: c.KV, D: c.D, scale: Double(scale)).o
                let lastRows = Array(want[((c.S - c.Tq) * c.H * c.D)...])
                let newQ = Array(q[((c.S - c.Tq) * c.H * c.D)...])
                for nparts in [1, 3] {
                    var o = [Float](repeating: .nan, count: c.Tq * c.H * c.D)
                    for part in 0..<nparts {
                        sft_attention_cached_f32(newQ, k, v, &o, Int64(c.Tq), Int64(c.S), Int64(c.H), Int64(c.KV), Int64(c.D),
                                                 scale, alibi, c.softcap, Int32(part), Int32(nparts))
                    }
                    assertClose(o, lastRows, rtol: 1e-5, atol: 1e-5, "\(isa) \(c) parts=\(nparts)")
                }
                // The same through the backend (its argument checks included).
                let o = try Dev.zeros(c.Tq * c.H * c.D)
                try CPUBackend.shared.attentionCached(q: try Dev.upload(newQ), kCache: try Dev.upload(k), vCache: try Dev.upload(v),
                                                      o: o, Tq: c.Tq, S: c.S, H: c.H, KV: c.KV, D: c.D, scale: scale,
                                                      alibi: try alibi.map { try Dev.upload($0) }, softcap: c.softcap)
                assertClose(try Dev.floats(o, c.Tq * c.H * c.D), lastRows, rtol: 1e-5, atol: 1e-5, "\(isa) \(c) backend")
            }
        }
        XCTAssertThrowsError(try CPUBackend.shared.attentionCached(q: try Dev.zeros(4), kCache: try Dev.zeros(4), vCache: try Dev.zeros(4),
                                                                   o: try Dev.zeros(4), Tq: 1, S: 1, H: 1, KV: 1, D: 4, scale: 1,
                                                                   alibi: nil, softcap: -1))
    }
}
