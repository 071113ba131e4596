// Causal attention: forward (o, lse) against the Double reference over random shapes — GQA
// ratios 1, 3, 4, odd head dims, lengths around the kernel's 64-token tiles, packed documents,
// ALiBi, q/k/v as slices of one fused buffer — and over long rows that take the backward's
// larger splits; backward against finite differences; packed documents never see each other;
// the result does not depend on how many cores ran it.

import CSFTKernels
import SFTKernels
import XCTest

/// One attention problem: dense q (B,T,H,D), k/v (B,T,KV,D), and the optional inputs.
struct AttentionCase: CustomStringConvertible {
    var B: Int, T: Int, H: Int, KV: Int, D: Int
    var doc: [Int32]? = nil
    var alibi: [Float]? = nil
    /// q, k, v as column slices of one (B*T, (H+2KV)*D) buffer, o with padded rows.
    var fused = false

    var description: String {
        "B=\(B) T=\(T) H=\(H) KV=\(KV) D=\(D) docs=\(doc != nil) alibi=\(alibi != nil) fused=\(fused)"
    }
    var scale: Float { 1 / Float(D).squareRoot() }

    func reference(_ q: [Double], _ k: [Double], _ v: [Double]) -> (o: [Double], lse: [Double]) {
        Ref.attention(q: q, k: k, v: v, doc: doc, alibi: alibi?.doubles, B: B, T: T, H: H, KV: KV, D: D, scale: Double(scale))
    }
    func referenceBackward(_ q: [Double], _ k: [Double], _ v: [Double], _ dout: [Double])
        -> (dq: [Double], dk: [Double], dv: [Double]) {
        Ref.attentionBackward(q: q, k: k, v: v, dout: dout, doc: doc, alibi: alibi?.doubles, B: B, T: T, H: H,
                              KV: KV, D: D, scale: Double(scale))
    }

    /// Runs forward and (when dout is given) backward on the CPU backend; returns dense arrays.
    func run(q: [Float], k: [Float], v: [Float], dout: [Float]?) throws
        -> (o: [Float], lse: [Float], dq: [Float], dk: [Float], dv: [Float]) {
        let cpu = CPUBackend.shared
        let rows = B * T, (qw, kw) = (H * D, KV * D)
        let ld = fused ? qw + 2 * kw : 0, ldo = fused ? qw + 3 : qw
        // Pack the dense inputs into the layout under test.
        func pack(_ parts: [([Float], Int)], ld: Int) -> [Float] {
            var out = [Float](repeating: .nan, count: rows * ld)
            var col = 0
            for (a, w) in parts {
                for r in 0..<rows { for c in 0..<w { out[r * ld + col + c] = a[r * w + c] } }
                col += w
            }
            return out
        }
        func unpack(_ a: [Float], ld: Int, col: Int, width: Int) -> [Float] {
            (0..<rows).flatMap { r in a[r * ld + col..<r * ld + col + width] }
        }
        let shape: AttentionShape
        let vq, vk, vv, vdq, vdk, vdv: BufferView
        if fused {
            shape = AttentionShape(B: B, T: T, H: H, KV: KV, D: D, ldq: ld, ldk: ld, ldv: ld, ldo: ldo)
            let qkv = try Dev.upload(pack([(q, qw), (k, kw), (v, kw)], ld: ld))
            (vq, vk, vv) = (qkv, qkv.advanced(byBytes: qw * 4), qkv.advanced(byBytes: (qw + kw) * 4))
            let dqkv = try Dev.upload([Float](repeating: .nan, count: rows * ld))
            (vdq, vdk, vdv) = (dqkv, dqkv.advanced(byBytes: qw * 4), dqkv.advanced(byBytes: (qw + kw) * 4))
        } else {
            shape = AttentionShape(B: B, T: T, H: H, KV: KV, D: D)
            (vq, vk, vv) = (try Dev.upload(q), try Dev.upload(k), try Dev.upload(v))
            (vdq, vdk, vdv) = (try Dev.zeros(rows * qw), try Dev.zeros(rows * kw), try Dev.zeros(rows * kw))
        }
        let vo = try Dev.upload([Float](repeating: .nan, count: rows * ldo)), vlse = try Dev.zeros(B * H * T)
        let vdoc = try doc.map { try Dev.upload($0) }, valibi = try alibi.map { try Dev.upload($0) }
        try cpu.attentionForward(q: vq, k: vk, v: vv, o: vo, lse: vlse, docIds: vdoc, alibi: valibi, shape: shape)
        let o = unpack(try Dev.floats(vo, rows * ldo), ld: ldo, col: 0, width: qw)
        let lse = try Dev.floats(vlse, B * H * T)
        guard let dout else { return (o, lse, [], [], []) }
        let vdo = try Dev.upload(pack([(dout, qw)], ld: ldo))
        try cpu.attentionBackward(q: vq, k: vk, v: vv, o: vo, dout: vdo, lse: vlse, docIds: vdoc, alibi: valibi,
                                  dq: vdq, dk: vdk, dv: vdv, shape: shape)
        if fused {
            let d = try Dev.floats(vdq, rows * ld)
            return (o, lse, unpack(d, ld: ld, col: 0, width: qw), unpack(d, ld: ld, col: qw, width: kw),
                    unpack(d, ld: ld, col: qw + kw, width: kw))
        }
        return (o, lse, try Dev.floats(vdq, rows * qw), try Dev.floats(vdk, rows * kw), try Dev.floats(vdv, rows * kw))
    }
}

/// Document ids for B rows of T tokens: runs of random length; ids alternate 0, 1, 0, ... so
/// documents that are not neighbours share an id (a document is a run, not an id).
func packedDocs(_ rng: inout RNG, B: Int, T: Int) -> [Int32] {
    var ids: [Int32] = []
    for _ in 0..<B {
        var row: [Int32] = [], id: Int32 = 0
        while row.count < T {
            let len = min(rng.int(1..<max(2, T / 2)), T - row.count)
            row += [Int32](repeating: id % 2, count: len)
            id += 1
        }
        ids += row
    }
    return ids
}

final class AttentionTests: XCTestCase {
    let cpu = CPUBackend.shared

    func testForwardAndBackwardMatchReferenceOnRandomShapes() throws {
        var rng = RNG(30)
        var cases: [AttentionCase] = []
        for i in 0..<14 {
            let KV = rng.pick([1, 2, 3]), ratio = [1, 3, 4][i % 3]
            let T = rng.pick([1, 3, 17, 64, 65, 130]), B = rng.pick([1, 2])
            var c = AttentionCase(B: B, T: T, H: KV * ratio, KV: KV, D: rng.pick([4, 7, 16, 20, 64, 80]))
            if i % 2 == 0 { c.doc = packedDocs(&rng, B: B, T: T) }
            if i % 4 < 2 { c.alibi = (0..<c.H).map { _ in Float(rng.uniform() * 0.5) } }
            c.fused = i % 3 != 1
            cases.append(c)
        }
        cases.append(AttentionCase(B: 1, T: 200, H: 9, KV: 3, D: 64, doc: nil, alibi: nil, fused: true))
        try assertMatchReference(cases, &rng)
    }

    /// Rows long enough for the backward's larger splits: a kv head's key tiles in one run of
    /// more than 8 tiles (processed in several stripes; B x KV = 12 leaves one run per head),
    /// and in many runs whose dq shares are summed afterwards; head dims read in place (16, 64)
    /// and copied with padding (20); documents starting inside tiles, ALiBi.
    func testLongRowsMatchReference() throws {
        var rng = RNG(36)
        var cases = [
            AttentionCase(B: 4, T: 530, H: 3, KV: 3, D: 16, fused: true),
            AttentionCase(B: 1, T: 700, H: 4, KV: 1, D: 20),
            AttentionCase(B: 1, T: 1100, H: 3, KV: 1, D: 64, fused: true),
        ]
        cases[0].doc = packedDocs(&rng, B: 4, T: 530)
        cases[1].doc = packedDocs(&rng, B: 1, T: 700)
        cases[2].alibi = [0.05, 0.01, 0.0]
        try assertMatchReference(cases, &rng)
    }

    /// Forward (o, lse) and backward (dq, dk, dv) of each case on random inputs vs the Double
    /// reference, on every instruction set.
    private func assertMatchReference(_ cases: [AttentionCase], _ rng: inout RNG) throws {
        for c in cases {
            let q = rng.floats(c.B * c.T * c.H * c.D, scale: 2), k = rng.floats(c.B * c.T * c.KV * c.D, scale: 2)
            let v = rng.floats(c.B * c.T * c.KV * c.D), dout = rng.floats(c.B * c.T * c.H * c.D)
            let want = c.reference(q.doubles, k.doubles, v.doubles)
            let wantGrad = c.referenceBackward(q.doubles, k.doubles, v.doubles, dout.doubles)
            try forEachISA { isa in
                let got = try c.run(q: q, k: k, v: v, dout: dout)
                assertClose(got.o, want.o, rtol: 1e-4, atol: 2e-5, "attention o \(isa) \(c)")
                assertClose(got.lse, want.lse, rtol: 1e-5, atol: 2e-5, "attention lse \(isa) \(c)")
                assertClose(got.dq, wantGrad.dq, rtol: 1e-3, atol: 1e-4, "attention dq \(isa) \(c)")
                assertClose(got.dk, wantGrad.dk, rtol: 1e-3, atol: 1e-4, "attention dk \(isa) \(c)")
                assertClose(got.dv, wantGrad.dv, rtol: 1e-3, atol: 1e-4, "attention dv \(isa) \(c)")
            }
        }
    }

    func testBackwardMatchesFiniteDifferences() throws {
        var rng = RNG(31)
        var cases = [
            AttentionCase(B: 2, T: 9, H: 6, KV: 2, D: 4, fused: true),
            AttentionCase(B: 1, T: 70, H: 4, KV: 1, D: 3),
            AttentionCase(B: 1, T: 12, H: 3, KV: 3, D: 5, fused: true),
            // head dims that take the kernels' vector paths: 64 + 16 columns, 16 + 4
            AttentionCase(B: 1, T: 14, H: 4, KV: 1, D: 80, fused: true),
            AttentionCase(B: 2, T: 66, H: 2, KV: 2, D: 20),
        ]
        cases[0].doc = [0, 0, 0, 1, 1, 2, 2, 2, 2, 5, 5, 5, 5, 5, 5, 7, 8, 8]
        cases[0].alibi = [0.5, 0.25, 0.125, 0.0625, 0.3, 0.0]
        cases[1].doc = (0..<70).map { Int32($0 < 20 ? 0 : 1) }
        cases[2].alibi = [0.1, 0.2, 0.4]
        cases[3].doc = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0]
        cases[3].alibi = [0.2, 0.1, 0.05, 0.025]
        cases[4].doc = (0..<132).map { Int32($0 < 40 || ($0 >= 66 && $0 < 70) ? 0 : 1) }
        for c in cases {
            let nq = c.B * c.T * c.H * c.D, nk = c.B * c.T * c.KV * c.D
            let q = rng.floats(nq, scale: 2), k = rng.floats(nk, scale: 2), v = rng.floats(nk), r = rng.floats(nq)
            try forEachISA { isa in
                let got = try c.run(q: q, k: k, v: v, dout: r)
                let (qd, kd, vd) = (q.doubles, k.doubles, v.doubles)
                let qi = rng.indices(40, of: nq), ki = rng.indices(40, of: nk)
                let nqg = numericGradient(qd, at: qi) { dotLoss(c.reference($0, kd, vd).o, r) }
                let nkg = numericGradient(kd, at: ki) { dotLoss(c.reference(qd, $0, vd).o, r) }
                let nvg = numericGradient(vd, at: ki) { dotLoss(c.reference(qd, kd, $0).o, r) }
                assertGradient(qi.map { Double(got.dq[$0]) }, nqg, "attention dq \(isa) \(c)")
                assertGradient(ki.map { Double(got.dk[$0]) }, nkg, "attention dk \(isa) \(c)")
                assertGradient(ki.map { Double(got.dv[$0]) }, nvg, "attention dv \(isa) \(c)")
            }
        }
    }

    func testReferenceBackwardIsTheDerivativeOfReferenceForward() {
        var rng = RNG(34)
        let c = AttentionCase(B: 1, T: 7, H: 4, KV: 2, D: 3, doc: [0, 0, 0, 1, 1, 1, 1], alibi: [0.3, 0.2, 0.1, 0])
        let q = rng.floats(c.T * c.H * c.D).doubles, k = rng.floats(c.T * c.KV * c.D).doubles
        let v = rng.floats(c.T * c.KV * c.D).doubles, r = rng.floats(c.T * c.H * c.D)
        let grad = c.referenceBackward(q, k, v, r.doubles)
        assertGradient(grad.dq, numericGradient(q, at: Array(q.indices)) { dotLoss(c.reference($0, k, v).o, r) }, tol: 1e-6, "reference dq")
        assertGradient(grad.dk, numericGradient(k, at: Array(k.indices)) { dotLoss(c.reference(q, $0, v).o, r) }, tol: 1e-6, "reference dk")
        assertGradient(grad.dv, numericGradient(v, at: Array(v.indices)) { dotLoss(c.reference(q, k, $0).o, r) }, tol: 1e-6, "reference dv")
    }

    func testPackedRowsNeverAttendAcrossDocuments() throws {
        var rng = RNG(32)
        let (T, H, KV, D) = (150, 4, 2, 16)
        let lengths = [30, 70, 1, 49]   // one packed row; documents cross the 64-token tiles
        let doc = lengths.enumerated().flatMap { i, n in [Int32](repeating: Int32(i % 2), count: n) }
        let alibi: [Float] = [0.3, 0.1, 0.05, 0.0]
        let q = rng.floats(T * H * D, scale: 2), k = rng.floats(T * KV * D, scale: 2)
        let v = rng.floats(T * KV * D), dout = rng.floats(T * H * D)
        let packed = try AttentionCase(B: 1, T: T, H: H, KV: KV, D: D, doc: doc, alibi: alibi, fused: true)
            .run(q: q, k: k, v: v, dout: dout)
        var start = 0
        for n in lengths {
            func slice(_ a: [Float], _ width: Int) -> [Float] { Array(a[start * width..<(start + n) * width]) }
            let (qw, kw) = (H * D, KV * D)
            let alone = try AttentionCase(B: 1, T: n, H: H, KV: KV, D: D, doc: nil, alibi: alibi)
                .run(q: slice(q, qw), k: slice(k, kw), v: slice(v, kw), dout: slice(dout, qw))
            let tag = "document at \(start) of length \(n)"
            assertClose(slice(packed.o, qw), alone.o.doubles, rtol: 1e-5, atol: 1e-6, "o \(tag)")
            assertClose(slice(packed.dq, qw), alone.dq.doubles, rtol: 1e-4, atol: 1e-5, "dq \(tag)")
            assertClose(slice(packed.dk, kw), alone.dk.doubles, rtol: 1e-4, atol: 1e-5, "dk \(tag)")
            assertClose(slice(packed.dv, kw), alone.dv.doubles, rtol: 1e-4, atol: 1e-5, "dv \(tag)")
            let lse = (0..<H).flatMap { h in packed.lse[h * T + start..<h * T + start + n] }
            assertClose(lse, alone.lse.doubles, rtol: 1e-5, atol: 1e-6, "lse \(tag)")
            start += n
        }
    }

    func testResultDoesNotDependOnTheNumberOfCores() throws {
        var rng = RNG(33)
        let c = AttentionCase(B: 2, T: 300, H: 6, KV: 2, D: 32, doc: packedDocs(&rng, B: 2, T: 300), alibi: nil, fused: true)
        let q = rng.floats(c.B * c.T * c.H * c.D), k = rng.floats(c.B * c.T * c.KV * c.D)
        let v = rng.floats(c.B * c.T * c.KV * c.D), dout = rng.floats(c.B * c.T * c.H * c.D)
        let threads = cpu.threads
        defer { cpu.setThreads(threads) }
        cpu.setThreads(1)
        let one = try c.run(q: q, k: k, v: v, dout: dout)
        cpu.setThreads(max(2, threads))
        let many = try c.run(q: q, k: k, v: v, dout: dout)
        XCTAssertEqual(one.o, many.o)
        XCTAssertEqual(one.lse, many.lse)
        XCTAssertEqual(one.dq, many.dq)
        XCTAssertEqual(one.dk, many.dk)
        XCTAssertEqual(one.dv, many.dv)
    }

    /// The C kernels' fixed split (no shared counter): parts run one after another still cover
    /// every unit exactly once and give the backend's result bit for bit.
    func testFixedSplitPartsCoverAllWork() throws {
        var rng = RNG(35)
        let (B, T, H, KV, D) = (2, 150, 6, 2, 16)
        let doc = packedDocs(&rng, B: B, T: T)
        let q = rng.floats(B * T * H * D), k = rng.floats(B * T * KV * D), v = rng.floats(B * T * KV * D)
        let dout = rng.floats(B * T * H * D)
        let want = try AttentionCase(B: B, T: T, H: H, KV: KV, D: D, doc: doc).run(q: q, k: k, v: v, dout: dout)
        var o = [Float](repeating: .nan, count: q.count), lse = [Float](repeating: .nan, count: B * H * T)
        var dq = o, dk = [Float](repeating: .nan, count: k.count), dv = dk
        for nparts: Int32 in [1, 3] {
            for part in 0..<nparts {
                XCTAssertEqual(sft_attention_fwd_f32(q, Int64(H * D), k, Int64(KV * D), v, Int64(KV * D), &o, Int64(H * D), &lse,
                                                     doc, nil, 0, Int64(B), Int64(T), Int64(H), Int64(KV), Int64(D),
                                                     1 / Float(D).squareRoot(), 0, nil, part, nparts), 0)
            }
            XCTAssertEqual(o, want.o, "o, \(nparts) parts")
            XCTAssertEqual(lse, want.lse, "lse, \(nparts) parts")
            var work = [Float](repeating: .nan, count: Int(sft_attention_bwd_work_floats(Int64(B), Int64(T), Int64(H), Int64(KV), Int64(D))))
            for part in 0..<nparts {
                XCTAssertEqual(sft_attention_bwd_f32(q, Int64(H * D), k, Int64(KV * D), v, Int64(KV * D), o, Int64(H * D), dout,
                                                     Int64(H * D), lse, doc, nil, 0, &dq, Int64(H * D), &dk, Int64(KV * D), &dv,
                                                     Int64(KV * D), Int64(B), Int64(T), Int64(H), Int64(KV), Int64(D),
                                                     1 / Float(D).squareRoot(), 0, &work, nil, part, nparts), 0)
            }
            for part in 0..<nparts {
                sft_attention_bwd_sum_f32(work, &dq, Int64(H * D), Int64(B), Int64(T), Int64(H), Int64(KV), Int64(D), part, nparts)
            }
            XCTAssertEqual(dq, want.dq, "dq, \(nparts) parts")
            XCTAssertEqual(dk, want.dk, "dk, \(nparts) parts")
            XCTAssertEqual(dv, want.dv, "dv, \(nparts) parts")
        }
    }

    func testBadShapesThrowNamingTheShape() throws {
        let x = try Dev.zeros(64)
        XCTAssertThrowsError(try cpu.attentionForward(q: x, k: x, v: x, o: x, lse: x, docIds: nil, alibi: nil,
                                                      shape: AttentionShape(B: 1, T: 2, H: 3, KV: 2, D: 4))) {
            XCTAssertTrue("\($0)".contains("H=3 KV=2"), "\($0)")
        }
        XCTAssertThrowsError(try cpu.attentionForward(q: x, k: x, v: x, o: x, lse: x, docIds: nil, alibi: nil,
                                                      shape: AttentionShape(B: 1, T: 20, H: 2, KV: 2, D: 4)))
    }
}
