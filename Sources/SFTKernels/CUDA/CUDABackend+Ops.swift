// The CUDA backend's ops other than GEMM: each checks its arguments with the checks the CPU
// backend runs (BackendArgumentChecks.swift), then enqueues the kernels of CUDAKernels. The math of
// every op is in the CUDA C sources, mirroring the C kernels of CSFTKernels.

import CSFTKernels
import Foundation

extension CUDABackend {
    private var ew: CUDAModuleSource { CUDAKernels.elementwise }

    /// Threads per block for a kernel that reduces a row of C values (about 4 per thread).
    func rowThreads(_ C: Int) -> Int { min(1024, max(32, ((C + 3) / 4 + 31) / 32 * 32)) }

    // MARK: elementwise

    public func fill(_ y: BufferView, value: Float, count n: Int) throws {
        try check(y, count: n, "fill", "y")
        try launch(ew, "sft_fill_f32", grid: (blocks(n), 1, 1), block: 256, [.ptr(y), .f32(value), .i64(n)])
    }

    public func add(_ a: BufferView, _ b: BufferView, into y: BufferView, count n: Int) throws {
        try check(count: n, "add", ["a": a, "b": b, "y": y])
        try launch(ew, "sft_add_f32", grid: (blocks(n), 1, 1), block: 256, [.ptr(a), .ptr(b), .ptr(y), .i64(n)])
    }

    public func axpy(alpha: Float, _ x: BufferView, _ y: BufferView, count n: Int) throws {
        try check(count: n, "axpy", ["x": x, "y": y])
        try launch(ew, "sft_axpy_f32", grid: (blocks(n), 1, 1), block: 256, [.f32(alpha), .ptr(x), .ptr(y), .i64(n)])
    }

    public func scale(alpha: Float, _ x: BufferView, into y: BufferView, count n: Int) throws {
        try check(count: n, "scale", ["x": x, "y": y])
        try launch(ew, "sft_scale_f32", grid: (blocks(n), 1, 1), block: 256, [.f32(alpha), .ptr(x), .ptr(y), .i64(n)])
    }

    public func mul(_ a: BufferView, _ b: BufferView, into y: BufferView, count n: Int) throws {
        try check(count: n, "mul", ["a": a, "b": b, "y": y])
        try launch(ew, "sft_mul_f32", grid: (blocks(n), 1, 1), block: 256, [.ptr(a), .ptr(b), .ptr(y), .i64(n)])
    }

    /// Sum of squares in double: per-block partials, one block adds them, one 8-byte download
    /// (the only synchronization: the caller reads the value).
    public func sumOfSquares(_ x: BufferView, count n: Int) throws -> Double {
        try check(x, count: n, "sumOfSquares", "x")
        if n == 0 { return 0 }
        let nb = min(blocks(n), 1024)
        let partial = BufferView(try allocate(bytes: nb * 8)), total = BufferView(try allocate(bytes: 8))
        try launch(ew, "sft_sumsq_f32", grid: (nb, 1, 1), block: 256, [.ptr(x), .i64(n), .ptr(partial)])
        try launch(ew, "sft_sum_f64", grid: (1, 1, 1), block: 1024, [.ptr(partial), .i64(nb), .ptr(total)])
        var out = 0.0
        try download(total, to: &out, bytes: 8)
        return out
    }

    public func cast(_ x: BufferView, from: DType, into y: BufferView, to: DType, count n: Int) throws {
        try checkCast(x, from: from, into: y, to: to, count: n)
        if from == to { return try copy(x, to: y, bytes: n * from.size) }
        try launch(ew, "sft_cast_\(from.rawValue)_\(to.rawValue)", grid: (blocks(n), 1, 1), block: 256,
                   [.ptr(x), .ptr(y), .i64(n)])
    }

    public func dropout(_ x: BufferView, into y: BufferView, mask: BufferView?, count n: Int, p: Float,
                        seed: UInt64, offset: UInt64) throws {
        try checkDropout(x, into: y, mask: mask, count: n, p: p)
        try launch(ew, "sft_dropout_f32", grid: (blocks(n), 1, 1), block: 256,
                   [.ptr(x), .ptr(y), .optional(mask), .i64(n), .f32(p), .u64(seed), .u64(offset)])
    }

    // MARK: normalization

    public func rmsnormForward(x: BufferView, weight: BufferView, y: BufferView, rstd: BufferView,
                               N: Int, C: Int, eps: Float) throws {
        try checkNormForward("rmsnormForward", x: x, weight: weight, bias: nil, y: y, mean: nil, rstd: rstd, N: N, C: C)
        try launch(CUDAKernels.norm, "sft_rmsnorm_fwd_f32", grid: (N, 1, 1), block: rowThreads(C),
                   [.ptr(x), .ptr(weight), .ptr(y), .ptr(rstd), .i64(N), .i64(C), .f32(eps)])
    }

    /// Adds the column sums of the norm backward into dweight / dbias: partial sums over
    /// slices of rows, then one pass that adds them (no atomics, same result every run).
    private func normWeightGradients(dy: BufferView, x: BufferView, mean: BufferView?, rstd: BufferView,
                                     dweight: BufferView?, dbias: BufferView?, N: Int, C: Int) throws {
        if (dweight == nil && dbias == nil) || N == 0 || C == 0 { return }
        let slices = min((N + 31) / 32, 1024), rowsPerSlice = (N + slices - 1) / slices
        let pw = dweight == nil ? nil : BufferView(try allocate(bytes: slices * C * 4))
        let pb = dbias == nil ? nil : BufferView(try allocate(bytes: slices * C * 4))
        let colBlocks = (C + 255) / 256
        try launch(CUDAKernels.norm, "sft_norm_dw_partial_f32", grid: (colBlocks, slices, 1), block: 256,
                   [.ptr(dy), .ptr(x), .optional(mean), .ptr(rstd), .optional(pw), .optional(pb), .i64(N), .i64(C),
                    .i64(rowsPerSlice)])
        for (partial, out) in [(pw, dweight), (pb, dbias)] {
            guard let partial, let out else { continue }
            try launch(CUDAKernels.norm, "sft_colsum_add_f32", grid: (colBlocks, 1, 1), block: 256,
                       [.ptr(partial), .i64(slices), .i64(C), .ptr(out)])
        }
    }

    public func rmsnormBackward(dy: BufferView, x: BufferView, weight: BufferView, rstd: BufferView,
                                dx: BufferView, dweight: BufferView?, N: Int, C: Int) throws {
        try checkNormBackward("rmsnormBackward", dy: dy, x: x, weight: weight, mean: nil, rstd: rstd, dx: dx,
                              dweight: dweight, dbias: nil, N: N, C: C)
        try launch(CUDAKernels.norm, "sft_rmsnorm_bwd_dx_f32", grid: (N, 1, 1), block: rowThreads(C),
                   [.ptr(dy), .ptr(x), .ptr(weight), .ptr(rstd), .ptr(dx), .i64(N), .i64(C)])
        try normWeightGradients(dy: dy, x: x, mean: nil, rstd: rstd, dweight: dweight, dbias: nil, N: N, C: C)
    }

    public func layernormForward(x: BufferView, weight: BufferView, bias: BufferView?, y: BufferView,
                                 mean: BufferView, rstd: BufferView, N: Int, C: Int, eps: Float) throws {
        try checkNormForward("layernormForward", x: x, weight: weight, bias: bias, y: y, mean: mean, rstd: rstd, N: N, C: C)
        try launch(CUDAKernels.norm, "sft_layernorm_fwd_f32", grid: (N, 1, 1), block: rowThreads(C),
                   [.ptr(x), .ptr(weight), .optional(bias), .ptr(y), .ptr(mean), .ptr(rstd), .i64(N), .i64(C), .f32(eps)])
    }

    public func layernormBackward(dy: BufferView, x: BufferView, weight: BufferView, mean: BufferView,
                                  rstd: BufferView, dx: BufferView, dweight: BufferView?,
                                  dbias: BufferView?, N: Int, C: Int) throws {
        try checkNormBackward("layernormBackward", dy: dy, x: x, weight: weight, mean: mean, rstd: rstd, dx: dx,
                              dweight: dweight, dbias: dbias, N: N, C: C)
        try launch(CUDAKernels.norm, "sft_layernorm_bwd_dx_f32", grid: (N, 1, 1), block: rowThreads(C),
                   [.ptr(dy), .ptr(x), .ptr(weight), .ptr(mean), .ptr(rstd), .ptr(dx), .i64(N), .i64(C)])
        try normWeightGradients(dy: dy, x: x, mean: mean, rstd: rstd, dweight: dweight, dbias: dbias, N: N, C: C)
    }

    // MARK: rope

    public func rope(x: BufferView, ldx: Int, y: BufferView, ldy: Int, positions: BufferView,
                     invFreq: BufferView, N: Int, H: Int, D: Int, inverse: Bool) throws {
        try checkRope(x: x, ldx: ldx, y: y, ldy: ldy, positions: positions, invFreq: invFreq, N: N, H: H, D: D)
        let n = N * H * (D / 2)
        try launch(CUDAKernels.norm, "sft_rope_f32", grid: (blocks(n), 1, 1), block: 256,
                   [.ptr(x), .i64(ldx), .ptr(y), .i64(ldy), .ptr(positions), .ptr(invFreq), .i64(N), .i64(H),
                    .i64(D), .i32(inverse ? 1 : 0)])
    }

    // MARK: attention

    /// q, k, v, o of `dtype` (f32 or bf16, whose kernels are `_f32_` / `_bf16_`); lse, the doc
    /// ids and the ALiBi slopes 4-byte.
    private func checkAttention(_ op: String, _ s: AttentionShape, q: BufferView, k: BufferView,
                                v: BufferView, o: BufferView, lse: BufferView, docIds: BufferView?,
                                alibi: BufferView?, dtype: DType) throws {
        let shape = "B=\(s.B) T=\(s.T) H=\(s.H) KV=\(s.KV) D=\(s.D)"
        guard s.B >= 0, s.T >= 0, s.H > 0, s.KV > 0, s.D > 0, s.H % s.KV == 0 else {
            throw KernelError.invalidArgument(op: op, message: "bad shape \(shape): sizes must be positive and H a multiple of KV")
        }
        guard s.B <= 65535, s.H <= 65535, s.T < Int(Int32.max) / 2 else {
            throw KernelError.invalidArgument(op: op, message: "shape \(shape) exceeds the CUDA kernels' grid (B, H ≤ 65535)")
        }
        let rows = s.B * s.T, t = dtype == .bf16 ? " bf16" : ""
        try checkActivation(q, dtype, rows: rows, width: s.H * s.D, ld: s.ldq, op, "q\(t) (\(shape), ldq=\(s.ldq))")
        try checkActivation(k, dtype, rows: rows, width: s.KV * s.D, ld: s.ldk, op, "k\(t) (\(shape), ldk=\(s.ldk))")
        try checkActivation(v, dtype, rows: rows, width: s.KV * s.D, ld: s.ldv, op, "v\(t) (\(shape), ldv=\(s.ldv))")
        try checkActivation(o, dtype, rows: rows, width: s.H * s.D, ld: s.ldo, op, "o\(t) (\(shape), ldo=\(s.ldo))")
        try check(lse, count: s.B * s.H * s.T, op, "lse (\(shape))")
        if let docIds { try check(docIds, count: rows, op, "docIds (\(shape))") }
        if let alibi { try check(alibi, count: s.H, op, "alibi (\(shape))") }
        guard s.softcap >= 0, s.softcap.isFinite else {
            throw KernelError.invalidArgument(op: op, message: "softcap \(s.softcap) must be ≥ 0 (0 = off)")
        }
    }

    /// `rows` rows of `width` elements of `dtype` (f32: 4-byte aligned; bf16: 2), `ld` elements apart.
    private func checkActivation(_ view: BufferView, _ dtype: DType, rows: Int, width: Int, ld: Int, _ op: String,
                                 _ name: @autoclosure () -> String) throws {
        if dtype != .bf16 { return try check(view, rows: rows, width: width, ld: ld, op, name()) }
        guard ld >= width else {
            throw KernelError.invalidArgument(op: op, message: "\(name()): row stride \(ld) < row width \(width)")
        }
        guard view.byteOffset % 2 == 0 else {
            throw KernelError.invalidArgument(op: op, message: "\(name()): byte offset \(view.byteOffset) is not a multiple of 2")
        }
        try check(view, bytes: Self.span(rows: rows, width: width, ld: ld) * 2, op, name())
    }

    /// Dims per thread of the attention kernel class for head dim D (4 threads per row).
    func attentionClass(_ op: String, D: Int) throws -> Int {
        guard let dq = CUDAKernels.attentionDQ.first(where: { 4 * $0 >= D }) else {
            throw KernelError.invalidArgument(op: op, message: "head dim D=\(D) > \(4 * CUDAKernels.attentionDQ.last!) is not supported on CUDA")
        }
        return dq
    }

    /// start / end of every token's document, (B, T) each.
    private func documentBounds(_ docIds: BufferView?, B: Int, T: Int, window: Int?) throws -> (BufferView, BufferView) {
        let start = BufferView(try allocate(bytes: B * T * 4)), end = BufferView(try allocate(bytes: B * T * 4))
        try launch(CUDAKernels.attention, "sft_attn_doc_bounds", grid: (B, 1, 1), block: 1024,
                   [.optional(docIds), .ptr(start), .ptr(end), .i32(Int32(T)), .i32(Int32(window ?? 0))])
        return (start, end)
    }

    public func attentionForward(q: BufferView, k: BufferView, v: BufferView, o: BufferView,
                                 lse: BufferView, docIds: BufferView?, alibi: BufferView?,
                                 shape s: AttentionShape) throws {
        try attentionForward(q: q, k: k, v: v, o: o, lse: lse, docIds: docIds, alibi: alibi, shape: s, dtype: .f32)
    }

    /// The forward with q, k, v, o of `dtype` (f32 or bf16) read and written in place by the
    /// kernels (no widening scratch); lse f32.
    public func attentionForward(q: BufferView, k: BufferView, v: BufferView, o: BufferView, lse: BufferView,
                                 docIds: BufferView?, alibi: BufferView?, shape s: AttentionShape, dtype: DType) throws {
        let op = "attentionForward"
        _ = try activationType(dtype, op)
        try checkAttention(op, s, q: q, k: k, v: v, o: o, lse: lse, docIds: docIds, alibi: alibi, dtype: dtype)
        if s.B == 0 || s.T == 0 { return }
        let dq = try attentionClass(op, D: s.D)
        let (start, _) = try documentBounds(docIds, B: s.B, T: s.T, window: s.window)
        try launch(CUDAKernels.attention, "sft_attn_fwd_\(dtype)_dq\(dq)", grid: ((s.T + 31) / 32, s.H, s.B), block: 128,
                   [.ptr(q), .i64(s.ldq), .ptr(k), .i64(s.ldk), .ptr(v), .i64(s.ldv), .ptr(o), .i64(s.ldo), .ptr(lse),
                    .ptr(start), .optional(alibi), .i32(Int32(s.T)), .i32(Int32(s.H)), .i32(Int32(s.KV)),
                    .i32(Int32(s.D)), .f32(s.scale), .f32(s.softcap)])
    }

    public func attentionBackward(q: BufferView, k: BufferView, v: BufferView, o: BufferView,
                                  dout: BufferView, lse: BufferView, docIds: BufferView?,
                                  alibi: BufferView?, dq: BufferView, dk: BufferView, dv: BufferView,
                                  shape s: AttentionShape) throws {
        try attentionBackward(q: q, k: k, v: v, o: o, dout: dout, lse: lse, docIds: docIds, alibi: alibi, dq: dq, dk: dk,
                              dv: dv, shape: s, dtype: .f32)
    }

    /// The backward with q, k, v, o of `dtype` (f32 or bf16) read in place by the kernels (no
    /// widening scratch); dout, lse, dq, dk, dv f32.
    public func attentionBackward(q: BufferView, k: BufferView, v: BufferView, o: BufferView, dout: BufferView,
                                  lse: BufferView, docIds: BufferView?, alibi: BufferView?, dq: BufferView,
                                  dk: BufferView, dv: BufferView, shape s: AttentionShape, dtype: DType) throws {
        let op = "attentionBackward"
        _ = try activationType(dtype, op)
        try checkAttention(op, s, q: q, k: k, v: v, o: o, lse: lse, docIds: docIds, alibi: alibi, dtype: dtype)
        let rows = s.B * s.T
        try check(dout, rows: rows, width: s.H * s.D, ld: s.ldo, op, "dout (ldo=\(s.ldo))")
        try check(dq, rows: rows, width: s.H * s.D, ld: s.ldq, op, "dq (ldq=\(s.ldq))")
        try check(dk, rows: rows, width: s.KV * s.D, ld: s.ldk, op, "dk (ldk=\(s.ldk))")
        try check(dv, rows: rows, width: s.KV * s.D, ld: s.ldv, op, "dv (ldv=\(s.ldv))")
        if s.B == 0 || s.T == 0 { return }
        let cls = try attentionClass(op, D: s.D)
        let (start, end) = try documentBounds(docIds, B: s.B, T: s.T, window: s.window)
        let delta = BufferView(try allocate(bytes: s.B * s.H * s.T * 4))
        let deltaRows = s.B * s.T * s.H
        try launch(CUDAKernels.attention, "sft_attn_delta_\(dtype)", grid: ((deltaRows + 3) / 4, 1, 1), block: 128,
                   [.ptr(o), .i64(s.ldo), .ptr(dout), .i64(s.ldo), .ptr(delta), .i32(Int32(s.B)), .i32(Int32(s.T)),
                    .i32(Int32(s.H)), .i32(Int32(s.D))])
        let args: [Arg] = [.ptr(q), .i64(s.ldq), .ptr(k), .i64(s.ldk), .ptr(v), .i64(s.ldv), .ptr(dout), .i64(s.ldo),
                           .ptr(lse), .ptr(delta), .ptr(start), .ptr(end), .optional(alibi), .ptr(dq), .i64(s.ldq),
                           .ptr(dk), .i64(s.ldk), .ptr(dv), .i64(s.ldv), .i32(Int32(s.T)), .i32(Int32(s.H)),
                           .i32(Int32(s.KV)), .i32(Int32(s.D)), .f32(s.scale), .f32(s.softcap)]
        let blocksT = (s.T + 31) / 32
        try launch(CUDAKernels.attention, "sft_attn_bwd_dq_\(dtype)_dq\(cls)", grid: (blocksT, s.H, s.B), block: 128, args)
        try launch(CUDAKernels.attention, "sft_attn_bwd_dkdv_\(dtype)_dq\(cls)", grid: (blocksT, s.KV, s.B), block: 128, args)
    }

    public func attentionCached(q: BufferView, kCache: BufferView, vCache: BufferView, o: BufferView, Tq: Int, S: Int,
                                H: Int, KV: Int, D: Int, scale: Float, alibi: BufferView?, softcap: Float) throws {
        let op = "attentionCached"
        guard Tq >= 1, S >= Tq, H >= 1, KV >= 1, H % KV == 0, D >= 1, H <= 65535 else {
            throw KernelError.invalidArgument(op: op, message: "Tq=\(Tq) S=\(S) H=\(H) KV=\(KV) D=\(D)")
        }
        guard softcap >= 0, softcap.isFinite else {
            throw KernelError.invalidArgument(op: op, message: "softcap \(softcap) must be ≥ 0 (0 = off)")
        }
        if let alibi { try check(alibi, count: H, op, "alibi (H=\(H))") }
        try check(q, count: Tq * H * D, op, "q (Tq=\(Tq), H=\(H), D=\(D))")
        try check(o, count: Tq * H * D, op, "o (Tq=\(Tq), H=\(H), D=\(D))")
        try check(kCache, count: S * KV * D, op, "kCache (S=\(S), KV=\(KV), D=\(D))")
        try check(vCache, count: S * KV * D, op, "vCache (S=\(S), KV=\(KV), D=\(D))")
        let cls = try attentionClass(op, D: D)
        try launch(CUDAKernels.attention, "sft_attn_cached_f32_dq\(cls)", grid: (Tq, H, 1), block: 128,
                   [.ptr(q), .ptr(kCache), .ptr(vCache), .ptr(o), .i32(Int32(Tq)), .i32(Int32(S)), .i32(Int32(H)),
                    .i32(Int32(KV)), .i32(Int32(D)), .f32(scale), .optional(alibi), .f32(softcap)])
    }

    // MARK: swiglu

    public func swigluForward(gate: BufferView, up: BufferView, h: BufferView, count n: Int) throws {
        try check(count: n, "swigluForward", ["gate": gate, "up": up, "h": h])
        try launch(CUDAKernels.training, "sft_swiglu_fwd_f32", grid: (blocks(n), 1, 1), block: 256,
                   [.ptr(gate), .ptr(up), .ptr(h), .i64(n)])
    }

    public func swigluBackward(dh: BufferView, gate: BufferView, up: BufferView, dgate: BufferView,
                               dup: BufferView, count n: Int) throws {
        try check(count: n, "swigluBackward", ["dh": dh, "gate": gate, "up": up, "dgate": dgate, "dup": dup])
        try launch(CUDAKernels.training, "sft_swiglu_bwd_f32", grid: (blocks(n), 1, 1), block: 256,
                   [.ptr(dh), .ptr(gate), .ptr(up), .ptr(dgate), .ptr(dup), .i64(n)])
    }

    // MARK: embedding

    /// An id outside [0, V) is reported at the next synchronize or download (the ids are on
    /// the GPU; checking them here would wait for the stream).
    public func embeddingForward(ids: BufferView, table: BufferView, out: BufferView, N: Int, C: Int,
                                 V: Int) throws {
        try checkEmbeddingForward(ids: ids, table: table, out: out, N: N, C: C, V: V)
        try launch(CUDAKernels.training, "sft_embedding_fwd_f32", grid: (N, 1, 1), block: min(256, rowThreads(C) * 4),
                   [.ptr(ids), .ptr(table), .ptr(out), .i64(N), .i64(C), .i64(V), .ptr(errorView)])
    }

    public func embeddingBackward(ids: BufferView, dout: BufferView, dtable: BufferView, N: Int,
                                  C: Int) throws {
        try checkEmbeddingBackward(ids: ids, dout: dout, dtable: dtable, N: N, C: C)
        // The table's row count is whatever fits in dtable's buffer, as on the CPU.
        let rowsInTable = C == 0 ? Int(Int32.max) : (dtable.buffer.bytes - dtable.byteOffset) / (4 * C)
        try launch(CUDAKernels.training, "sft_embedding_bwd_f32", grid: (N, 1, 1), block: min(256, rowThreads(C) * 4),
                   [.ptr(ids), .ptr(dout), .ptr(dtable), .i64(N), .i64(C), .i64(rowsInTable), .ptr(errorView)])
    }

    // MARK: optimizer

    public func adamw(param: BufferView, grad: BufferView, m: BufferView, v: BufferView, count n: Int,
                      step: AdamWStep) throws {
        try checkAdamW(param: param, grad: grad, m: m, v: v, count: n, step: step)
        try launch(CUDAKernels.training, "sft_adamw_f32", grid: (blocks(n), 1, 1), block: 256,
                   [.ptr(param), .ptr(grad), .ptr(m), .ptr(v), .i64(n), .f32(step.lr), .f32(step.beta1),
                    .f32(step.beta2), .f32(step.eps), .f32(step.weightDecay), .f32(step.biasCorrection1),
                    .f32(step.biasCorrection2)])
    }

    /// One tensor of a multi-tensor AdamW step, with its own weight decay.
    public struct AdamWTensor {
        /// The f32 parameter (updated in place), its gradient, and its first and second moments
        /// (updated in place), each `count` values on this GPU.
        public var param: BufferView, grad: BufferView, m: BufferView, v: BufferView
        /// Number of values in each of the four buffers.
        public var count: Int
        /// This tensor's decoupled weight decay (0 for tensors excluded from decay).
        public var weightDecay: Float
        /// - Parameters:
        ///   - param: The parameter.
        ///   - grad: Its gradient.
        ///   - m: First moment.
        ///   - v: Second moment.
        ///   - count: Values in each.
        ///   - weightDecay: Its weight decay.
        public init(param: BufferView, grad: BufferView, m: BufferView, v: BufferView, count: Int, weightDecay: Float) {
            self.param = param; self.grad = grad; self.m = m; self.v = v
            self.count = count; self.weightDecay = weightDecay
        }
    }

    /// AdamW over many tensors in one launch (`step.weightDecay` is ignored: each tensor has its
    /// own). Same update as `adamw` per tensor.
    public func adamw(_ tensors: [AdamWTensor], step: AdamWStep) throws {
        guard step.biasCorrection1 > 0, step.biasCorrection2 > 0 else {
            throw KernelError.invalidArgument(op: "adamw", message: "bias corrections must be positive (step >= 1)")
        }
        let perBlock = 4096
        // Entry layout of the kernel's AdamTensor: 4 pointers, n, first_block, weight decay, pad.
        var table: [UInt64] = []
        var firstBlock = 0
        for (i, t) in tensors.enumerated() where t.count > 0 {
            for (name, view) in [("param", t.param), ("grad", t.grad), ("m", t.m), ("v", t.v)] {
                try check(view, count: t.count, "adamw", "tensor \(i) \(name)")
            }
            table += [UInt64(address(t.param)), UInt64(address(t.grad)), UInt64(address(t.m)), UInt64(address(t.v)),
                      UInt64(t.count), UInt64(firstBlock), UInt64(t.weightDecay.bitPattern)]
            firstBlock += (t.count + perBlock - 1) / perBlock
        }
        if firstBlock == 0 { return }
        let list = BufferView(try allocate(bytes: table.count * 8))
        try table.withUnsafeBytes { try upload($0.baseAddress!, to: list, bytes: $0.count) }
        try launch(CUDAKernels.training, "sft_adamw_multi_f32", grid: (firstBlock, 1, 1), block: 256,
                   [.ptr(list), .i32(Int32(table.count / 7)), .i64(perBlock), .f32(step.lr), .f32(step.beta1),
                    .f32(step.beta2), .f32(step.eps), .f32(step.biasCorrection1), .f32(step.biasCorrection2)])
    }
}

// MARK: bf16 storage (f32 arithmetic): the first mixed-precision ops

extension CUDABackend {
    /// y = a + b on bf16 values (computed in f32, rounded to nearest even).
    public func addBF16(_ a: BufferView, _ b: BufferView, into y: BufferView, count n: Int) throws {
        for (name, view) in [("a", a), ("b", b), ("y", y)] { try check(view, bytes: max(0, n) * 2, "addBF16", name) }
        try launch(ew, "sft_add_bf16", grid: (blocks(n), 1, 1), block: 256, [.ptr(a), .ptr(b), .ptr(y), .i64(n)])
    }

    /// RMSNorm of bf16 rows with an f32 weight: y (bf16) and rstd (f32), as `rmsnormForward`.
    public func rmsnormForwardBF16(x: BufferView, weight: BufferView, y: BufferView, rstd: BufferView,
                                   N: Int, C: Int, eps: Float) throws {
        let op = "rmsnormForwardBF16"
        try nonNegative(op, ["N": N, "C": C])
        try check(x, bytes: N * C * 2, op, "x (N=\(N), C=\(C), bf16)")
        try check(weight, count: C, op, "weight (C=\(C))")
        try check(y, bytes: N * C * 2, op, "y (N=\(N), C=\(C), bf16)")
        try check(rstd, count: N, op, "rstd (N=\(N))")
        try launch(CUDAKernels.norm, "sft_rmsnorm_fwd_bf16", grid: (N, 1, 1), block: rowThreads(C),
                   [.ptr(x), .ptr(weight), .ptr(y), .ptr(rstd), .i64(N), .i64(C), .f32(eps)])
    }

    /// h = silu(gate) · up on bf16 values.
    public func swigluForwardBF16(gate: BufferView, up: BufferView, h: BufferView, count n: Int) throws {
        for (name, view) in [("gate", gate), ("up", up), ("h", h)] {
            try check(view, bytes: max(0, n) * 2, "swigluForwardBF16", name)
        }
        try launch(CUDAKernels.training, "sft_swiglu_fwd_bf16", grid: (blocks(n), 1, 1), block: 256,
                   [.ptr(gate), .ptr(up), .ptr(h), .i64(n)])
    }
}
