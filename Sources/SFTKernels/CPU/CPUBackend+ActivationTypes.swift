// bf16 activations on the CPU (BackendActivationTypes.swift): the residual add, RoPE, SwiGLU and
// GELU / GeGLU read and write bf16 in their own loops (elementwise.c, rope.c, swiglu.c, gelu.c:
// each bf16 kernel beside its f32 reference, with the same per-ISA variants). Attention's bf16
// entry points (attention.c) run the f32 kernel's tiles on q, k, v, o widened tile by tile, with
// P rounded to bf16 for O = P V (as the CUDA kernels and FlashAttention), and with AVX512_BF16
// vdpbf16ps for the forward's products.

import CSFTKernels

extension CPUBackend {
    /// Throws unless each view holds `n` bf16 elements.
    private func checkBF16(count n: Int, _ op: String, _ views: KeyValuePairs<String, BufferView>) throws {
        for (name, view) in views { try check(view, bytes: n * 2, op, name) }
    }

    public func add(_ a: BufferView, _ b: BufferView, bType: DType, into y: BufferView, count n: Int) throws {
        guard try activationType(bType, "add") == .bf16 else { return try add(a, b, into: y, count: n) }
        let profileStart = OpProfile.begin(); defer { OpProfile.end("add bf16", profileStart) }
        try check(count: n, "add", ["a": a, "y": y])
        try checkBF16(count: n, "add", ["b": b])
        let (pa, pb, py) = (a.f32(), b.u16(), y.f32())
        chunked(n) { s, c in sft_add_f32_bf16(pa + s, pb + s, py + s, Int64(c)) }
    }

    public func rope(x: BufferView, ldx: Int, y: BufferView, ldy: Int, positions: BufferView, invFreq: BufferView,
                     N: Int, H: Int, D: Int, inverse: Bool, dtype: DType) throws {
        guard try activationType(dtype, "rope") == .bf16 else {
            return try rope(x: x, ldx: ldx, y: y, ldy: ldy, positions: positions, invFreq: invFreq, N: N, H: H, D: D,
                            inverse: inverse)
        }
        let profileStart = OpProfile.begin(); defer { OpProfile.end("rope bf16", profileStart) }
        try checkRope(x: x, ldx: ldx, y: y, ldy: ldy, positions: positions, invFreq: invFreq, N: N, H: H, D: D, dtype: .bf16)
        let (px, py, pp, pf) = (x.u16(), y.u16(), positions.i32(), invFreq.f32())
        parallel(parts(work: N * H * D, grain: 1 << 14)) { p, np in
            sft_rope_bf16(px, Int64(ldx), py, Int64(ldy), pp, pf, Int64(N), Int64(H), Int64(D), inverse ? 1 : 0, p, np)
        }
    }

    public func attentionForward(q: BufferView, k: BufferView, v: BufferView, o: BufferView, lse: BufferView,
                                 docIds: BufferView?, alibi: BufferView?, shape s: AttentionShape, dtype: DType) throws {
        guard try activationType(dtype, "attentionForward") == .bf16 else {
            return try attentionForward(q: q, k: k, v: v, o: o, lse: lse, docIds: docIds, alibi: alibi, shape: s)
        }
        let profileStart = OpProfile.begin(); defer { OpProfile.end("attentionForward bf16", profileStart) }
        try checkAttention("attentionForward", s, q: q, k: k, v: v, o: o, lse: lse, docIds: docIds, alibi: alibi,
                           bf16: true)
        let (pq, pk, pv, po, pl) = (q.u16(), k.u16(), v.u16(), o.u16(), lse.f32())
        let (pd, pa) = (docIds?.i32(), alibi?.f32())
        try runParts("attentionForward", attentionParts(s)) { next, p, np in
            sft_attention_fwd_bf16(pq, Int64(s.ldq), pk, Int64(s.ldk), pv, Int64(s.ldv), po, Int64(s.ldo),
                                   pl, pd, pa, Int64(s.window ?? 0), Int64(s.B), Int64(s.T), Int64(s.H), Int64(s.KV),
                                   Int64(s.D), s.scale, s.softcap, next, p, np)
        }
    }

    public func attentionBackward(q: BufferView, k: BufferView, v: BufferView, o: BufferView, dout: BufferView,
                                  lse: BufferView, docIds: BufferView?, alibi: BufferView?, dq: BufferView,
                                  dk: BufferView, dv: BufferView, shape s: AttentionShape, dtype: DType) throws {
        guard try activationType(dtype, "attentionBackward") == .bf16 else {
            return try attentionBackward(q: q, k: k, v: v, o: o, dout: dout, lse: lse, docIds: docIds, alibi: alibi,
                                         dq: dq, dk: dk, dv: dv, shape: s)
        }
        let profileStart = OpProfile.begin(); defer { OpProfile.end("attentionBackward bf16", profileStart) }
        let op = "attentionBackward"
        try checkAttention(op, s, q: q, k: k, v: v, o: o, lse: lse, docIds: docIds, alibi: alibi, bf16: true)
        try checkAttentionGradients(op, s, dout: dout, dq: dq, dk: dk, dv: dv)
        let (pq, pk, pv, po, pdo, pl) = (q.u16(), k.u16(), v.u16(), o.u16(), dout.f32(), lse.f32())
        let (pd, pa, pdq, pdk, pdv) = (docIds?.i32(), alibi?.f32(), dq.f32(), dk.f32(), dv.f32())
        try runAttentionBackward(op, s, dq: pdq) { work, next, p, np in
            sft_attention_bwd_bf16(pq, Int64(s.ldq), pk, Int64(s.ldk), pv, Int64(s.ldv), po, Int64(s.ldo),
                                   pdo, Int64(s.ldo), pl, pd, pa, Int64(s.window ?? 0), pdq, Int64(s.ldq), pdk, Int64(s.ldk),
                                   pdv, Int64(s.ldv), Int64(s.B), Int64(s.T), Int64(s.H), Int64(s.KV), Int64(s.D),
                                   s.scale, s.softcap, work, next, p, np)
        }
    }

    public func swigluForward(gate: BufferView, up: BufferView, h: BufferView, count n: Int, dtype: DType) throws {
        guard try activationType(dtype, "swigluForward") == .bf16 else {
            return try swigluForward(gate: gate, up: up, h: h, count: n)
        }
        let profileStart = OpProfile.begin(); defer { OpProfile.end("swigluForward bf16", profileStart) }
        try checkBF16(count: n, "swigluForward", ["gate": gate, "up": up, "h": h])
        let (pg, pu, ph) = (gate.u16(), up.u16(), h.u16())
        chunked(n, grain: 1 << 15) { s, c in sft_swiglu_fwd_bf16(pg + s, pu + s, ph + s, Int64(c)) }
    }

    public func swigluBackward(dh: BufferView, gate: BufferView, up: BufferView, dgate: BufferView, dup: BufferView,
                               count n: Int, dtype: DType) throws {
        guard try activationType(dtype, "swigluBackward") == .bf16 else {
            return try swigluBackward(dh: dh, gate: gate, up: up, dgate: dgate, dup: dup, count: n)
        }
        let profileStart = OpProfile.begin(); defer { OpProfile.end("swigluBackward bf16", profileStart) }
        try check(count: n, "swigluBackward", ["dh": dh, "dgate": dgate, "dup": dup])
        try checkBF16(count: n, "swigluBackward", ["gate": gate, "up": up])
        let (pdh, pg, pu, pdg, pdu) = (dh.f32(), gate.u16(), up.u16(), dgate.f32(), dup.f32())
        chunked(n, grain: 1 << 15) { s, c in sft_swiglu_bwd_bf16(pdh + s, pg + s, pu + s, pdg + s, pdu + s, Int64(c)) }
    }

    public func geluForward(x: BufferView, up: BufferView?, y: BufferView, count n: Int, approximate: Bool,
                            dtype: DType) throws {
        guard try activationType(dtype, "geluForward") == .bf16 else {
            return try geluForward(x: x, up: up, y: y, count: n, approximate: approximate)
        }
        let profileStart = OpProfile.begin(); defer { OpProfile.end("geluForward bf16", profileStart) }
        try checkBF16(count: n, "geluForward", ["x": x, "y": y])
        if let up { try checkBF16(count: n, "geluForward", ["up": up]) }
        let (px, pu, py) = (x.u16(), up?.u16(), y.u16())
        chunked(n, grain: 1 << 14) { s, c in sft_gelu_fwd_bf16(px + s, pu.map { $0 + s }, py + s, Int64(c), approximate ? 1 : 0) }
    }

    public func geluBackward(dy: BufferView, x: BufferView, up: BufferView?, dx: BufferView, dup: BufferView?,
                             count n: Int, approximate: Bool, dtype: DType) throws {
        guard try activationType(dtype, "geluBackward") == .bf16 else {
            return try geluBackward(dy: dy, x: x, up: up, dx: dx, dup: dup, count: n, approximate: approximate)
        }
        let profileStart = OpProfile.begin(); defer { OpProfile.end("geluBackward bf16", profileStart) }
        try check(count: n, "geluBackward", ["dy": dy, "dx": dx])
        try checkBF16(count: n, "geluBackward", ["x": x])
        if let up { try checkBF16(count: n, "geluBackward", ["up": up]) }
        if let dup { try check(count: n, "geluBackward", ["dup": dup]) }
        let (pdy, px, pu, pdx, pdu) = (dy.f32(), x.u16(), up?.u16(), dx.f32(), dup?.f32())
        chunked(n, grain: 1 << 14) { s, c in
            sft_gelu_bwd_bf16(pdy + s, px + s, pu.map { $0 + s }, pdx + s, pdu.map { $0 + s }, Int64(c), approximate ? 1 : 0)
        }
    }
}
