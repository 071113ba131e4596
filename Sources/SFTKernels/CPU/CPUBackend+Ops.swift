// The CPU backend's ops other than GEMM: each checks its arguments (BackendArgumentChecks.swift,
// shared with CUDA), then calls the C kernel, split over cores where the work is large enough.
// The math of every op is in the C files of CSFTKernels, one per concern.

import CSFTKernels
import Foundation

extension CPUBackend {
    // MARK: elementwise

    public func fill(_ y: BufferView, value: Float, count n: Int) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("fill", profileStart) }
        try check(y, count: n, "fill", "y")
        let py = y.f32()
        chunked(n) { s, c in sft_fill_f32(py + s, value, Int64(c)) }
    }

    public func add(_ a: BufferView, _ b: BufferView, into y: BufferView, count n: Int) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("add", profileStart) }
        try check(count: n, "add", ["a": a, "b": b, "y": y])
        let (pa, pb, py) = (a.f32(), b.f32(), y.f32())
        chunked(n) { s, c in sft_add_f32(pa + s, pb + s, py + s, Int64(c)) }
    }

    public func axpy(alpha: Float, _ x: BufferView, _ y: BufferView, count n: Int) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("axpy", profileStart) }
        try check(count: n, "axpy", ["x": x, "y": y])
        let (px, py) = (x.f32(), y.f32())
        chunked(n) { s, c in sft_axpy_f32(alpha, px + s, py + s, Int64(c)) }
    }

    public func scale(alpha: Float, _ x: BufferView, into y: BufferView, count n: Int) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("scale", profileStart) }
        try check(count: n, "scale", ["x": x, "y": y])
        let (px, py) = (x.f32(), y.f32())
        chunked(n) { s, c in sft_scale_f32(alpha, px + s, py + s, Int64(c)) }
    }

    public func mul(_ a: BufferView, _ b: BufferView, into y: BufferView, count n: Int) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("mul", profileStart) }
        try check(count: n, "mul", ["a": a, "b": b, "y": y])
        let (pa, pb, py) = (a.f32(), b.f32(), y.f32())
        chunked(n) { s, c in sft_mul_f32(pa + s, pb + s, py + s, Int64(c)) }
    }

    public func sumOfSquares(_ x: BufferView, count n: Int) throws -> Double {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("sumOfSquares", profileStart) }
        try check(x, count: n, "sumOfSquares", "x")
        let px = x.f32()
        let nparts = parts(work: n, grain: 1 << 16)
        var partial = [Double](repeating: 0, count: nparts)
        partial.withUnsafeMutableBufferPointer { out in
            let out = out.baseAddress!
            parallel(nparts) { p, np in
                let lo = n * Int(p) / Int(np), hi = n * (Int(p) + 1) / Int(np)
                out[Int(p)] = sft_sumsq_f32(px + lo, Int64(hi - lo))
            }
        }
        return partial.reduce(0, +)
    }

    public func cast(_ x: BufferView, from: DType, into y: BufferView, to: DType, count n: Int) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("cast", profileStart) }
        try checkCast(x, from: from, into: y, to: to, count: n)
        let (px, py) = (x.raw, y.raw)
        switch (from, to) {
        case (.f32, .f32), (.bf16, .bf16), (.f16, .f16):
            memmove(py, px, n * from.size)
        case (.f32, .bf16):
            chunked(n) { s, c in sft_f32_to_bf16(x.f32() + s, y.u16() + s, Int64(c)) }
        case (.bf16, .f32):
            chunked(n) { s, c in sft_bf16_to_f32(x.u16() + s, y.f32() + s, Int64(c)) }
        case (.f32, .f16):
            chunked(n) { s, c in sft_f32_to_f16(x.f32() + s, y.u16() + s, Int64(c)) }
        case (.f16, .f32):
            chunked(n) { s, c in sft_f16_to_f32(x.u16() + s, y.f32() + s, Int64(c)) }
        default:
            // bf16 <-> f16 through f32, a block at a time (exact: both widen to f32 exactly).
            let block = 4096
            let tmp = UnsafeMutablePointer<Float>.allocate(capacity: block)
            defer { tmp.deallocate() }
            var s = 0
            while s < n {
                let c = min(block, n - s)
                if from == .bf16 { sft_bf16_to_f32(x.u16() + s, tmp, Int64(c)) } else { sft_f16_to_f32(x.u16() + s, tmp, Int64(c)) }
                if to == .bf16 { sft_f32_to_bf16(tmp, y.u16() + s, Int64(c)) } else { sft_f32_to_f16(tmp, y.u16() + s, Int64(c)) }
                s += c
            }
        }
    }

    public func dropout(_ x: BufferView, into y: BufferView, mask: BufferView?, count n: Int, p: Float,
                        seed: UInt64, offset: UInt64) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("dropout", profileStart) }
        try checkDropout(x, into: y, mask: mask, count: n, p: p)
        let (px, py, pm) = (x.f32(), y.f32(), mask?.u8())
        chunked(n) { s, c in
            sft_dropout_f32(px + s, py + s, pm.map { $0 + s }, Int64(c), p, seed, offset &+ UInt64(s))
        }
    }

    // MARK: normalization

    public func rmsnormForward(x: BufferView, weight: BufferView, y: BufferView, rstd: BufferView,
                               N: Int, C: Int, eps: Float) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("rmsnormForward", profileStart) }
        try checkNormForward("rmsnormForward", x: x, weight: weight, bias: nil, y: y, mean: nil, rstd: rstd, N: N, C: C)
        let (px, pw, py, pr) = (x.f32(), weight.f32(), y.f32(), rstd.f32())
        parallel(parts(work: N * C)) { p, np in
            sft_rmsnorm_fwd_f32(px, pw, py, pr, Int64(N), Int64(C), eps, p, np)
        }
    }

    public func rmsnormBackward(dy: BufferView, x: BufferView, weight: BufferView, rstd: BufferView,
                                dx: BufferView, dweight: BufferView?, N: Int, C: Int) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("rmsnormBackward", profileStart) }
        try checkNormBackward("rmsnormBackward", dy: dy, x: x, weight: weight, mean: nil, rstd: rstd, dx: dx,
                              dweight: dweight, dbias: nil, N: N, C: C)
        let (pdy, px, pw, pr, pdx, pdw) = (dy.f32(), x.f32(), weight.f32(), rstd.f32(), dx.f32(), dweight?.f32())
        parallel(parts(work: N * C)) { p, np in
            sft_rmsnorm_bwd_f32(pdy, px, pw, pr, pdx, pdw, Int64(N), Int64(C), p, np)
        }
    }

    public func layernormForward(x: BufferView, weight: BufferView, bias: BufferView?, y: BufferView,
                                 mean: BufferView, rstd: BufferView, N: Int, C: Int, eps: Float) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("layernormForward", profileStart) }
        try checkNormForward("layernormForward", x: x, weight: weight, bias: bias, y: y, mean: mean, rstd: rstd, N: N, C: C)
        let (px, pw, pb, py, pm, pr) = (x.f32(), weight.f32(), bias?.f32(), y.f32(), mean.f32(), rstd.f32())
        parallel(parts(work: N * C)) { p, np in
            sft_layernorm_fwd_f32(px, pw, pb, py, pm, pr, Int64(N), Int64(C), eps, p, np)
        }
    }

    public func layernormBackward(dy: BufferView, x: BufferView, weight: BufferView, mean: BufferView,
                                  rstd: BufferView, dx: BufferView, dweight: BufferView?,
                                  dbias: BufferView?, N: Int, C: Int) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("layernormBackward", profileStart) }
        try checkNormBackward("layernormBackward", dy: dy, x: x, weight: weight, mean: mean, rstd: rstd, dx: dx,
                              dweight: dweight, dbias: dbias, N: N, C: C)
        let (pdy, px, pw, pm, pr) = (dy.f32(), x.f32(), weight.f32(), mean.f32(), rstd.f32())
        let (pdx, pdw, pdb) = (dx.f32(), dweight?.f32(), dbias?.f32())
        parallel(parts(work: N * C)) { p, np in
            sft_layernorm_bwd_f32(pdy, px, pw, pm, pr, pdx, pdw, pdb, Int64(N), Int64(C), p, np)
        }
    }

    // MARK: rope

    public func rope(x: BufferView, ldx: Int, y: BufferView, ldy: Int, positions: BufferView,
                     invFreq: BufferView, N: Int, H: Int, D: Int, inverse: Bool) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("rope", profileStart) }
        try checkRope(x: x, ldx: ldx, y: y, ldy: ldy, positions: positions, invFreq: invFreq, N: N, H: H, D: D)
        let (px, py, pp, pf) = (x.f32(), y.f32(), positions.i32(), invFreq.f32())
        parallel(parts(work: N * H * D, grain: 1 << 14)) { p, np in
            sft_rope_f32(px, Int64(ldx), py, Int64(ldy), pp, pf, Int64(N), Int64(H), Int64(D),
                         inverse ? 1 : 0, p, np)
        }
    }

    // MARK: attention

    /// The attention ops' argument checks; q, k, v and o hold f32, or bf16 with `bf16`.
    func checkAttention(_ op: String, _ s: AttentionShape, q: BufferView, k: BufferView,
                        v: BufferView, o: BufferView, lse: BufferView, docIds: BufferView?,
                        alibi: BufferView?, bf16: Bool = false) throws {
        let shape = "B=\(s.B) T=\(s.T) H=\(s.H) KV=\(s.KV) D=\(s.D)"
        guard s.B >= 0, s.T >= 0, s.H > 0, s.KV > 0, s.D > 0, s.H % s.KV == 0 else {
            throw KernelError.invalidArgument(op: op, message: "bad shape \(shape): sizes must be positive and H a multiple of KV")
        }
        let rows = s.B * s.T
        let type = bf16 ? " bf16" : ""
        for (name, view, width, ld) in [("q", q, s.H * s.D, s.ldq), ("k", k, s.KV * s.D, s.ldk),
                                        ("v", v, s.KV * s.D, s.ldv), ("o", o, s.H * s.D, s.ldo)] {
            if !bf16 {
                try check(view, rows: rows, width: width, ld: ld, op, "\(name) (\(shape), ld\(name)=\(ld))")
                continue
            }
            guard ld >= width, view.byteOffset % 2 == 0 else {
                throw KernelError.invalidArgument(
                    op: op, message: "\(name)\(type) (\(shape)): row stride \(ld) < row width \(width) or odd byte offset \(view.byteOffset)")
            }
            try check(view, bytes: Self.span(rows: rows, width: width, ld: ld) * 2, op, "\(name)\(type) (\(shape), ld\(name)=\(ld))")
        }
        try check(lse, count: s.B * s.H * s.T, op, "lse (\(shape))")
        if let docIds { try check(docIds, count: rows, op, "docIds (\(shape))") }
        if let alibi { try check(alibi, count: s.H, op, "alibi (\(shape))") }
        guard s.softcap >= 0, s.softcap.isFinite else {
            throw KernelError.invalidArgument(op: op, message: "softcap \(s.softcap) must be ≥ 0 (0 = off)")
        }
    }

    /// The backward's f32 gradients share the layout (and leading dimensions) of what they
    /// differentiate.
    func checkAttentionGradients(_ op: String, _ s: AttentionShape, dout: BufferView, dq: BufferView,
                                 dk: BufferView, dv: BufferView) throws {
        let rows = s.B * s.T
        try check(dout, rows: rows, width: s.H * s.D, ld: s.ldo, op, "dout (ldo=\(s.ldo))")
        try check(dq, rows: rows, width: s.H * s.D, ld: s.ldq, op, "dq (ldq=\(s.ldq))")
        try check(dk, rows: rows, width: s.KV * s.D, ld: s.ldk, op, "dk (ldk=\(s.ldk))")
        try check(dv, rows: rows, width: s.KV * s.D, ld: s.ldv, op, "dv (ldv=\(s.ldv))")
    }

    /// Parts for attention: its work grows with T² per head.
    func attentionParts(_ s: AttentionShape) -> Int {
        parts(work: s.B * s.H * s.T * s.T * s.D / 16, grain: 1 << 14)
    }

    /// Runs a C kernel returning a status in parts, giving them a shared work counter, and
    /// throws the first failure's message (read on the thread that failed: the C side keeps it
    /// thread-local).
    func runParts(_ op: String, _ nparts: Int,
                          _ body: (UnsafeMutablePointer<Int64>, Int32, Int32) -> Int32) throws {
        let failure = NSLock()
        var message: String?
        let next = UnsafeMutablePointer<Int64>.allocate(capacity: 1)
        next.initialize(to: 0)
        defer { next.deallocate() }
        parallel(nparts) { p, np in
            if body(next, p, np) != 0 {
                let m = String(cString: sft_last_error())
                failure.lock(); if message == nil { message = m }; failure.unlock()
            }
        }
        if let message { throw KernelError.native(op: op, message: message) }
    }

    public func attentionForward(q: BufferView, k: BufferView, v: BufferView, o: BufferView,
                                 lse: BufferView, docIds: BufferView?, alibi: BufferView?,
                                 shape s: AttentionShape) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("attentionForward", profileStart) }
        try checkAttention("attentionForward", s, q: q, k: k, v: v, o: o, lse: lse, docIds: docIds, alibi: alibi)
        let (pq, pk, pv, po, pl) = (q.f32(), k.f32(), v.f32(), o.f32(), lse.f32())
        let (pd, pa) = (docIds?.i32(), alibi?.f32())
        try runParts("attentionForward", attentionParts(s)) { next, p, np in
            sft_attention_fwd_f32(pq, Int64(s.ldq), pk, Int64(s.ldk), pv, Int64(s.ldv), po, Int64(s.ldo),
                                  pl, pd, pa, Int64(s.window ?? 0), Int64(s.B), Int64(s.T), Int64(s.H), Int64(s.KV),
                                  Int64(s.D), s.scale, s.softcap, next, p, np)
        }
    }

    public func attentionBackward(q: BufferView, k: BufferView, v: BufferView, o: BufferView,
                                  dout: BufferView, lse: BufferView, docIds: BufferView?,
                                  alibi: BufferView?, dq: BufferView, dk: BufferView, dv: BufferView,
                                  shape s: AttentionShape) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("attentionBackward", profileStart) }
        let op = "attentionBackward"
        try checkAttention(op, s, q: q, k: k, v: v, o: o, lse: lse, docIds: docIds, alibi: alibi)
        try checkAttentionGradients(op, s, dout: dout, dq: dq, dk: dk, dv: dv)
        let (pq, pk, pv, po, pdo, pl) = (q.f32(), k.f32(), v.f32(), o.f32(), dout.f32(), lse.f32())
        let (pd, pa, pdq, pdk, pdv) = (docIds?.i32(), alibi?.f32(), dq.f32(), dk.f32(), dv.f32())
        try runAttentionBackward(op, s, dq: pdq) { work, next, p, np in
            sft_attention_bwd_f32(pq, Int64(s.ldq), pk, Int64(s.ldk), pv, Int64(s.ldv), po, Int64(s.ldo),
                                  pdo, Int64(s.ldo), pl, pd, pa, Int64(s.window ?? 0), pdq, Int64(s.ldq), pdk, Int64(s.ldk),
                                  pdv, Int64(s.ldv), Int64(s.B), Int64(s.T), Int64(s.H), Int64(s.KV), Int64(s.D),
                                  s.scale, s.softcap, work, next, p, np)
        }
    }

    /// The attention backward's parts for either element type: `kernel` runs part p of np with
    /// the shared work counter and the dq work buffer, where the dq shares of all but the first
    /// run of key tiles wait until every part is done; then they are added to dq.
    func runAttentionBackward(_ op: String, _ s: AttentionShape, dq pdq: UnsafeMutablePointer<Float>,
                              _ kernel: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Int64>, Int32, Int32) -> Int32) throws {
        let (B, T, H, KV, D) = (Int64(s.B), Int64(s.T), Int64(s.H), Int64(s.KV), Int64(s.D))
        let workFloats = Int(sft_attention_bwd_work_floats(B, T, H, KV, D))
        let work = UnsafeMutablePointer<Float>.allocate(capacity: max(1, workFloats))
        defer { work.deallocate() }
        try runParts(op, attentionParts(s)) { next, p, np in kernel(work, next, p, np) }
        if workFloats > 0 {
            parallel(parts(work: s.B * s.T * s.H * s.D)) { p, np in
                sft_attention_bwd_sum_f32(work, pdq, Int64(s.ldq), B, T, H, KV, D, p, np)
            }
        }
    }

    // MARK: swiglu

    public func swigluForward(gate: BufferView, up: BufferView, h: BufferView, count n: Int) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("swigluForward", profileStart) }
        try check(count: n, "swigluForward", ["gate": gate, "up": up, "h": h])
        let (pg, pu, ph) = (gate.f32(), up.f32(), h.f32())
        chunked(n, grain: 1 << 15) { s, c in sft_swiglu_fwd_f32(pg + s, pu + s, ph + s, Int64(c)) }
    }

    public func swigluBackward(dh: BufferView, gate: BufferView, up: BufferView, dgate: BufferView,
                               dup: BufferView, count n: Int) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("swigluBackward", profileStart) }
        try check(count: n, "swigluBackward", ["dh": dh, "gate": gate, "up": up, "dgate": dgate, "dup": dup])
        let (pdh, pg, pu, pdg, pdu) = (dh.f32(), gate.f32(), up.f32(), dgate.f32(), dup.f32())
        chunked(n, grain: 1 << 15) { s, c in
            sft_swiglu_bwd_f32(pdh + s, pg + s, pu + s, pdg + s, pdu + s, Int64(c))
        }
    }

    // MARK: embedding

    public func embeddingForward(ids: BufferView, table: BufferView, out: BufferView, N: Int, C: Int,
                                 V: Int) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("embeddingForward", profileStart) }
        try checkEmbeddingForward(ids: ids, table: table, out: out, N: N, C: C, V: V)
        if sft_embedding_fwd_f32(ids.i32(), table.f32(), out.f32(), Int64(N), Int64(C), Int64(V)) != 0 {
            throw KernelError.invalidArgument(op: "embeddingForward", message: String(cString: sft_last_error()))
        }
    }

    public func embeddingBackward(ids: BufferView, dout: BufferView, dtable: BufferView, N: Int,
                                  C: Int) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("embeddingBackward", profileStart) }
        try checkEmbeddingBackward(ids: ids, dout: dout, dtable: dtable, N: N, C: C)
        // The table's row count is whatever fits in dtable's buffer: every id must be a row.
        let rowsInTable = C == 0 ? Int.max : (dtable.buffer.bytes - dtable.byteOffset) / (4 * C)
        let pid = ids.i32()
        for i in 0..<N where pid[i] < 0 || Int(pid[i]) >= rowsInTable {
            throw KernelError.invalidArgument(op: "embeddingBackward", message: "token id \(pid[i]) at row \(i) is outside dtable's \(rowsInTable) rows")
        }
        sft_embedding_bwd_f32(pid, dout.f32(), dtable.f32(), Int64(N), Int64(C))
    }

    // MARK: optimizer

    public func adamw(param: BufferView, grad: BufferView, m: BufferView, v: BufferView, count n: Int,
                      step: AdamWStep) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("adamw", profileStart) }
        try checkAdamW(param: param, grad: grad, m: m, v: v, count: n, step: step)
        let (pp, pg, pm, pv) = (param.f32(), grad.f32(), m.f32(), v.f32())
        chunked(n, grain: 1 << 15) { s, c in
            sft_adamw_f32(pp + s, pg + s, pm + s, pv + s, Int64(c), step.lr, step.beta1, step.beta2,
                          step.eps, step.weightDecay, step.biasCorrection1, step.biasCorrection2)
        }
    }
}

extension CPUBackend {
    public func attentionCached(q: BufferView, kCache: BufferView, vCache: BufferView, o: BufferView, Tq: Int, S: Int,
                                H: Int, KV: Int, D: Int, scale: Float, alibi: BufferView?, softcap: Float) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("attentionCached", profileStart) }
        guard Tq >= 1, S >= Tq, H >= 1, KV >= 1, H % KV == 0, D >= 1 else {
            throw KernelError.invalidArgument(op: "attentionCached", message: "Tq=\(Tq) S=\(S) H=\(H) KV=\(KV) D=\(D)")
        }
        guard softcap >= 0, softcap.isFinite else {
            throw KernelError.invalidArgument(op: "attentionCached", message: "softcap \(softcap) must be ≥ 0 (0 = off)")
        }
        if let alibi { try check(alibi, count: H, "attentionCached", "alibi (H=\(H))") }
        let (pq, pk, pv, po, pa) = (q.f32(), kCache.f32(), vCache.f32(), o.f32(), alibi?.f32())
        // Worth splitting over heads once a part has a few microseconds of work (the pool's
        // hand-off costs about one).
        let parts = Tq * S * D >= 1 << 12 ? min(H, threads) : 1
        parallel(parts) { p, np in
            sft_attention_cached_f32(pq, pk, pv, po, Int64(Tq), Int64(S), Int64(H), Int64(KV), Int64(D), scale, pa, softcap, p, np)
        }
    }
}
