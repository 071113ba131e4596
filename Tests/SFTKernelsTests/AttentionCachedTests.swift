// Attention against a KV cache (generation): Tq new queries at the end of S cached tokens give
// the last Tq rows of full causal attention (the Double reference), on every instruction set,
// for cache lengths around the kernel's 4-key steps and 8-wide sums, head dims with and
// without a 16/64-wide remainder, GQA ratios 1 and 3, and any split over heads.

import CSFTKernels
import SFTKernels
import XCTest

final class AttentionCachedTests: XCTestCase {
    func testCachedQueriesEqualTheLastRowsOfCausalAttention() {
        var rng = RNG(71)
        let cases: [(Tq: Int, S: Int, H: Int, KV: Int, D: Int)] = [
            (1, 1, 1, 1, 64), (1, 5, 9, 3, 64), (1, 70, 9, 3, 64), (2, 67, 4, 4, 40), (3, 33, 6, 2, 80),
            (1, 300, 3, 1, 16), (4, 9, 2, 1, 8),
        ]
        forEachISA { isa in
            for c in cases {
                let scale = 1 / Float(c.D).squareRoot()
                let q = rng.floats(c.S * c.H * c.D, scale: 2), k = rng.floats(c.S * c.KV * c.D, scale: 2)
                let v = rng.floats(c.S * c.KV * c.D)
                let want = Ref.attention(q: q.doubles, k: k.doubles, v: v.doubles, doc: nil, alibi: nil, B: 1, T: c.S,
                                         H: c.H, KV: c.KV, D: c.D, scale: Double(scale)).o
                let lastRows = Array(want[((c.S - c.Tq) * c.H * c.D)...])
                let newQ = Array(q[((c.S - c.Tq) * c.H * c.D)...])
                for nparts in [1, 2, 3] {
                    var o = [Float](repeating: .nan, count: c.Tq * c.H * c.D)
                    for part in 0..<nparts {
                        sft_attention_cached_f32(newQ, k, v, &o, Int64(c.Tq), Int64(c.S), Int64(c.H), Int64(c.KV), Int64(c.D),
                                                 scale, nil, 0, Int32(part), Int32(nparts))
                    }
                    assertClose(o, lastRows, rtol: 1e-5, atol: 1e-6, "\(isa) Tq=\(c.Tq) S=\(c.S) H=\(c.H) KV=\(c.KV) D=\(c.D) parts=\(nparts)")
                }
            }
        }
    }
}
