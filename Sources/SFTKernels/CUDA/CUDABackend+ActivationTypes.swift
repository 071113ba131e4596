// bf16 activations on CUDA (BackendActivationTypes.swift): the residual add, RoPE, SwiGLU and
// GELU / GeGLU kernels are templated on the activation type (Kernels/: `load_act` /
// `store_act`), so bf16 operands are read and written in place; so are attention's q, k, v and
// o (`attentionForward` / `attentionBackward(dtype:)` live beside the f32 entries in
// CUDABackend+Ops.swift, one launch path for both types).

extension CUDABackend {
    private func checkBF16(count n: Int, _ op: String, _ views: KeyValuePairs<String, BufferView>) throws {
        for (name, view) in views { try check(view, bytes: max(0, n) * 2, op, name) }
    }

    public func add(_ a: BufferView, _ b: BufferView, bType: DType, into y: BufferView, count n: Int) throws {
        guard try activationType(bType, "add") == .bf16 else { return try add(a, b, into: y, count: n) }
        try check(count: n, "add", ["a": a, "y": y])
        try checkBF16(count: n, "add", ["b": b])
        try launch(CUDAKernels.elementwise, "sft_add_f32_bf16", grid: (blocks(n), 1, 1), block: 256, [.ptr(a), .ptr(b), .ptr(y), .i64(n)])
    }

    public func rope(x: BufferView, ldx: Int, y: BufferView, ldy: Int, positions: BufferView, invFreq: BufferView,
                     N: Int, H: Int, D: Int, inverse: Bool, dtype: DType) throws {
        guard try activationType(dtype, "rope") == .bf16 else {
            return try rope(x: x, ldx: ldx, y: y, ldy: ldy, positions: positions, invFreq: invFreq, N: N, H: H, D: D,
                            inverse: inverse)
        }
        try checkRope(x: x, ldx: ldx, y: y, ldy: ldy, positions: positions, invFreq: invFreq, N: N, H: H, D: D, dtype: .bf16)
        let n = N * H * (D / 2)
        try launch(CUDAKernels.norm, "sft_rope_bf16", grid: (blocks(n), 1, 1), block: 256,
                   [.ptr(x), .i64(ldx), .ptr(y), .i64(ldy), .ptr(positions), .ptr(invFreq), .i64(N), .i64(H),
                    .i64(D), .i32(inverse ? 1 : 0)])
    }

    public func swigluForward(gate: BufferView, up: BufferView, h: BufferView, count n: Int, dtype: DType) throws {
        guard try activationType(dtype, "swigluForward") == .bf16 else {
            return try swigluForward(gate: gate, up: up, h: h, count: n)
        }
        try swigluForwardBF16(gate: gate, up: up, h: h, count: n)
    }

    public func swigluBackward(dh: BufferView, gate: BufferView, up: BufferView, dgate: BufferView, dup: BufferView,
                               count n: Int, dtype: DType) throws {
        guard try activationType(dtype, "swigluBackward") == .bf16 else {
            return try swigluBackward(dh: dh, gate: gate, up: up, dgate: dgate, dup: dup, count: n)
        }
        try check(count: n, "swigluBackward", ["dh": dh, "dgate": dgate, "dup": dup])
        try checkBF16(count: n, "swigluBackward", ["gate": gate, "up": up])
        try launch(CUDAKernels.training, "sft_swiglu_bwd_bf16", grid: (blocks(n), 1, 1), block: 256,
                   [.ptr(dh), .ptr(gate), .ptr(up), .ptr(dgate), .ptr(dup), .i64(n)])
    }

    public func geluForward(x: BufferView, up: BufferView?, y: BufferView, count n: Int, approximate: Bool,
                            dtype: DType) throws {
        guard try activationType(dtype, "geluForward") == .bf16 else {
            return try geluForward(x: x, up: up, y: y, count: n, approximate: approximate)
        }
        try checkBF16(count: n, "geluForward", ["x": x, "y": y])
        if let up { try checkBF16(count: n, "geluForward", ["up": up]) }
        try launch(CUDAKernels.activations, "sft_gelu_fwd_bf16", grid: (blocks(n), 1, 1), block: 256,
                   [.ptr(x), .optional(up), .ptr(y), .i64(n), .i32(approximate ? 1 : 0)])
    }

    public func geluBackward(dy: BufferView, x: BufferView, up: BufferView?, dx: BufferView, dup: BufferView?,
                             count n: Int, approximate: Bool, dtype: DType) throws {
        guard try activationType(dtype, "geluBackward") == .bf16 else {
            return try geluBackward(dy: dy, x: x, up: up, dx: dx, dup: dup, count: n, approximate: approximate)
        }
        try check(count: n, "geluBackward", ["dy": dy, "dx": dx])
        try checkBF16(count: n, "geluBackward", ["x": x])
        if let up { try checkBF16(count: n, "geluBackward", ["up": up]) }
        if let dup { try check(count: n, "geluBackward", ["dup": dup]) }
        try launch(CUDAKernels.activations, "sft_gelu_bwd_bf16", grid: (blocks(n), 1, 1), block: 256,
                   [.ptr(dy), .ptr(x), .optional(up), .ptr(dx), .optional(dup), .i64(n), .i32(approximate ? 1 : 0)])
    }
}
