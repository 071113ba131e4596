// bf16 activations (mixed precision, torch.autocast style): the ops that read the outputs of
// bf16 Linear layers take the element type of those activation operands as `dtype`. Which
// operands it covers is fixed per op (below); statistics (lse), gradients and the residual
// stream stay f32, and the math is f32 in every case: bf16 values are widened exactly, results
// stored bf16 are rounded to nearest even once.
//
//   add(a, b, bType:)        y f32 = a f32 + b (bType)
//   rope(dtype:)             x, y in dtype (forward; the backward rotates f32 gradients)
//   attentionForward(dtype:) q, k, v, o in dtype; lse f32 (the native kernels round P to bf16 for
//                            O = P V, as FlashAttention; m, l, lse from the unrounded p)
//   attentionBackward(dtype:) q, k, v, o in dtype; dout, dq, dk, dv f32
//   swiglu / gelu (dtype:)   gate / x, up, h / y in dtype; backward dh / dy, dgate / dx, dup f32
//
// The defaults here widen the bf16 operands into f32 scratch (`cast`), run the f32 op and round
// the bf16 result: correct on every backend, and the activations the tape keeps are still
// bf16 (the scratch lives for the call only). Backends override them with native kernels:
// CPUBackend and CUDABackend read and write bf16 in every one of these ops, attention included.

import Foundation

extension Backend {
    /// y (f32) = a (f32) + b, b of `bType` (f32 or bf16).
    public func add(_ a: BufferView, _ b: BufferView, bType: DType, into y: BufferView, count n: Int) throws {
        guard try activationType(bType, "add") == .bf16 else { return try add(a, b, into: y, count: n) }
        let wide = try widened(b, count: n)
        try add(a, BufferView(wide), into: y, count: n)
    }

    public func rope(x: BufferView, ldx: Int, y: BufferView, ldy: Int, positions: BufferView, invFreq: BufferView,
                     N: Int, H: Int, D: Int, inverse: Bool, dtype: DType) throws {
        guard try activationType(dtype, "rope") == .bf16 else {
            return try rope(x: x, ldx: ldx, y: y, ldy: ldy, positions: positions, invFreq: invFreq, N: N, H: H, D: D,
                            inverse: inverse)
        }
        let span = Self.span(rows: N, width: H * D, ld: ldy)
        let xf = try widened(x, count: Self.span(rows: N, width: H * D, ld: ldx))
        let yf = try allocate(bytes: max(1, span) * 4)
        try rope(x: BufferView(xf), ldx: ldx, y: BufferView(yf), ldy: ldy, positions: positions, invFreq: invFreq,
                 N: N, H: H, D: D, inverse: inverse)
        try narrow(BufferView(yf), into: y, rows: N, width: H * D, ld: ldy)
    }

    public func attentionForward(q: BufferView, k: BufferView, v: BufferView, o: BufferView, lse: BufferView,
                                 docIds: BufferView?, alibi: BufferView?, shape s: AttentionShape, dtype: DType) throws {
        guard try activationType(dtype, "attentionForward") == .bf16 else {
            return try attentionForward(q: q, k: k, v: v, o: o, lse: lse, docIds: docIds, alibi: alibi, shape: s)
        }
        let rows = s.B * s.T
        let (qf, kf, vf) = (try widened(q, count: Self.span(rows: rows, width: s.H * s.D, ld: s.ldq)),
                            try widened(k, count: Self.span(rows: rows, width: s.KV * s.D, ld: s.ldk)),
                            try widened(v, count: Self.span(rows: rows, width: s.KV * s.D, ld: s.ldv)))
        let of = try allocate(bytes: max(1, Self.span(rows: rows, width: s.H * s.D, ld: s.ldo)) * 4)
        try attentionForward(q: BufferView(qf), k: BufferView(kf), v: BufferView(vf), o: BufferView(of), lse: lse,
                             docIds: docIds, alibi: alibi, shape: s)
        try narrow(BufferView(of), into: o, rows: rows, width: s.H * s.D, ld: s.ldo)
    }

    public func attentionBackward(q: BufferView, k: BufferView, v: BufferView, o: BufferView, dout: BufferView,
                                  lse: BufferView, docIds: BufferView?, alibi: BufferView?, dq: BufferView,
                                  dk: BufferView, dv: BufferView, shape s: AttentionShape, dtype: DType) throws {
        guard try activationType(dtype, "attentionBackward") == .bf16 else {
            return try attentionBackward(q: q, k: k, v: v, o: o, dout: dout, lse: lse, docIds: docIds, alibi: alibi,
                                         dq: dq, dk: dk, dv: dv, shape: s)
        }
        let rows = s.B * s.T
        let qf = try widened(q, count: Self.span(rows: rows, width: s.H * s.D, ld: s.ldq))
        let kf = try widened(k, count: Self.span(rows: rows, width: s.KV * s.D, ld: s.ldk))
        let vf = try widened(v, count: Self.span(rows: rows, width: s.KV * s.D, ld: s.ldv))
        let of = try widened(o, count: Self.span(rows: rows, width: s.H * s.D, ld: s.ldo))
        try attentionBackward(q: BufferView(qf), k: BufferView(kf), v: BufferView(vf), o: BufferView(of), dout: dout,
                              lse: lse, docIds: docIds, alibi: alibi, dq: dq, dk: dk, dv: dv, shape: s)
    }

    public func swigluForward(gate: BufferView, up: BufferView, h: BufferView, count n: Int, dtype: DType) throws {
        guard try activationType(dtype, "swigluForward") == .bf16 else {
            return try swigluForward(gate: gate, up: up, h: h, count: n)
        }
        let hf = try allocate(bytes: max(1, n) * 4)
        try swigluForward(gate: BufferView(try widened(gate, count: n)), up: BufferView(try widened(up, count: n)),
                          h: BufferView(hf), count: n)
        try cast(BufferView(hf), from: .f32, into: h, to: .bf16, count: n)
    }

    public func swigluBackward(dh: BufferView, gate: BufferView, up: BufferView, dgate: BufferView, dup: BufferView,
                               count n: Int, dtype: DType) throws {
        guard try activationType(dtype, "swigluBackward") == .bf16 else {
            return try swigluBackward(dh: dh, gate: gate, up: up, dgate: dgate, dup: dup, count: n)
        }
        try swigluBackward(dh: dh, gate: BufferView(try widened(gate, count: n)), up: BufferView(try widened(up, count: n)),
                           dgate: dgate, dup: dup, count: n)
    }

    public func geluForward(x: BufferView, up: BufferView?, y: BufferView, count n: Int, approximate: Bool,
                            dtype: DType) throws {
        guard try activationType(dtype, "geluForward") == .bf16 else {
            return try geluForward(x: x, up: up, y: y, count: n, approximate: approximate)
        }
        let yf = try allocate(bytes: max(1, n) * 4)
        let uf = try up.map { BufferView(try widened($0, count: n)) }
        try geluForward(x: BufferView(try widened(x, count: n)), up: uf, y: BufferView(yf), count: n, approximate: approximate)
        try cast(BufferView(yf), from: .f32, into: y, to: .bf16, count: n)
    }

    public func geluBackward(dy: BufferView, x: BufferView, up: BufferView?, dx: BufferView, dup: BufferView?,
                             count n: Int, approximate: Bool, dtype: DType) throws {
        guard try activationType(dtype, "geluBackward") == .bf16 else {
            return try geluBackward(dy: dy, x: x, up: up, dx: dx, dup: dup, count: n, approximate: approximate)
        }
        let uf = try up.map { BufferView(try widened($0, count: n)) }
        try geluBackward(dy: dy, x: BufferView(try widened(x, count: n)), up: uf, dx: dx, dup: dup, count: n,
                         approximate: approximate)
    }

    // MARK: helpers

    /// f32 or bf16; any other activation type is an error naming the op.
    func activationType(_ t: DType, _ op: String) throws -> DType {
        guard t == .f32 || t == .bf16 else {
            throw KernelError.invalidArgument(op: op, message: "activations of type \(t) are not implemented (f32, bf16)")
        }
        return t
    }

    /// Elements from the first to the last one a (rows × width, leading dimension ld) view touches.
    static func span(rows: Int, width: Int, ld: Int) -> Int { rows == 0 ? 0 : (rows - 1) * ld + width }

    /// A new f32 buffer holding the first `count` bf16 values of x, widened exactly.
    func widened(_ x: BufferView, count n: Int) throws -> Buffer {
        let b = try allocate(bytes: max(1, n) * 4)
        try cast(x, from: .bf16, into: BufferView(b), to: .f32, count: n)
        return b
    }

    /// Rounds the rows × width f32 view x (leading dimension ld) into the bf16 view y of the same
    /// layout; elements between rows are left as they are.
    func narrow(_ x: BufferView, into y: BufferView, rows: Int, width: Int, ld: Int) throws {
        if ld == width || rows <= 1 { return try cast(x, from: .f32, into: y, to: .bf16, count: rows * width) }
        for r in 0..<rows {
            try cast(x.advanced(byBytes: r * ld * 4), from: .f32, into: y.advanced(byBytes: r * ld * 2), to: .bf16, count: width)
        }
    }
}
