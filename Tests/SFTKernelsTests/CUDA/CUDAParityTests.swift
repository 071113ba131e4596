// Every op of the CUDA backend, forward and backward, against the CPU backend (itself checked
// against naive references and finite differences) on random inputs. Outputs are poisoned with
// NaN before each run, so an element a kernel fails to write fails the comparison. Runs where a
// GPU is usable; elsewhere skipped with the loader's one-sentence reason.

import Foundation
import SFTKernels
import XCTest

final class CUDAParityTests: XCTestCase {
    let cpu = CPUBackend.shared
    var gpu: CUDABackend!
    nonisolated(unsafe) static var toldWhy = false

    override func setUpWithError() throws {
        if let why = Device.cuda(0).unavailableReason {
            if !Self.toldWhy { print("CUDAParityTests skipped: \(why)"); Self.toldWhy = true }
            throw XCTSkip("no usable CUDA device: \(why)")
        }
        gpu = try CUDABackend.shared(ordinal: 0)
    }

    // MARK: helpers (the same calls on either backend)

    func put(_ b: any Backend, _ a: [Float]) throws -> BufferView {
        let v = BufferView(try b.allocate(bytes: max(1, a.count) * 4))
        try a.withUnsafeBytes { if $0.count > 0 { try b.upload($0.baseAddress!, to: v, bytes: $0.count) } }
        return v
    }
    func put(_ b: any Backend, _ a: [Int32]) throws -> BufferView {
        let v = BufferView(try b.allocate(bytes: max(1, a.count) * 4))
        try a.withUnsafeBytes { if $0.count > 0 { try b.upload($0.baseAddress!, to: v, bytes: $0.count) } }
        return v
    }
    func put(_ b: any Backend, _ a: [UInt16]) throws -> BufferView {
        let v = BufferView(try b.allocate(bytes: max(1, a.count) * 2))
        try a.withUnsafeBytes { if $0.count > 0 { try b.upload($0.baseAddress!, to: v, bytes: $0.count) } }
        return v
    }
    /// n floats of NaN: whatever a kernel does not write stays NaN.
    func poisoned(_ b: any Backend, _ n: Int) throws -> BufferView {
        try put(b, [Float](repeating: .nan, count: n))
    }
    func get(_ b: any Backend, _ v: BufferView, _ n: Int) throws -> [Float] {
        var a = [Float](repeating: 0, count: n)
        try a.withUnsafeMutableBytes { if $0.count > 0 { try b.download(v, to: $0.baseAddress!, bytes: $0.count) } }
        return a
    }
    func getHalves(_ b: any Backend, _ v: BufferView, _ n: Int) throws -> [UInt16] {
        var a = [UInt16](repeating: 0, count: n)
        try a.withUnsafeMutableBytes { if $0.count > 0 { try b.download(v, to: $0.baseAddress!, bytes: $0.count) } }
        return a
    }
    func getBytes(_ b: any Backend, _ v: BufferView, _ n: Int) throws -> [UInt8] {
        var a = [UInt8](repeating: 0, count: n)
        try a.withUnsafeMutableBytes { if $0.count > 0 { try b.download(v, to: $0.baseAddress!, bytes: $0.count) } }
        return a
    }

    /// Runs `body` on the CPU and on the GPU and compares every output it returns.
    func parity(_ what: String, rtol: Double = 1e-5, atol: Double = 1e-6,
                file: StaticString = #filePath, line: UInt = #line,
                _ body: (any Backend) throws -> [[Float]]) throws {
        let want = try body(cpu), got = try body(gpu)
        XCTAssertEqual(want.count, got.count, file: file, line: line)
        for (i, (g, w)) in zip(got, want).enumerated() {
            XCTAssertFalse(w.contains { $0.isNaN }, "\(what): CPU output \(i) has NaN (test bug)", file: file, line: line)
            assertClose(g, w.doubles, rtol: rtol, atol: atol, "\(what) output \(i)", file: file, line: line)
        }
    }

    // MARK: elementwise

    func testElementwiseOpsMatchCPU() throws {
        var rng = RNG(100)
        for n in [1, 7, 1000, 300_001] {
            let a = rng.floats(n, scale: 3), b = rng.floats(n, scale: 3), y0 = rng.floats(n)
            try parity("fill n=\(n)") { be in
                let y = try poisoned(be, n); try be.fill(y, value: 2.5, count: n); return [try get(be, y, n)]
            }
            try parity("add/mul/scale/axpy n=\(n)") { be in
                let va = try put(be, a), vb = try put(be, b)
                let s = try poisoned(be, n), m = try poisoned(be, n), c = try poisoned(be, n), y = try put(be, y0)
                try be.add(va, vb, into: s, count: n)
                try be.mul(va, vb, into: m, count: n)
                try be.scale(alpha: -0.75, va, into: c, count: n)
                try be.axpy(alpha: 0.5, vb, y, count: n)
                return [try get(be, s, n), try get(be, m, n), try get(be, c, n), try get(be, y, n)]
            }
            let want = try cpu.sumOfSquares(try put(cpu, a), count: n)
            let got = try gpu.sumOfSquares(try put(gpu, a), count: n)
            XCTAssertEqual(got, want, accuracy: 1e-9 * max(1, want), "sumOfSquares n=\(n)")
        }
    }

    func testCastsAreBitExactWithCPU() throws {
        var rng = RNG(101)
        let n = 5000
        var x = rng.floats(n, scale: 70000)
        x += [0, -0, .infinity, -.infinity, 1e-8, -3e-6, 6e-5, 65519, 65520, 1.00390625, 3.0e38]
        let m = x.count
        for (from, to) in [(DType.f32, DType.bf16), (.f32, .f16)] {
            let want: [UInt16], got: [UInt16]
            do {
                let vx = try put(cpu, x), vy = try put(cpu, [UInt16](repeating: 0xffff, count: m))
                try cpu.cast(vx, from: from, into: vy, to: to, count: m)
                want = try getHalves(cpu, vy, m)
            }
            do {
                let vx = try put(gpu, x), vy = try put(gpu, [UInt16](repeating: 0xffff, count: m))
                try gpu.cast(vx, from: from, into: vy, to: to, count: m)
                got = try getHalves(gpu, vy, m)
            }
            XCTAssertEqual(got, want, "\(from) -> \(to)")
            // ...and back, and across the two 16-bit types.
            for back in [DType.f32, from == .f32 && to == .bf16 ? DType.f16 : DType.bf16] {
                try parity("\(to) -> \(back)", rtol: 0, atol: 0) { be in
                    let v = try put(be, want), out = try put(be, [UInt16](repeating: 0xffff, count: 2 * m))
                    try be.cast(v, from: to, into: out, to: back, count: m)
                    if back == .f32 { return [try get(be, out, m)] }
                    return [try getHalves(be, out, m).map { Float($0) }]
                }
            }
        }
    }

    func testDropoutDrawsTheSameMaskAsCPU() throws {
        var rng = RNG(102)
        let n = 100_003
        let x = rng.floats(n)
        for (p, seed, offset) in [(Float(0.1), UInt64(7), UInt64(0)), (0.5, 0xdead_beef_1234, 1 << 33)] {
            var masks: [[UInt8]] = []
            try parity("dropout p=\(p)", rtol: 0, atol: 0) { be in
                let y = try poisoned(be, n), mask = BufferView(try be.allocate(bytes: n))
                try be.dropout(try put(be, x), into: y, mask: mask, count: n, p: p, seed: seed, offset: offset)
                masks.append(try getBytes(be, mask, n))
                return [try get(be, y, n)]
            }
            XCTAssertEqual(masks[0], masks[1], "dropout masks p=\(p)")
        }
    }

    // MARK: normalization

    func testNormsForwardAndBackwardMatchCPU() throws {
        var rng = RNG(103)
        for (N, C) in [(1, 7), (5, 33), (130, 576), (70, 2048)] {
            let x = rng.floats(N * C, scale: 2).map { $0 + 0.3 }, w = rng.floats(C), b = rng.floats(C)
            let dy = rng.floats(N * C), dw0 = rng.floats(C), db0 = rng.floats(C)
            try parity("rmsnorm N=\(N) C=\(C)", rtol: 1e-4, atol: 1e-5) { be in
                let vx = try put(be, x), vw = try put(be, w)
                let y = try poisoned(be, N * C), r = try poisoned(be, N), dx = try poisoned(be, N * C), dw = try put(be, dw0)
                try be.rmsnormForward(x: vx, weight: vw, y: y, rstd: r, N: N, C: C, eps: 1e-5)
                try be.rmsnormBackward(dy: try put(be, dy), x: vx, weight: vw, rstd: r, dx: dx, dweight: dw, N: N, C: C)
                return [try get(be, y, N * C), try get(be, r, N), try get(be, dx, N * C), try get(be, dw, C)]
            }
            for withBias in [false, true] {
                try parity("layernorm N=\(N) C=\(C) bias=\(withBias)", rtol: 1e-4, atol: 1e-5) { be in
                    let vx = try put(be, x), vw = try put(be, w), vb = withBias ? try put(be, b) : nil
                    let y = try poisoned(be, N * C), mu = try poisoned(be, N), r = try poisoned(be, N)
                    let dx = try poisoned(be, N * C), dw = try put(be, dw0), db = try put(be, db0)
                    try be.layernormForward(x: vx, weight: vw, bias: vb, y: y, mean: mu, rstd: r, N: N, C: C, eps: 1e-5)
                    try be.layernormBackward(dy: try put(be, dy), x: vx, weight: vw, mean: mu, rstd: r, dx: dx,
                                             dweight: dw, dbias: withBias ? db : nil, N: N, C: C)
                    return [try get(be, y, N * C), try get(be, mu, N), try get(be, r, N), try get(be, dx, N * C),
                            try get(be, dw, C), try get(be, db, C)]
                }
            }
        }
    }

    // MARK: rope

    func testRopeMatchesCPUOnStridedViewsAndInPlace() throws {
        var rng = RNG(104)
        let (N, H, D, ld) = (37, 3, 64, 3 * 64 + 40)
        let x = rng.floats(N * ld), pos = (0..<N).map { Int32(($0 * 7) % 23) }
        let invFreq = (0..<D / 2).map { Float(pow(10000.0, -2.0 * Double($0) / Double(D))) }
        for inverse in [false, true] {
            try parity("rope inverse=\(inverse)", rtol: 1e-5, atol: 1e-5) { be in
                let vx = try put(be, x), y = try poisoned(be, N * H * D), vp = try put(be, pos), vf = try put(be, invFreq)
                try be.rope(x: vx, ldx: ld, y: y, ldy: H * D, positions: vp, invFreq: vf, N: N, H: H, D: D, inverse: inverse)
                // in place on the strided view
                try be.rope(x: vx, ldx: ld, y: vx, ldy: ld, positions: vp, invFreq: vf, N: N, H: H, D: D, inverse: inverse)
                return [try get(be, y, N * H * D), try get(be, vx, N * ld)]
            }
        }
    }

    // MARK: attention

    func testAttentionForwardAndBackwardMatchCPU() throws {
        var rng = RNG(105)
        let cases: [(B: Int, T: Int, H: Int, KV: Int, D: Int, docs: Bool, alibi: Bool, fused: Bool)] = [
            (1, 1, 1, 1, 16, false, false, false),
            (2, 50, 4, 2, 16, true, true, false),
            (2, 77, 4, 2, 64, true, false, false),
            (1, 130, 4, 1, 80, true, true, true),
            (2, 45, 6, 3, 32, false, true, false),
            (1, 70, 2, 2, 128, true, false, true),
            (1, 33, 2, 1, 200, false, false, false),
        ]
        for c in cases {
            // fused: q, k, v are column slices of one (B·T, (H + 2 KV) D) buffer
            let width = (c.H + 2 * c.KV) * c.D
            let shape = c.fused
                ? AttentionShape(B: c.B, T: c.T, H: c.H, KV: c.KV, D: c.D, ldq: width, ldk: width, ldv: width)
                : AttentionShape(B: c.B, T: c.T, H: c.H, KV: c.KV, D: c.D)
            let rows = c.B * c.T
            let qkv = rng.floats(rows * width), q = rng.floats(rows * c.H * c.D), k = rng.floats(rows * c.KV * c.D)
            let v = rng.floats(rows * c.KV * c.D), dout = rng.floats(rows * c.H * c.D)
            var docs: [Int32] = []
            for _ in 0..<c.B {
                var id: Int32 = 0
                for t in 0..<c.T { if t > 0 && rng.uniform() < 0.06 { id += 1 }; docs.append(id) }
            }
            let slopes = (0..<c.H).map { Float(pow(2.0, -8.0 * Double($0 + 1) / Double(c.H))) }
            try parity("attention \(c)", rtol: 2e-4, atol: 2e-5) { be in
                let base = c.fused ? try put(be, qkv) : nil
                let vq = c.fused ? base! : try put(be, q)
                let vk = c.fused ? base!.advanced(byBytes: c.H * c.D * 4) : try put(be, k)
                let vv = c.fused ? base!.advanced(byBytes: (c.H + c.KV) * c.D * 4) : try put(be, v)
                let o = try poisoned(be, rows * c.H * c.D), lse = try poisoned(be, c.B * c.H * c.T)
                let vd = c.docs ? try put(be, docs) : nil, va = c.alibi ? try put(be, slopes) : nil
                try be.attentionForward(q: vq, k: vk, v: vv, o: o, lse: lse, docIds: vd, alibi: va, shape: shape)
                let gq = try poisoned(be, c.fused ? rows * width : rows * c.H * c.D)
                let gk = c.fused ? gq.advanced(byBytes: c.H * c.D * 4) : try poisoned(be, rows * c.KV * c.D)
                let gv = c.fused ? gq.advanced(byBytes: (c.H + c.KV) * c.D * 4) : try poisoned(be, rows * c.KV * c.D)
                try be.attentionBackward(q: vq, k: vk, v: vv, o: o, dout: try put(be, dout), lse: lse, docIds: vd,
                                         alibi: va, dq: gq, dk: gk, dv: gv, shape: shape)
                var out = [try get(be, o, rows * c.H * c.D), try get(be, lse, c.B * c.H * c.T)]
                if c.fused {
                    out.append(try get(be, gq, rows * width))
                } else {
                    out += [try get(be, gq, rows * c.H * c.D), try get(be, gk, rows * c.KV * c.D), try get(be, gv, rows * c.KV * c.D)]
                }
                return out
            }
        }
    }

    /// Attention-logit softcapping (Gemma 2) in forward and backward, alone and with documents, a
    /// sliding window and ALiBi; and in the cached decode step with and without ALiBi (MPT).
    func testSoftcapAttentionMatchesCPU() throws {
        var rng = RNG(141)
        for (T, window, docs, alibi, cap, D) in [(40, nil, false, false, Float(2), 16), (70, 16, true, false, 1.5, 64),
                                                 (33, nil, true, true, 3, 8), (50, 9, false, true, 0.5, 32)] as [(Int, Int?, Bool, Bool, Float, Int)] {
            let B = 2, H = 4, KV = 2, rows = B * T
            let shape = AttentionShape(B: B, T: T, H: H, KV: KV, D: D, window: window, softcap: cap)
            let q = rng.floats(rows * H * D, scale: 2), k = rng.floats(rows * KV * D, scale: 2), v = rng.floats(rows * KV * D)
            let dout = rng.floats(rows * H * D), slopes = (0..<H).map { Float(0.1 * Double($0 + 1)) }
            var ids: [Int32] = []
            for _ in 0..<B { var id: Int32 = 0; for t in 0..<T { if docs && t > 0 && rng.uniform() < 0.1 { id += 1 }; ids.append(id) } }
            try parity("softcap attention T=\(T) window=\(String(describing: window)) docs=\(docs) alibi=\(alibi) cap=\(cap) D=\(D)",
                       rtol: 2e-4, atol: 2e-5) { be in
                let vq = try put(be, q), vk = try put(be, k), vv = try put(be, v)
                let o = try poisoned(be, rows * H * D), lse = try poisoned(be, B * H * T)
                let vd = docs ? try put(be, ids) : nil, va = alibi ? try put(be, slopes) : nil
                try be.attentionForward(q: vq, k: vk, v: vv, o: o, lse: lse, docIds: vd, alibi: va, shape: shape)
                let gq = try poisoned(be, rows * H * D), gk = try poisoned(be, rows * KV * D), gv = try poisoned(be, rows * KV * D)
                try be.attentionBackward(q: vq, k: vk, v: vv, o: o, dout: try put(be, dout), lse: lse, docIds: vd,
                                         alibi: va, dq: gq, dk: gk, dv: gv, shape: shape)
                return [try get(be, o, rows * H * D), try get(be, lse, B * H * T), try get(be, gq, rows * H * D),
                        try get(be, gk, rows * KV * D), try get(be, gv, rows * KV * D)]
            }
        }
        for (Tq, S, H, KV, D, cap, alibi) in [(1, 50, 4, 2, 64, Float(2), false), (3, 40, 6, 2, 16, 0, true),
                                               (2, 37, 4, 4, 128, 1.5, true)] {
            let q = rng.floats(Tq * H * D, scale: 2), kc = rng.floats(S * KV * D, scale: 2), vc = rng.floats(S * KV * D)
            let slopes = (0..<H).map { Float(0.1 * Double($0 + 1)) }
            try parity("attentionCached Tq=\(Tq) S=\(S) softcap=\(cap) alibi=\(alibi)", rtol: 1e-4, atol: 1e-5) { be in
                let o = try poisoned(be, Tq * H * D)
                try be.attentionCached(q: try put(be, q), kCache: try put(be, kc), vCache: try put(be, vc), o: o,
                                       Tq: Tq, S: S, H: H, KV: KV, D: D, scale: 1 / Float(D).squareRoot(),
                                       alibi: alibi ? try put(be, slopes) : nil, softcap: cap)
                return [try get(be, o, Tq * H * D)]
            }
        }
    }

    /// The model zoo's ops: sliding-window attention (with documents), GELU / GeGLU in both
    /// forms, clamp (MPT's clip_qkv) and column slices of fused projections.
    func testZooOpsMatchCPU() throws {
        var rng = RNG(111)
        for (T, window, docs) in [(40, 7, false), (64, 16, true), (33, 1, true)] {
            let B = 2, H = 4, KV = 2, D = 16, rows = B * T
            let shape = AttentionShape(B: B, T: T, H: H, KV: KV, D: D, window: window)
            let q = rng.floats(rows * H * D), k = rng.floats(rows * KV * D), v = rng.floats(rows * KV * D), dout = rng.floats(rows * H * D)
            var ids: [Int32] = []
            for _ in 0..<B { var id: Int32 = 0; for t in 0..<T { if docs && t > 0 && rng.uniform() < 0.1 { id += 1 }; ids.append(id) } }
            try parity("window attention T=\(T) window=\(window) docs=\(docs)", rtol: 2e-4, atol: 2e-5) { be in
                let vq = try put(be, q), vk = try put(be, k), vv = try put(be, v)
                let o = try poisoned(be, rows * H * D), lse = try poisoned(be, B * H * T)
                let vd = docs ? try put(be, ids) : nil
                try be.attentionForward(q: vq, k: vk, v: vv, o: o, lse: lse, docIds: vd, alibi: nil, shape: shape)
                let gq = try poisoned(be, rows * H * D), gk = try poisoned(be, rows * KV * D), gv = try poisoned(be, rows * KV * D)
                try be.attentionBackward(q: vq, k: vk, v: vv, o: o, dout: try put(be, dout), lse: lse, docIds: vd,
                                         alibi: nil, dq: gq, dk: gk, dv: gv, shape: shape)
                return [try get(be, o, rows * H * D), try get(be, gq, rows * H * D), try get(be, gk, rows * KV * D), try get(be, gv, rows * KV * D)]
            }
        }
        for n in [1, 1000, 70_001] {
            let x = rng.floats(n, scale: 3), up = rng.floats(n), dy = rng.floats(n)
            for approximate in [true, false] {
                try parity("gelu/geglu n=\(n) approximate=\(approximate)", rtol: 1e-5, atol: 1e-6) { be in
                    let vx = try put(be, x), vu = try put(be, up), vdy = try put(be, dy)
                    let y = try poisoned(be, n), yg = try poisoned(be, n), dx = try poisoned(be, n), dxg = try poisoned(be, n), dup = try poisoned(be, n)
                    try be.geluForward(x: vx, up: nil, y: y, count: n, approximate: approximate)
                    try be.geluForward(x: vx, up: vu, y: yg, count: n, approximate: approximate)
                    try be.geluBackward(dy: vdy, x: vx, up: nil, dx: dx, dup: nil, count: n, approximate: approximate)
                    try be.geluBackward(dy: vdy, x: vx, up: vu, dx: dxg, dup: dup, count: n, approximate: approximate)
                    return [try get(be, y, n), try get(be, yg, n), try get(be, dx, n), try get(be, dxg, n), try get(be, dup, n)]
                }
            }
            try parity("clamp n=\(n)") { be in
                let vx = try put(be, x), y = try poisoned(be, n), dx = try poisoned(be, n)
                try be.clampForward(vx, into: y, count: n, limit: 1.5)
                try be.clampBackward(dy: try put(be, dy), x: vx, dx: dx, count: n, limit: 1.5)
                return [try get(be, y, n), try get(be, dx, n)]
            }
        }
        let rows = 37, ld = 96, width = 40
        let src = rng.floats(rows * ld)
        try parity("copyColumns") { be in
            let dst = try poisoned(be, rows * width)
            try be.copyColumns(try put(be, src).advanced(byBytes: 24 * 4), ldSrc: ld, into: dst, ldDst: width, rows: rows, width: width)
            return [try get(be, dst, rows * width)]
        }
    }

    func testCachedAttentionMatchesCPU() throws {
        var rng = RNG(106)
        for (Tq, S, H, KV, D) in [(1, 1, 2, 1, 64), (1, 50, 4, 2, 64), (5, 40, 6, 2, 80), (3, 300, 2, 2, 128),
                                   (2, 37, 4, 2, 16), (1, 20, 2, 1, 200)] {
            let q = rng.floats(Tq * H * D), kc = rng.floats(S * KV * D), vc = rng.floats(S * KV * D)
            try parity("attentionCached Tq=\(Tq) S=\(S) H=\(H) KV=\(KV) D=\(D)", rtol: 1e-4, atol: 1e-5) { be in
                let o = try poisoned(be, Tq * H * D)
                try be.attentionCached(q: try put(be, q), kCache: try put(be, kc), vCache: try put(be, vc), o: o,
                                       Tq: Tq, S: S, H: H, KV: KV, D: D, scale: 1 / Float(D).squareRoot(),
                                       alibi: nil, softcap: 0)
                return [try get(be, o, Tq * H * D)]
            }
        }
    }

    // MARK: swiglu, embedding, optimizer

    func testSwiGLUMatchesCPU() throws {
        var rng = RNG(107)
        let n = 100_001
        let g = rng.floats(n, scale: 6), u = rng.floats(n, scale: 2), dh = rng.floats(n)
        try parity("swiglu", rtol: 1e-5, atol: 1e-6) { be in
            let vg = try put(be, g), vu = try put(be, u)
            let h = try poisoned(be, n), dg = try poisoned(be, n), du = try poisoned(be, n)
            try be.swigluForward(gate: vg, up: vu, h: h, count: n)
            try be.swigluBackward(dh: try put(be, dh), gate: vg, up: vu, dgate: dg, dup: du, count: n)
            return [try get(be, h, n), try get(be, dg, n), try get(be, du, n)]
        }
    }

    func testEmbeddingGatherAndScatterAddMatchCPU() throws {
        var rng = RNG(108)
        let (N, C, V) = (300, 96, 50)   // ids repeat: the backward must accumulate
        let ids = (0..<N).map { _ in Int32(rng.int(0..<V)) }, table = rng.floats(V * C), dout = rng.floats(N * C)
        let dt0 = rng.floats(V * C)
        try parity("embedding", rtol: 1e-5, atol: 1e-5) { be in
            let vi = try put(be, ids), out = try poisoned(be, N * C), dt = try put(be, dt0)
            try be.embeddingForward(ids: vi, table: try put(be, table), out: out, N: N, C: C, V: V)
            try be.embeddingBackward(ids: vi, dout: try put(be, dout), dtable: dt, N: N, C: C)
            return [try get(be, out, N * C), try get(be, dt, V * C)]
        }
    }

    func testEmbeddingIdOutsideTheTableThrowsAtTheNextSynchronize() throws {
        let (N, C, V) = (4, 8, 10)
        let out = try poisoned(gpu, N * C)
        try gpu.embeddingForward(ids: try put(gpu, [Int32(1), 2, 10, 3]), table: try put(gpu, [Float](repeating: 1, count: V * C)),
                                 out: out, N: N, C: C, V: V)
        XCTAssertThrowsError(try gpu.synchronize()) { error in
            XCTAssertTrue("\(error)".contains("token id 10 at row 2"), "\(error)")
        }
        XCTAssertNoThrow(try gpu.synchronize(), "the error is reported once")
    }

    func testAdamWSingleAndMultiTensorMatchCPU() throws {
        var rng = RNG(109)
        let sizes = [1, 5000, 4096, 70_000]
        let step = AdamWStep(lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step: 3)
        let p = sizes.map { rng.floats($0) }, g = sizes.map { rng.floats($0) }
        let m = sizes.map { rng.floats($0, scale: 0.1) }, v = sizes.map { rng.floats($0, scale: 0.01).map(abs) }
        var cpuOut: [[Float]] = []
        for i in sizes.indices {
            let vp = try put(cpu, p[i]), vm = try put(cpu, m[i]), vv = try put(cpu, v[i])
            try cpu.adamw(param: vp, grad: try put(cpu, g[i]), m: vm, v: vv, count: sizes[i], step: step)
            cpuOut += [try get(cpu, vp, sizes[i]), try get(cpu, vm, sizes[i]), try get(cpu, vv, sizes[i])]
        }
        var single: [[Float]] = [], tensors: [CUDABackend.AdamWTensor] = [], views: [(BufferView, BufferView, BufferView)] = []
        for i in sizes.indices {
            let vp = try put(gpu, p[i]), vm = try put(gpu, m[i]), vv = try put(gpu, v[i])
            try gpu.adamw(param: vp, grad: try put(gpu, g[i]), m: vm, v: vv, count: sizes[i], step: step)
            single += [try get(gpu, vp, sizes[i]), try get(gpu, vm, sizes[i]), try get(gpu, vv, sizes[i])]
            let wp = try put(gpu, p[i]), wm = try put(gpu, m[i]), wv = try put(gpu, v[i])
            tensors.append(.init(param: wp, grad: try put(gpu, g[i]), m: wm, v: wv, count: sizes[i], weightDecay: 0.1))
            views.append((wp, wm, wv))
        }
        try gpu.adamw(tensors, step: step)
        var multi: [[Float]] = []
        for (i, (wp, wm, wv)) in views.enumerated() {
            multi += [try get(gpu, wp, sizes[i]), try get(gpu, wm, sizes[i]), try get(gpu, wv, sizes[i])]
        }
        for i in cpuOut.indices {
            assertClose(single[i], cpuOut[i].doubles, rtol: 1e-5, atol: 1e-7, "adamw single \(i)")
            assertClose(multi[i], cpuOut[i].doubles, rtol: 1e-5, atol: 1e-7, "adamw multi \(i)")
        }
    }

    // MARK: GEMM and the fused LM head

    func testGemmMatchesCPUForEveryTransposeBatchAndStride() throws {
        var rng = RNG(110)
        for (M, N, K, batch) in [(1, 1, 1, 1), (17, 33, 65, 1), (64, 48, 96, 3), (5, 7, 0, 2), (128, 256, 64, 1)] {
            for transA in [false, true] {
                for transB in [false, true] {
                    let lda = (transA ? M : K) + 3, ldb = (transB ? K : N) + 1, ldc = N + 2
                    let sA = (transA ? K : M) * lda + 5, sB = (transB ? N : K) * ldb, sC = M * ldc + 4
                    let a = rng.floats(batch * sA), b = rng.floats(batch * sB), c0 = rng.floats(batch * sC)
                    try parity("gemm M=\(M) N=\(N) K=\(K) batch=\(batch) tA=\(transA) tB=\(transB)", rtol: 1e-4, atol: 1e-5) { be in
                        let c = try put(be, c0)
                        try be.gemm(transA: transA, transB: transB, M: M, N: N, K: K, alpha: 0.7, A: try put(be, a), lda: lda,
                                    strideA: sA, B: try put(be, b), ldb: ldb, strideB: sB, beta: K == 0 ? 0 : 0.3, C: c,
                                    ldc: ldc, strideC: sC, batch: batch)
                        return [try get(be, c, batch * sC)]
                    }
                }
            }
        }
    }

    func testBF16GemmAccumulatesInF32() throws {
        var rng = RNG(111)
        let (M, N, K) = (64, 96, 512)
        // bf16 inputs: the CPU reference multiplies the same (rounded) values in f32.
        let a = rng.floats(M * K), b = rng.floats(N * K)
        let ab = try put(cpu, [UInt16](repeating: 0, count: M * K)), bb = try put(cpu, [UInt16](repeating: 0, count: N * K))
        try cpu.cast(try put(cpu, a), from: .f32, into: ab, to: .bf16, count: M * K)
        try cpu.cast(try put(cpu, b), from: .f32, into: bb, to: .bf16, count: N * K)
        let a16 = try getHalves(cpu, ab, M * K), b16 = try getHalves(cpu, bb, N * K)
        let ar = try put(cpu, [Float](repeating: 0, count: M * K)), br = try put(cpu, [Float](repeating: 0, count: N * K))
        try cpu.cast(ab, from: .bf16, into: ar, to: .f32, count: M * K)
        try cpu.cast(bb, from: .bf16, into: br, to: .f32, count: N * K)
        let want = try poisoned(cpu, M * N)
        try cpu.gemm(transA: false, transB: true, M: M, N: N, K: K, alpha: 1, A: ar, lda: K, strideA: 0, B: br, ldb: K,
                     strideB: 0, beta: 0, C: want, ldc: N, strideC: 0, batch: 1)
        let c = try poisoned(gpu, M * N)
        try gpu.gemm(transA: false, transB: true, M: M, N: N, K: K, alpha: 1, A: try put(gpu, a16), aType: .bf16, lda: K,
                     strideA: 0, B: try put(gpu, b16), bType: .bf16, ldb: K, strideB: 0, beta: 0, C: c, cType: .f32, ldc: N,
                     strideC: 0, batch: 1)
        assertClose(try get(gpu, c, M * N), try get(cpu, want, M * N).doubles, rtol: 1e-4, atol: 1e-4, "bf16 gemm")
    }

    func testFusedLMHeadCrossEntropyMatchesCPU() throws {
        var rng = RNG(112)
        let (N, C, V) = (37, 24, 301)
        let x = rng.floats(N * C), w = rng.floats(V * C, scale: 0.5), dw0 = rng.floats(V * C)
        let targets = (0..<N).map { i in i % 4 == 1 ? Int32(-100) : Int32(rng.int(0..<V)) }
        var losses: [(Double, Int)] = []
        try parity("crossEntropyLMHead", rtol: 1e-4, atol: 1e-5) { be in
            let dx = try poisoned(be, N * C), dw = try put(be, dw0)
            let r = try be.crossEntropyLMHead(x: try put(be, x), weight: try put(be, w), targets: try put(be, targets), N: N, C: C,
                                              V: V, ignoreIndex: -100, chunk: 8, gradScale: 0.25, dx: dx, dweight: dw)
            losses.append(r)
            return [try get(be, dx, N * C), try get(be, dw, V * C)]
        }
        XCTAssertEqual(losses[1].1, losses[0].1)
        XCTAssertEqual(losses[1].0, losses[0].0, accuracy: 1e-4 * abs(losses[0].0))
    }

    func testSoftcappedLMHeadCrossEntropyMatchesCPU() throws {
        var rng = RNG(152)
        let (N, C, V) = (29, 24, 301)
        let x = rng.floats(N * C), w = rng.floats(V * C), dw0 = rng.floats(V * C)
        let targets = (0..<N).map { i in i % 4 == 1 ? Int32(-100) : Int32(rng.int(0..<V)) }
        var losses: [(Double, Int)] = []
        try parity("crossEntropyLMHead softcap", rtol: 1e-4, atol: 1e-5) { be in
            let dx = try poisoned(be, N * C), dw = try put(be, dw0)
            let r = try be.crossEntropyLMHead(x: try put(be, x), weight: try put(be, w), targets: try put(be, targets), N: N, C: C,
                                              V: V, ignoreIndex: -100, chunk: 8, gradScale: 0.25, softcap: 2.5, dx: dx, dweight: dw)
            losses.append(r)
            return [try get(be, dx, N * C), try get(be, dw, V * C)]
        }
        XCTAssertEqual(losses[1].1, losses[0].1)
        XCTAssertEqual(losses[1].0, losses[0].0, accuracy: 1e-4 * abs(losses[0].0))
    }

    func testBF16OpsMatchCPUOnRoundedValues() throws {
        var rng = RNG(113)
        let (N, C) = (9, 576), n = N * C
        // bf16 inputs; the CPU computes in f32 on the same values and rounds its result to bf16.
        func bf16(_ a: [Float]) throws -> [UInt16] {
            let v = try put(cpu, [UInt16](repeating: 0, count: a.count))
            try cpu.cast(try put(cpu, a), from: .f32, into: v, to: .bf16, count: a.count)
            return try getHalves(cpu, v, a.count)
        }
        func widen(_ b: any Backend, _ v: BufferView, _ count: Int) throws -> [Float] {
            let out = try poisoned(b, count)
            try b.cast(v, from: .bf16, into: out, to: .f32, count: count)
            return try get(b, out, count)
        }
        let a = try bf16(rng.floats(n, scale: 3)), b = try bf16(rng.floats(n, scale: 3)), w = rng.floats(C)
        // CPU reference in f32, rounded to bf16
        let fa = try widen(cpu, try put(cpu, a), n), fb = try widen(cpu, try put(cpu, b), n)
        let ref = (sum: try poisoned(cpu, n), norm: try poisoned(cpu, n), rstd: try poisoned(cpu, N), swi: try poisoned(cpu, n))
        try cpu.add(try put(cpu, fa), try put(cpu, fb), into: ref.sum, count: n)
        try cpu.rmsnormForward(x: try put(cpu, fa), weight: try put(cpu, w), y: ref.norm, rstd: ref.rstd, N: N, C: C, eps: 1e-5)
        try cpu.swigluForward(gate: try put(cpu, fa), up: try put(cpu, fb), h: ref.swi, count: n)
        func rounded(_ v: BufferView) throws -> [Double] {
            let h = BufferView(try cpu.allocate(bytes: n * 2))
            try cpu.cast(v, from: .f32, into: h, to: .bf16, count: n)
            return try widen(cpu, h, n).doubles
        }
        let ga = try put(gpu, a), gb = try put(gpu, b)
        let sum = try put(gpu, [UInt16](repeating: 0xffff, count: n)), norm = try put(gpu, [UInt16](repeating: 0xffff, count: n))
        let swi = try put(gpu, [UInt16](repeating: 0xffff, count: n)), rstd = try poisoned(gpu, N)
        try gpu.addBF16(ga, gb, into: sum, count: n)
        try gpu.rmsnormForwardBF16(x: ga, weight: try put(gpu, w), y: norm, rstd: rstd, N: N, C: C, eps: 1e-5)
        try gpu.swigluForwardBF16(gate: ga, up: gb, h: swi, count: n)
        // One bf16 step (2^-8 relative) covers a different rounding of the f32 intermediate.
        assertClose(try widen(gpu, sum, n), try rounded(ref.sum), rtol: 0, atol: 0, "bf16 add")
        assertClose(try widen(gpu, norm, n), try rounded(ref.norm), rtol: 8e-3, atol: 1e-6, "bf16 rmsnorm")
        assertClose(try get(gpu, rstd, N), try get(cpu, ref.rstd, N).doubles, rtol: 1e-5, atol: 0, "bf16 rmsnorm rstd")
        assertClose(try widen(gpu, swi, n), try rounded(ref.swi), rtol: 8e-3, atol: 1e-6, "bf16 swiglu")
    }

    func testAllocatorRecordsCurrentPeakAndCachedBytes() throws {
        try gpu.synchronize()
        gpu.resetPeakMemory()
        let before = gpu.memoryStats
        do {
            let a = try gpu.allocate(bytes: 3 << 20)
            XCTAssertGreaterThanOrEqual(gpu.memoryStats.currentBytes, before.currentBytes + (3 << 20))
            _ = a
        }
        let after = gpu.memoryStats
        XCTAssertEqual(after.currentBytes, before.currentBytes)
        XCTAssertGreaterThanOrEqual(after.peakBytes, before.currentBytes + (3 << 20))
        XCTAssertGreaterThanOrEqual(after.cachedBytes, 3 << 20)
        gpu.emptyCache()
        XCTAssertEqual(gpu.memoryStats.cachedBytes, 0)
    }
}
