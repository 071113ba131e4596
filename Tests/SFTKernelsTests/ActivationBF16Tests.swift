// bf16 activations (Backend `dtype:` variants, BackendActivationTypes.swift) on every CPU
// instruction set: each op on bf16-rounded inputs against the f32 kernel run on the same
// (widened) values — the bf16 output must be that result rounded to bf16 (within one bf16 ulp)
// and near the Double reference — and each backward against the f32 kernel and against central
// differences of the Double reference.

import SFTKernels
import XCTest

/// bf16 bits of x, rounded to nearest even (the test's own reference of the rounding).
func bf16Bits(_ x: Float) -> UInt16 {
    let u = x.bitPattern
    if x.isNaN { return UInt16(u >> 16) | 0x40 }
    return UInt16((u &+ 0x7fff &+ ((u >> 16) & 1)) >> 16)
}
func bf16Value(_ b: UInt16) -> Float { Float(bitPattern: UInt32(b) << 16) }

/// Random values already representable in bf16: (bits, values).
func bf16Randoms(_ rng: inout RNG, _ n: Int, scale: Double = 1) -> ([UInt16], [Float]) {
    let bits = rng.floats(n, scale: scale).map(bf16Bits)
    return (bits, bits.map(bf16Value))
}

/// Asserts every bf16 result is within `ulps` bf16 steps of the f32 result rounded to bf16.
func assertBF16Rounding(_ got: [UInt16], of f32: [Float], ulps: Int = 1, _ what: String,
                        file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(got.count, f32.count, what, file: file, line: line)
    var bad: [String] = []
    for i in 0..<min(got.count, f32.count) {
        let want = bf16Bits(f32[i])
        // Same-sign bf16 bit patterns are ordered like the values.
        let d = abs(Int(Int16(bitPattern: got[i])) - Int(Int16(bitPattern: want)))
        if d > ulps && !(bf16Value(got[i]) == 0 && bf16Value(want) == 0) {
            if bad.count < 5 { bad.append("[\(i)] got \(bf16Value(got[i])) want \(bf16Value(want)) (f32 \(f32[i]))") }
        }
    }
    if !bad.isEmpty { XCTFail("\(what): \(bad.joined(separator: ", "))", file: file, line: line) }
}

final class ActivationBF16Tests: XCTestCase {
    let cpu = CPUBackend.shared

    func testResidualAddReadsBF16Exactly() throws {
        var rng = RNG(90)
        for n in [1, 7, 1000, 70_001] {
            let a = rng.floats(n, scale: 3)
            let (bb, bv) = bf16Randoms(&rng, n, scale: 3)
            let vy = try Dev.zeros(n)
            try forEachISA { isa in
                try cpu.add(try Dev.upload(a), try Dev.upload(bb), bType: .bf16, into: vy, count: n)
                XCTAssertEqual(try Dev.floats(vy, n), zip(a, bv).map { $0 + $1 }, "add f32 + bf16 \(isa) n=\(n)")
            }
        }
    }

    func testSwiGLUBF16MatchesF32KernelAndFiniteDifferences() throws {
        var rng = RNG(91)
        for n in [1, 33, 257, 40_003] {
            let (gb, gv) = bf16Randoms(&rng, n, scale: 6), (ub, uv) = bf16Randoms(&rng, n, scale: 2)
            let r = rng.floats(n)
            try forEachISA { isa in
                let vh = try Dev.bytes(n * 2), hf = try Dev.zeros(n)
                try cpu.swigluForward(gate: try Dev.upload(gb), up: try Dev.upload(ub), h: vh, count: n, dtype: .bf16)
                try cpu.swigluForward(gate: try Dev.upload(gv), up: try Dev.upload(uv), h: hf, count: n)
                let h = try Dev.halves(vh, n)
                assertBF16Rounding(h, of: try Dev.floats(hf, n), "swiglu bf16 \(isa) n=\(n)")
                assertClose(h.map(bf16Value), Ref.swiglu(gv.doubles, uv.doubles), rtol: 8e-3, atol: 1e-6, "swiglu bf16 vs reference \(isa)")

                let dg = try Dev.zeros(n), du = try Dev.zeros(n), dgf = try Dev.zeros(n), duf = try Dev.zeros(n)
                try cpu.swigluBackward(dh: try Dev.upload(r), gate: try Dev.upload(gb), up: try Dev.upload(ub),
                                       dgate: dg, dup: du, count: n, dtype: .bf16)
                try cpu.swigluBackward(dh: try Dev.upload(r), gate: try Dev.upload(gv), up: try Dev.upload(uv),
                                       dgate: dgf, dup: duf, count: n)
                XCTAssertEqual(try Dev.floats(dg, n), try Dev.floats(dgf, n), "swiglu dgate bf16 = f32 on the same values \(isa)")
                XCTAssertEqual(try Dev.floats(du, n), try Dev.floats(duf, n), "swiglu dup bf16 = f32 on the same values \(isa)")
                if n <= 257 {
                    let all = Array(0..<n)
                    assertGradient(try Dev.floats(dg, n).doubles,
                                   numericGradient(gv.doubles, at: all) { dotLoss(Ref.swiglu($0, uv.doubles), r) }, "swiglu dgate \(isa)")
                    assertGradient(try Dev.floats(du, n).doubles,
                                   numericGradient(uv.doubles, at: all) { dotLoss(Ref.swiglu(gv.doubles, $0), r) }, "swiglu dup \(isa)")
                }
            }
        }
    }

    func testGELUAndGeGLUBF16MatchF32KernelAndFiniteDifferences() throws {
        var rng = RNG(92)
        let n = 777
        let (xb, xv) = bf16Randoms(&rng, n, scale: 5), (ub, uv) = bf16Randoms(&rng, n, scale: 2)
        let dy = rng.floats(n)
        try forEachISA { isa in
            for tanhForm in [false, true] {
                for gated in [false, true] {
                    let what = "\(isa) \(tanhForm ? "tanh" : "erf") \(gated ? "GeGLU" : "GELU") bf16"
                    let vy = try Dev.bytes(n * 2), yf = try Dev.zeros(n)
                    try cpu.geluForward(x: try Dev.upload(xb), up: gated ? try Dev.upload(ub) : nil, y: vy, count: n,
                                        approximate: tanhForm, dtype: .bf16)
                    try cpu.geluForward(x: try Dev.upload(xv), up: gated ? try Dev.upload(uv) : nil, y: yf, count: n,
                                        approximate: tanhForm)
                    let y = try Dev.halves(vy, n)
                    assertBF16Rounding(y, of: try Dev.floats(yf, n), what)
                    let want = (0..<n).map { GELUTests.gelu(Double(xv[$0]), tanhForm: tanhForm) * (gated ? Double(uv[$0]) : 1) }
                    assertClose(y.map(bf16Value), want, rtol: 8e-3, atol: 1e-5, "\(what) vs formula")

                    let dx = try Dev.zeros(n), du = gated ? try Dev.zeros(n) : nil
                    let dxf = try Dev.zeros(n), duf = gated ? try Dev.zeros(n) : nil
                    try cpu.geluBackward(dy: try Dev.upload(dy), x: try Dev.upload(xb), up: gated ? try Dev.upload(ub) : nil,
                                         dx: dx, dup: du, count: n, approximate: tanhForm, dtype: .bf16)
                    try cpu.geluBackward(dy: try Dev.upload(dy), x: try Dev.upload(xv), up: gated ? try Dev.upload(uv) : nil,
                                         dx: dxf, dup: duf, count: n, approximate: tanhForm)
                    XCTAssertEqual(try Dev.floats(dx, n), try Dev.floats(dxf, n), "\(what) dx = f32 on the same values")
                    if let du, let duf { XCTAssertEqual(try Dev.floats(du, n), try Dev.floats(duf, n), "\(what) du") }
                    let h = 1e-5
                    let dxWant = (0..<n).map { i -> Double in
                        let xi = Double(xv[i])
                        let d = (GELUTests.gelu(xi + h, tanhForm: tanhForm) - GELUTests.gelu(xi - h, tanhForm: tanhForm)) / (2 * h)
                        return Double(dy[i]) * d * (gated ? Double(uv[i]) : 1)
                    }
                    assertClose(try Dev.floats(dx, n), dxWant, rtol: 1e-4, atol: 1e-5, "\(what) dx vs finite differences")
                }
            }
        }
    }

    func testRopeBF16OnFusedSlicesMatchesF32KernelAndInverse() throws {
        var rng = RNG(93)
        try forEachISA { isa in
            for (N, H, KV, D) in [(5, 3, 1, 4), (37, 9, 3, 64), (12, 2, 2, 300)] {
                let ld = (H + 2 * KV) * D
                let (qkvb, qkvv) = bf16Randoms(&rng, N * ld, scale: 2)
                let positions = (0..<N).map { Int32($0 < N / 2 ? $0 : $0 - N / 2 + 1000) }
                let invFreq = Ref.invFreq(D: D)
                let vpos = try Dev.upload(positions), vf = try Dev.upload(invFreq)
                // k slice (offset H·D, row stride ld) into a dense bf16 output, against the f32 kernel
                let vy = try Dev.bytes(N * KV * D * 2), yf = try Dev.zeros(N * KV * D)
                try cpu.rope(x: try Dev.upload(qkvb).advanced(byBytes: H * D * 2), ldx: ld, y: vy, ldy: KV * D, positions: vpos,
                             invFreq: vf, N: N, H: KV, D: D, inverse: false, dtype: .bf16)
                try cpu.rope(x: try Dev.upload(qkvv).advanced(byBytes: H * D * 4), ldx: ld, y: yf, ldy: KV * D, positions: vpos,
                             invFreq: vf, N: N, H: KV, D: D, inverse: false)
                let y = try Dev.halves(vy, N * KV * D)
                assertBF16Rounding(y, of: try Dev.floats(yf, N * KV * D), "rope bf16 k slice \(isa) N=\(N) D=\(D)")
                assertClose(y.map(bf16Value), Ref.rope(qkvv.doubles, ldx: ld, offset: H * D, positions: positions, invFreq: invFreq,
                                                       N: N, H: KV, D: D, inverse: false),
                            rtol: 8e-3, atol: 2e-4, "rope bf16 vs reference \(isa)")
                // q slice in place leaves the k/v columns alone
                let vqkv = try Dev.upload(qkvb)
                try cpu.rope(x: vqkv, ldx: ld, y: vqkv, ldy: ld, positions: vpos, invFreq: vf, N: N, H: H, D: D,
                             inverse: false, dtype: .bf16)
                let rotated = try Dev.halves(vqkv, N * ld)
                for n in 0..<N { XCTAssertEqual(Array(rotated[n * ld + H * D..<(n + 1) * ld]), Array(qkvb[n * ld + H * D..<(n + 1) * ld])) }
                let wantQ = Ref.rope(qkvv.doubles, ldx: ld, positions: positions, invFreq: invFreq, N: N, H: H, D: D, inverse: false)
                assertClose((0..<N).flatMap { n in rotated[n * ld..<n * ld + H * D].map(bf16Value) }, wantQ, rtol: 8e-3, atol: 2e-4,
                            "rope bf16 q in place \(isa)")
            }
        }
    }

    func testAttentionBF16MatchesReferenceOnWidenedValues() throws {
        var rng = RNG(94)
        let (B, T, H, KV, D) = (2, 13, 4, 2, 16)
        let scale = 1 / Float(D).squareRoot()
        let (qb, qv) = bf16Randoms(&rng, B * T * H * D), (kb, kv) = bf16Randoms(&rng, B * T * KV * D)
        let (vb, vv) = bf16Randoms(&rng, B * T * KV * D)
        let dout = rng.floats(B * T * H * D)
        let doc = packedDocs(&rng, B: B, T: T)
        let shape = AttentionShape(B: B, T: T, H: H, KV: KV, D: D, scale: scale)
        let ref = Ref.attention(q: qv.doubles, k: kv.doubles, v: vv.doubles, doc: doc, alibi: nil, B: B, T: T, H: H, KV: KV, D: D,
                                scale: Double(scale))
        let roundedP = Ref.attentionRoundedP(q: qv.doubles, k: kv.doubles, v: vv.doubles, doc: doc, alibi: nil, window: nil,
                                             softcap: 0, B: B, T: T, H: H, KV: KV, D: D, scale: Double(scale)) { _, _, key in key / 64 }
        let vmax = vv.map { Double(abs($0)) }.max()!
        try forEachISA { isa in
            let vo = try Dev.bytes(qb.count * 2), lse = try Dev.zeros(B * H * T), vdoc = try Dev.upload(doc)
            let (vq, vk, vvv) = (try Dev.upload(qb), try Dev.upload(kb), try Dev.upload(vb))
            try cpu.attentionForward(q: vq, k: vk, v: vvv, o: vo, lse: lse, docIds: vdoc, alibi: nil, shape: shape, dtype: .bf16)
            // The bf16 forward rounds P for O = P V (AttentionBF16Tests): o is that reference's o
            // rounded to bf16, with the kernel's key tiles of 64.
            assertRoundsOf(try Dev.halves(vo, qb.count), roundedP, tieULPs: 0.05, atol: 1e-6 * vmax, "attention bf16 o \(isa)")
            assertClose(try Dev.floats(lse, B * H * T), ref.lse, rtol: 1e-5, atol: 1e-5, "attention bf16 lse (f32) \(isa)")
            let dq = try Dev.zeros(qb.count), dk = try Dev.zeros(kb.count), dv = try Dev.zeros(vb.count)
            try cpu.attentionBackward(q: vq, k: vk, v: vvv, o: vo, dout: try Dev.upload(dout), lse: lse, docIds: vdoc, alibi: nil,
                                      dq: dq, dk: dk, dv: dv, shape: shape, dtype: .bf16)
            let want = Ref.attentionBackward(q: qv.doubles, k: kv.doubles, v: vv.doubles, dout: dout.doubles, doc: doc, alibi: nil,
                                             B: B, T: T, H: H, KV: KV, D: D, scale: Double(scale))
            // The saved o is bf16, so delta = dO · o carries bf16 rounding: a bf16 tolerance.
            assertGradient(try Dev.floats(dq, qb.count).doubles, want.dq, tol: 1e-2, "attention bf16 dq \(isa)")
            assertGradient(try Dev.floats(dk, kb.count).doubles, want.dk, tol: 1e-2, "attention bf16 dk \(isa)")
            assertGradient(try Dev.floats(dv, vb.count).doubles, want.dv, tol: 1e-4, "attention bf16 dv \(isa)")
        }
    }

    func testOtherActivationTypesAreRefusedNamingTheOp() throws {
        let v = try Dev.zeros(8)
        XCTAssertThrowsError(try cpu.swigluForward(gate: v, up: v, h: v, count: 8, dtype: .f16)) { e in
            XCTAssertTrue("\(e)".contains("swigluForward") && "\(e)".contains("f16"), "\(e)")
        }
        XCTAssertThrowsError(try cpu.add(v, v, bType: .i32, into: v, count: 8)) { e in XCTAssertTrue("\(e)".contains("add"), "\(e)") }
    }
}
