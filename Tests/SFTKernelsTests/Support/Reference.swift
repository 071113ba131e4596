// Naive reference implementations of the op set, in Double, written for reading rather than
// speed: every fast kernel is compared with these, and finite differences of these give the
// numeric gradients the backward kernels are checked against.

import Foundation

enum Ref {
    // MARK: GEMM

    /// C = alpha op(A) op(B) + beta C for one batch entry, row-major with leading dimensions.
    static func gemm(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Double,
                     A: [Float], aOffset: Int, lda: Int, B: [Float], bOffset: Int, ldb: Int,
                     beta: Double, C: [Float], cOffset: Int, ldc: Int) -> [Double] {
        var out = [Double](repeating: 0, count: M * N)
        for i in 0..<M {
            for j in 0..<N {
                var s = 0.0
                for p in 0..<K {
                    let a = transA ? A[aOffset + p * lda + i] : A[aOffset + i * lda + p]
                    let b = transB ? B[bOffset + j * ldb + p] : B[bOffset + p * ldb + j]
                    s += Double(a) * Double(b)
                }
                out[i * N + j] = alpha * s + beta * Double(C[cOffset + i * ldc + j])
            }
        }
        return out
    }

    // MARK: normalization

    static func rmsnorm(_ x: [Double], _ w: [Double], N: Int, C: Int, eps: Double) -> [Double] {
        var y = x
        for n in 0..<N {
            let row = x[n * C..<(n + 1) * C]
            let r = 1 / (row.map { $0 * $0 }.reduce(0, +) / Double(C) + eps).squareRoot()
            for c in 0..<C { y[n * C + c] = x[n * C + c] * r * w[c] }
        }
        return y
    }

    static func layernorm(_ x: [Double], _ w: [Double], _ b: [Double]?, N: Int, C: Int, eps: Double) -> [Double] {
        var y = x
        for n in 0..<N {
            let row = x[n * C..<(n + 1) * C]
            let mu = row.reduce(0, +) / Double(C)
            let variance = row.map { ($0 - mu) * ($0 - mu) }.reduce(0, +) / Double(C)
            let r = 1 / (variance + eps).squareRoot()
            for c in 0..<C { y[n * C + c] = (x[n * C + c] - mu) * r * w[c] + (b?[c] ?? 0) }
        }
        return y
    }

    // MARK: rope

    /// Rotate-half RoPE of a (N, H, D) slice with row stride ldx; returns dense (N, H, D).
    static func rope(_ x: [Double], ldx: Int, offset: Int = 0, positions: [Int32], invFreq: [Float],
                     N: Int, H: Int, D: Int, inverse: Bool) -> [Double] {
        var y = [Double](repeating: 0, count: N * H * D)
        let half = D / 2
        for n in 0..<N {
            for i in 0..<half {
                // The angle is formed in f32, as in the HF reference implementation.
                let angle = Double(Float(positions[n]) * invFreq[i])
                let (c, s) = (cos(angle), inverse ? -sin(angle) : sin(angle))
                for h in 0..<H {
                    let a = x[offset + n * ldx + h * D + i], b = x[offset + n * ldx + h * D + i + half]
                    y[(n * H + h) * D + i] = a * c - b * s
                    y[(n * H + h) * D + i + half] = b * c + a * s
                }
            }
        }
        return y
    }

    static func invFreq(D: Int, base: Double = 10000) -> [Float] {
        (0..<D / 2).map { Float(1 / pow(base, Double(2 * $0) / Double(D))) }
    }

    // MARK: attention

    /// Causal attention over dense q (B, T, H, D), k, v (B, T, KV, D). Token t sees s <= t in
    /// the same run of equal document ids. Returns o (B, T, H, D) and lse (B, H, T).
    static func attention(q: [Double], k: [Double], v: [Double], doc: [Int32]?, alibi: [Double]?,
                          B: Int, T: Int, H: Int, KV: Int, D: Int, scale: Double) -> (o: [Double], lse: [Double]) {
        var o = [Double](repeating: 0, count: B * T * H * D)
        var lse = [Double](repeating: 0, count: B * H * T)
        for b in 0..<B {
            for h in 0..<H {
                let g = h / (H / KV)
                for t in 0..<T {
                    var first = t   // start of t's document
                    if let doc { while first > 0 && doc[b * T + first - 1] == doc[b * T + t] { first -= 1 } } else { first = 0 }
                    var scores: [Double] = []
                    for s in first...t {
                        var dot = 0.0
                        for d in 0..<D { dot += q[((b * T + t) * H + h) * D + d] * k[((b * T + s) * KV + g) * D + d] }
                        scores.append(scale * dot - (alibi?[h] ?? 0) * Double(t - s))
                    }
                    let m = scores.max()!
                    let sum = scores.map { exp($0 - m) }.reduce(0, +)
                    lse[(b * H + h) * T + t] = m + log(sum)
                    for (j, s) in (first...t).enumerated() {
                        let p = exp(scores[j] - m) / sum
                        for d in 0..<D { o[((b * T + t) * H + h) * D + d] += p * v[((b * T + s) * KV + g) * D + d] }
                    }
                }
            }
        }
        return (o, lse)
    }

    /// The bf16 attention forward's o (FlashAttention's semantics, the CPU and CUDA bf16
    /// kernels'): keys are taken tile by tile (`tile(b, t, s)`: the tile of key s for query t,
    /// non-decreasing in s), m is the running max of the scores over the tiles so far, and
    /// O = sum_s bf16(exp(score_s - m)) v_s, rescaled by exp(m_old - m) as m grows, divided by
    /// l = the same sum over the unrounded exp(score_s - m). dense q (B, T, H, D), k and v
    /// (B, T, KV, D); score = softcap(scale q·k) - slope_h (t - s) for s in t's document,
    /// t - window < s <= t. bf16(x) rounds x to f32, then to bf16 (nearest even, as the kernels).
    /// A p within 2^-8 of a bf16 step of a tie (f32 kernels compute p to a few f32 ulps, which
    /// may round it the other way) adds what the other rounding would move o by, one bf16 step
    /// of p times |v_s| / l, to `tie` (the same shape as o): the kernel's o is o ± tie.
    static func attentionRoundedP(q: [Double], k: [Double], v: [Double], doc: [Int32]?, alibi: [Double]?,
                                  window: Int?, softcap: Double, B: Int, T: Int, H: Int, KV: Int, D: Int,
                                  scale: Double, tile: (_ b: Int, _ t: Int, _ s: Int) -> Int)
        -> (o: [Double], tie: [Double]) {
        /// x rounded to bf16, and the bf16 step at x when x is near a tie (else 0).
        func bf16(_ x: Double) -> (Double, Double) {
            let u = Float(x).bitPattern, low = Int(u & 0xffff)
            let r = Double(Float(bitPattern: ((u &+ 0x7fff &+ ((u >> 16) & 1)) >> 16) << 16))
            let step = Double(Float(bitPattern: (u & 0xffff_0000) &+ 0x1_0000)) - Double(Float(bitPattern: u & 0xffff_0000))
            return (r, abs(low - 0x8000) <= 0x100 ? step : 0)
        }
        var o = [Double](repeating: 0, count: B * T * H * D), tie = o
        for b in 0..<B {
            for h in 0..<H {
                let g = h / (H / KV)
                for t in 0..<T {
                    var first = t   // start of t's document, or of its window when later
                    if let doc { while first > 0 && doc[b * T + first - 1] == doc[b * T + t] { first -= 1 } } else { first = 0 }
                    if let window { first = max(first, t - window + 1) }
                    var m = -Double.infinity, l = 0.0, acc = [Double](repeating: 0, count: D), slack = acc
                    var s0 = first
                    while s0 <= t {   // one tile: keys [s0, s1)
                        var s1 = s0 + 1
                        while s1 <= t && tile(b, t, s1) == tile(b, t, s0) { s1 += 1 }
                        let scores = (s0..<s1).map { s -> Double in
                            var dot = 0.0
                            for d in 0..<D { dot += q[((b * T + t) * H + h) * D + d] * k[((b * T + s) * KV + g) * D + d] }
                            let x = scale * dot, y = softcap > 0 ? softcap * tanh(x / softcap) : x
                            return y - (alibi?[h] ?? 0) * Double(t - s)
                        }
                        let mx = max(m, scores.max()!), c = exp(m - mx)
                        l *= c
                        for d in 0..<D { acc[d] *= c; slack[d] *= c }
                        for (j, s) in (s0..<s1).enumerated() {
                            let p = exp(scores[j] - mx), (pr, step) = bf16(p)
                            l += p
                            for d in 0..<D {
                                acc[d] += pr * v[((b * T + s) * KV + g) * D + d]
                                slack[d] += step * abs(v[((b * T + s) * KV + g) * D + d])
                            }
                        }
                        m = mx
                        s0 = s1
                    }
                    for d in 0..<D {
                        o[((b * T + t) * H + h) * D + d] = acc[d] / l
                        tie[((b * T + t) * H + h) * D + d] = slack[d] / l
                    }
                }
            }
        }
        return (o, tie)
    }

    /// The backward of `attention` for L = sum(o * dout), written out per query row:
    ///   dp_s = do_t · v_s,  delta_t = sum_s p_s dp_s,  ds = p (dp - delta)
    ///   dq_t += scale ds k_s,  dk_s += scale ds q_t,  dv_s += p do_t
    static func attentionBackward(q: [Double], k: [Double], v: [Double], dout: [Double], doc: [Int32]?,
                                  alibi: [Double]?, B: Int, T: Int, H: Int, KV: Int, D: Int,
                                  scale: Double) -> (dq: [Double], dk: [Double], dv: [Double]) {
        var dq = [Double](repeating: 0, count: q.count)
        var dk = [Double](repeating: 0, count: k.count), dv = [Double](repeating: 0, count: v.count)
        func qi(_ b: Int, _ t: Int, _ h: Int) -> Int { ((b * T + t) * H + h) * D }
        func ki(_ b: Int, _ s: Int, _ g: Int) -> Int { ((b * T + s) * KV + g) * D }
        for b in 0..<B {
            for h in 0..<H {
                let g = h / (H / KV)
                for t in 0..<T {
                    var first = t
                    if let doc { while first > 0 && doc[b * T + first - 1] == doc[b * T + t] { first -= 1 } } else { first = 0 }
                    let keys = Array(first...t)
                    let scores = keys.map { s in
                        scale * (0..<D).reduce(0.0) { $0 + q[qi(b, t, h) + $1] * k[ki(b, s, g) + $1] } - (alibi?[h] ?? 0) * Double(t - s)
                    }
                    let m = scores.max()!
                    let sum = scores.map { exp($0 - m) }.reduce(0, +)
                    let p = scores.map { exp($0 - m) / sum }
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
        return (dq, dk, dv)
    }

    // MARK: swiglu, embedding

    static func swiglu(_ g: [Double], _ u: [Double]) -> [Double] {
        zip(g, u).map { g, u in g / (1 + exp(-g)) * u }
    }

    static func embedding(ids: [Int32], table: [Double], C: Int) -> [Double] {
        ids.flatMap { table[Int($0) * C..<(Int($0) + 1) * C] }
    }

    // MARK: LM head cross-entropy

    /// sum over rows with target != ignore of logsumexp(x W^T) - (x W^T)[target]; x (N, C), W (V, C).
    static func lmHeadLoss(x: [Double], w: [Double], targets: [Int32], N: Int, C: Int, V: Int, ignore: Int32) -> Double {
        var loss = 0.0
        for n in 0..<N where targets[n] != ignore {
            var z = [Double](repeating: 0, count: V)
            for j in 0..<V { for c in 0..<C { z[j] += x[n * C + c] * w[j * C + c] } }
            let m = z.max()!
            loss += m + log(z.map { exp($0 - m) }.reduce(0, +)) - z[Int(targets[n])]
        }
        return loss
    }

    // MARK: AdamW

    static func adamw(p: inout [Double], g: [Double], m: inout [Double], v: inout [Double], lr: Double,
                      b1: Double, b2: Double, eps: Double, wd: Double, step: Int) {
        let bc1 = 1 - pow(b1, Double(step)), bc2 = 1 - pow(b2, Double(step))
        for i in 0..<p.count {
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
            p[i] -= lr * ((m[i] / bc1) / ((v[i] / bc2).squareRoot() + eps) + wd * p[i])
        }
    }

    // MARK: storage types

    /// f32 -> bf16 bits by the definition: the nearer of the two bf16 neighbours, ties to the
    /// even one; beyond the largest finite bf16 by half an ulp it is infinity; NaN stays NaN.
    static func bf16(_ x: Float) -> UInt16 {
        if x.isNaN { return UInt16(x.bitPattern >> 16) | 0x40 }
        let down = UInt16(x.bitPattern >> 16)             // toward zero
        let up = down &+ 1                                 // away from zero
        func value(_ h: UInt16) -> Double {
            // bf16 0x7f80 (inf) stands for 2^128 when rounding: the next "finite" step.
            if h & 0x7fff == 0x7f80 { return (h & 0x8000 != 0 ? -1 : 1) * 0x1p128 }
            return Double(Float(bitPattern: UInt32(h) << 16))
        }
        if x.isInfinite || Float(bitPattern: UInt32(down) << 16) == x { return down }
        let dd = abs(Double(x) - value(down)), du = abs(value(up) - Double(x))
        if dd < du { return down }
        if du < dd { return up }
        return down & 1 == 0 ? down : up
    }

    // MARK: dropout mask (the hash spelled out in the C header's dropout comment)

    static func dropoutKeep(seed: UInt64, index: UInt64, p: Float) -> Bool {
        func mix(_ x: UInt32) -> UInt32 {
            var x = x
            x ^= x >> 16; x = x &* 0x7feb_352d
            x ^= x >> 15; x = x &* 0x846c_a68b
            x ^= x >> 16
            return x
        }
        var h = mix(UInt32(truncatingIfNeeded: index) ^ UInt32(truncatingIfNeeded: seed))
        h = mix(h ^ UInt32(truncatingIfNeeded: index >> 32) ^ UInt32(truncatingIfNeeded: seed >> 32))
        return Double(h >> 8) * 0x1p-24 >= Double(p)
    }
}
