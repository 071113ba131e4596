// Native bf16 attention (sft_attention_fwd_bf16 / _bwd_bf16 through CPUBackend's `dtype: .bf16`)
// on every CPU instruction set, and with vdpbf16ps where the CPU has AVX512_BF16. The bf16
// forward rounds P to bf16 for O = P V (FlashAttention's semantics; m, l, lse from the unrounded
// p), so o is held to Ref.attentionRoundedP on the same values with the CPU kernel's key tiles
// (aligned runs of 64): o must be that o rounded to bf16, except within `tieULPs` of a tie
// (f32 sums and exp, a p that lands on a bf16 tie). A kernel that stops rounding P moves o by
// about 2^-9 of |o| per term, which flips many roundings (checked by breaking it: see
// assertRoundsOf). lse and the f32 gradients are the f32 kernel's on the widened values (the
// backward reads the bf16 run's o) up to summation order: 1e-6 / 1e-5 of the largest entry
// (1e-5 / 1e-4 with vdpbf16ps, whose S differs in summation order). Against the f32 kernel
// (P unrounded) o is within P's rounding: each term p_j v_j / l moves by at most 2^-9 of itself,
// so o moves by at most 2^-9 max|v| before its own rounding (half a bf16 ulp, at most 2^-8 |o|).
// Covered: causal, packed documents, sliding window, GQA (H != KV), ALiBi, softcap, D a
// multiple of 16 or not, and q, k, v as slices of one fused row (ld > width).
// Plus central differences of the Double reference on the same bf16 values: the analytic bf16
// backward must match them within bf16 tolerance (the saved o is bf16, so delta = dO · o carries
// a relative error up to 2^-9 of |dO| |o|; 1e-2 of the largest entry covers it with margin).

import Foundation
@testable import SFTKernels
import XCTest

/// Asserts each bf16 o is the reference's o (Double) rounded to bf16, except near ties: within
/// `tieULPs` bf16 ulps of one, or `atol`, or the reference's `tie` (p near a bf16 tie):
/// |o - want| <= (1/2 + tieULPs) ulp(want) + atol + tie.
func assertRoundsOf(_ got: [UInt16], _ want: (o: [Double], tie: [Double]), tieULPs: Double, atol: Double,
                    _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(got.count, want.o.count, what, file: file, line: line)
    var bad: [String] = [], nbad = 0, worst = 0.0
    for i in 0..<min(got.count, want.o.count) {
        let w = want.o[i], ulp = w == 0 ? 0x1p-133 : pow(2, floor(log2(abs(w))) - 7)
        let err = max(0, abs(Double(bf16Value(got[i])) - w) - atol - want.tie[i]) / ulp
        if err > 0.5 + tieULPs {
            worst = max(worst, err - 0.5)
            nbad += 1
            if bad.count < 5 { bad.append("[\(i)] got \(bf16Value(got[i])) want \(w) (\(err) ulp)") }
        }
    }
    if nbad > 0 {
        XCTFail("\(what): \(nbad)/\(got.count) not the bf16 rounding of the reference (worst \(worst) ulp past half "
                + "an ulp); first: \(bad.joined(separator: ", "))",
                file: file, line: line)
    }
}

final class AttentionBF16Tests: XCTestCase {
    let cpu = CPUBackend.shared

    struct Case {
        var B: Int, T: Int, H: Int, KV: Int, D: Int
        var docs = false, alibi = false, window: Int? = nil, softcap: Float = 0, fused = false
    }

    let cases: [Case] = [
        Case(B: 1, T: 150, H: 2, KV: 2, D: 64, fused: true),                    // causal, several tiles
        Case(B: 2, T: 77, H: 4, KV: 2, D: 20, docs: true),                      // documents, GQA, D % 16 != 0
        Case(B: 1, T: 130, H: 3, KV: 1, D: 32, alibi: true, window: 40),        // window + ALiBi, GQA 3:1
        Case(B: 1, T: 90, H: 2, KV: 1, D: 16, docs: true, alibi: true, softcap: 5),
    ]

    /// bf16 inputs of a case: q, k, v bits (dense, or one fused (B T, (H + 2 KV) D) buffer).
    struct Inputs {
        var qkv: [UInt16], shape: AttentionShape, qOff: Int, kOff: Int, vOff: Int
        var doc: [Int32]?, alibi: [Float]?, dout: [Float]
    }

    func inputs(_ c: Case, seed: UInt64) -> Inputs {
        var rng = RNG(seed)
        let rows = c.B * c.T, width = (c.H + 2 * c.KV) * c.D
        // Scores spread over a few units, so the softmax is neither flat nor one-hot.
        let (bits, _) = bf16Randoms(&rng, rows * width, scale: 2)
        let (ldq, ldk, ldv) = c.fused ? (width, width, width) : (c.H * c.D, c.KV * c.D, c.KV * c.D)
        var qkv = bits
        var (qOff, kOff, vOff) = (0, c.H * c.D, (c.H + c.KV) * c.D)
        if !c.fused {   // three dense tensors one after the other
            qkv = []
            for r in 0..<rows { qkv += bits[(r * width)..<(r * width + c.H * c.D)] }
            for r in 0..<rows { qkv += bits[(r * width + c.H * c.D)..<(r * width + (c.H + c.KV) * c.D)] }
            for r in 0..<rows { qkv += bits[(r * width + (c.H + c.KV) * c.D)..<((r + 1) * width)] }
            (qOff, kOff, vOff) = (0, rows * c.H * c.D, rows * (c.H + c.KV) * c.D)
        }
        let shape = AttentionShape(B: c.B, T: c.T, H: c.H, KV: c.KV, D: c.D, ldq: ldq, ldk: ldk, ldv: ldv,
                                   window: c.window, softcap: c.softcap)
        let doc = c.docs ? packedDocs(&rng, B: c.B, T: c.T) : nil
        let alibi = c.alibi ? (0..<c.H).map { Float(0.05) * Float($0 + 1) } : nil
        return Inputs(qkv: qkv, shape: shape, qOff: qOff, kOff: kOff, vOff: vOff, doc: doc, alibi: alibi,
                      dout: rng.floats(rows * c.H * c.D))
    }

    /// Runs forward and backward with q, k, v, o of `dtype` (f32 views hold the bf16 values
    /// widened); returns o (as f32 values), lse, dq, dk, dv (dense f32 gradients in q/k/v layout).
    func run(_ x: Inputs, _ dtype: DType, oBits: [UInt16]? = nil) throws
        -> (o: [Float], oBits: [UInt16], lse: [Float], dq: [Float], dk: [Float], dv: [Float]) {
        let s = x.shape, rows = s.B * s.T, es = dtype == .bf16 ? 2 : 4
        let buf = dtype == .bf16 ? try Dev.upload(x.qkv) : try Dev.upload(x.qkv.map(bf16Value))
        let (q, k, v) = (buf.advanced(byBytes: x.qOff * es), buf.advanced(byBytes: x.kOff * es),
                         buf.advanced(byBytes: x.vOff * es))
        let o = try Dev.bytes(rows * s.ldo * es), lse = try Dev.zeros(s.B * s.H * s.T)
        let doc = try x.doc.map { try Dev.upload($0) }, alibi = try x.alibi.map { try Dev.upload($0) }
        try cpu.attentionForward(q: q, k: k, v: v, o: o, lse: lse, docIds: doc, alibi: alibi, shape: s, dtype: dtype)
        var ob: [UInt16] = [], of: [Float] = []
        if dtype == .bf16 {
            ob = try Dev.halves(o, rows * s.ldo)
            of = ob.map(bf16Value)
        } else {
            of = try Dev.floats(o, rows * s.ldo)
        }
        // The f32 backward reads the bf16 run's o (widened), as the bf16 backward does.
        let oIn = try oBits.map { try Dev.upload($0.map(bf16Value)) } ?? o
        let span = (rows - 1) * s.ldq + s.H * s.D, kspan = (rows - 1) * s.ldk + s.KV * s.D
        let dq = try Dev.zeros(span), dk = try Dev.zeros(kspan), dv = try Dev.zeros((rows - 1) * s.ldv + s.KV * s.D)
        try cpu.attentionBackward(q: q, k: k, v: v, o: oIn, dout: try Dev.upload(x.dout), lse: lse, docIds: doc,
                                  alibi: alibi, dq: dq, dk: dk, dv: dv, shape: s, dtype: dtype)
        func dense(_ g: BufferView, _ n: Int, _ ld: Int, _ w: Int) throws -> [Float] {
            let all = try Dev.floats(g, n)
            return (0..<rows).flatMap { all[($0 * ld)..<($0 * ld + w)] }
        }
        return (of, ob, try Dev.floats(lse, s.B * s.H * s.T), try dense(dq, span, s.ldq, s.H * s.D),
                try dense(dk, kspan, s.ldk, s.KV * s.D),
                try dense(dv, (rows - 1) * s.ldv + s.KV * s.D, s.ldv, s.KV * s.D))
    }

    /// Runs body for every instruction set, and on AVX-512 once widening (the bf16 GEMM's
    /// variant lowered to avx512) and once with vdpbf16ps (when the CPU has it: body's flag true,
    /// the default there).
    func forEachVariant(_ body: (String, Bool) throws -> Void) throws {
        defer { try? CPUBackend.setGEMMBF16Variant("auto") }
        try forEachISA { isa in
            guard isa == "avx512" else { return try body(isa, false) }
            try CPUBackend.setGEMMBF16Variant("avx512")   // widening on AVX-512
            try body(isa, false)
            if (try? CPUBackend.setGEMMBF16Variant("avx512bf16")) != nil { try body("avx512bf16", true) }
            try CPUBackend.setGEMMBF16Variant("auto")
        }
    }

    /// Ref.attentionRoundedP on the case's bf16 values with the CPU kernel's key tiles.
    func roundedPReference(_ x: Inputs) -> (o: [Double], tie: [Double]) {
        let s = x.shape, rows = s.B * s.T
        let vals = x.qkv.map { Double(bf16Value($0)) }
        func dense(_ off: Int, _ ld: Int, _ w: Int) -> [Double] {
            (0..<rows).flatMap { vals[(off + $0 * ld)..<(off + $0 * ld + w)] }
        }
        return Ref.attentionRoundedP(q: dense(x.qOff, s.ldq, s.H * s.D), k: dense(x.kOff, s.ldk, s.KV * s.D),
                                     v: dense(x.vOff, s.ldv, s.KV * s.D), doc: x.doc, alibi: x.alibi?.map(Double.init),
                                     window: s.window, softcap: Double(s.softcap), B: s.B, T: s.T, H: s.H, KV: s.KV,
                                     D: s.D, scale: Double(s.scale)) { _, _, key in key / 64 }
    }

    func testBF16AttentionMatchesF32KernelOnWidenedValuesOnEveryISA() throws {
        for (n, c) in cases.enumerated() {
            let x = inputs(c, seed: 1500 + UInt64(n))
            let ref = roundedPReference(x)
            let vmax = Double(x.qkv.map { abs(bf16Value($0)) }.max()!)   // over q, k, v: ≥ max|v|
            try forEachVariant { variant, dp in
                let what = "case \(n) \(c) \(variant)"
                let b = try run(x, .bf16)
                let f = try run(x, .f32, oBits: b.oBits)
                let tol = dp ? 1e-4 : 1e-5
                assertRoundsOf(b.oBits, ref, tieULPs: 0.05, atol: 1e-6 * vmax, what + " o vs the reference rounding P")
                assertClose(b.o, f.o.map(Double.init), rtol: 0x1p-8 * 1.25, atol: 0x1p-9 * vmax * 1.25,
                            what + " o vs the f32 kernel")
                assertClose(b.lse, f.lse.map(Double.init), rtol: dp ? 1e-5 : 1e-6, atol: dp ? 1e-5 : 1e-6, what + " lse")
                assertGradient(b.dq.map(Double.init), f.dq.map(Double.init), tol: tol, what + " dq")
                assertGradient(b.dk.map(Double.init), f.dk.map(Double.init), tol: tol, what + " dk")
                assertGradient(b.dv.map(Double.init), f.dv.map(Double.init), tol: tol, what + " dv")
            }
        }
    }

    func testBF16AttentionBackwardMatchesFiniteDifferences() throws {
        // The Double reference knows documents and ALiBi (not windows or softcaps): GQA, two
        // tiles, documents and ALiBi together.
        let c = Case(B: 1, T: 70, H: 4, KV: 2, D: 16, docs: true, alibi: true)
        let x = inputs(c, seed: 1600)
        let (B, T, H, KV, D) = (c.B, c.T, c.H, c.KV, c.D)
        let vals = x.qkv.map { Double(bf16Value($0)) }
        let q = Array(vals[x.qOff..<x.kOff]), k = Array(vals[x.kOff..<x.vOff]), v = Array(vals[x.vOff...])
        let alibi = x.alibi!.map(Double.init), scale = Double(x.shape.scale)
        func loss(_ q: [Double], _ k: [Double], _ v: [Double]) -> Double {
            dotLoss(Ref.attention(q: q, k: k, v: v, doc: x.doc, alibi: alibi, B: B, T: T, H: H, KV: KV, D: D,
                                  scale: scale).o, x.dout)
        }
        var rng = RNG(1601)
        let iq = rng.indices(16, of: q.count), ik = rng.indices(16, of: k.count), iv = rng.indices(16, of: v.count)
        try forEachVariant { isa, _ in
            let b = try run(x, .bf16)
            assertGradient(iq.map { Double(b.dq[$0]) }, numericGradient(q, at: iq) { loss($0, k, v) }, tol: 1e-2,
                           "bf16 dq vs central differences \(isa)")
            assertGradient(ik.map { Double(b.dk[$0]) }, numericGradient(k, at: ik) { loss(q, $0, v) }, tol: 1e-2,
                           "bf16 dk vs central differences \(isa)")
            assertGradient(iv.map { Double(b.dv[$0]) }, numericGradient(v, at: iv) { loss(q, k, $0) }, tol: 1e-2,
                           "bf16 dv vs central differences \(isa)")
        }
    }

    func testBF16AttentionChecksItsArguments() throws {
        let s = AttentionShape(B: 1, T: 8, H: 2, KV: 1, D: 16)
        let q = try Dev.bytes(8 * 32 * 2), kv = try Dev.bytes(8 * 16 * 2), lse = try Dev.zeros(16)
        // o one element short (bf16: 2 bytes an element).
        let short = try Dev.bytes(8 * 32 * 2 - 2)
        XCTAssertThrowsError(try cpu.attentionForward(q: q, k: kv, v: kv, o: short, lse: lse, docIds: nil, alibi: nil,
                                                      shape: s, dtype: .bf16)) { e in
            XCTAssertTrue("\(e)".contains("attentionForward") && "\(e)".contains("o bf16"), "\(e)")
        }
        XCTAssertThrowsError(try cpu.attentionBackward(q: q, k: kv, v: kv, o: q, dout: try Dev.zeros(8 * 32 - 1), lse: lse,
                                                       docIds: nil, alibi: nil, dq: try Dev.zeros(8 * 32),
                                                       dk: try Dev.zeros(8 * 16), dv: try Dev.zeros(8 * 16),
                                                       shape: s, dtype: .bf16)) { e in
            XCTAssertTrue("\(e)".contains("attentionBackward") && "\(e)".contains("dout"), "\(e)")
        }
        XCTAssertThrowsError(try cpu.attentionForward(q: q, k: kv, v: kv, o: q, lse: lse, docIds: nil, alibi: nil,
                                                      shape: s, dtype: .f16)) { e in
            XCTAssertTrue("\(e)".contains("attentionForward") && "\(e)".contains("f16"), "\(e)")
        }
    }
}
