// GELU / GeGLU and clamp on CUDA (kernels in Kernels/CUDAKernels+Activations.swift).

extension CUDABackend {
    public func clampForward(_ x: BufferView, into y: BufferView, count n: Int, limit: Float) throws {
        try check(count: n, "clampForward", ["x": x, "y": y])
        try launch(CUDAKernels.activations, "sft_clamp_fwd_f32", grid: (blocks(n), 1, 1), block: 256,
                   [.ptr(x), .ptr(y), .i64(n), .f32(limit)])
    }

    public func clampBackward(dy: BufferView, x: BufferView, dx: BufferView, count n: Int, limit: Float) throws {
        try check(count: n, "clampBackward", ["dy": dy, "x": x, "dx": dx])
        try launch(CUDAKernels.activations, "sft_clamp_bwd_f32", grid: (blocks(n), 1, 1), block: 256,
                   [.ptr(dy), .ptr(x), .ptr(dx), .i64(n), .f32(limit)])
    }

    public func geluForward(x: BufferView, up: BufferView?, y: BufferView, count n: Int, approximate: Bool) throws {
        try check(count: n, "geluForward", ["x": x, "y": y])
        if let up { try check(count: n, "geluForward", ["up": up]) }
        try launch(CUDAKernels.activations, "sft_gelu_fwd_f32", grid: (blocks(n), 1, 1), block: 256,
                   [.ptr(x), .optional(up), .ptr(y), .i64(n), .i32(approximate ? 1 : 0)])
    }

    public func geluBackward(dy: BufferView, x: BufferView, up: BufferView?, dx: BufferView, dup: BufferView?,
                             count n: Int, approximate: Bool) throws {
        try check(count: n, "geluBackward", ["dy": dy, "x": x, "dx": dx])
        if let up { try check(count: n, "geluBackward", ["up": up]) }
        if let dup { try check(count: n, "geluBackward", ["dup": dup]) }
        try launch(CUDAKernels.activations, "sft_gelu_bwd_f32", grid: (blocks(n), 1, 1), block: 256,
                   [.ptr(dy), .ptr(x), .optional(up), .ptr(dx), .optional(dup), .i64(n), .i32(approximate ? 1 : 0)])
    }
}
