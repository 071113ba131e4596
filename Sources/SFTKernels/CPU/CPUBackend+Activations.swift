// GELU / GeGLU and clamp on the CPU: gelu.c and clamp.c over chunks of the pool.
import CSFTKernels

extension CPUBackend {
    public func clampForward(_ x: BufferView, into y: BufferView, count n: Int, limit: Float) throws {
        try check(count: n, "clampForward", ["x": x, "y": y])
        let (px, py) = (x.f32(), y.f32())
        chunked(n, grain: 1 << 15) { s, c in sft_clamp_fwd_f32(px + s, py + s, Int64(c), limit) }
    }

    public func clampBackward(dy: BufferView, x: BufferView, dx: BufferView, count n: Int, limit: Float) throws {
        try check(count: n, "clampBackward", ["dy": dy, "x": x, "dx": dx])
        let (pdy, px, pdx) = (dy.f32(), x.f32(), dx.f32())
        chunked(n, grain: 1 << 15) { s, c in sft_clamp_bwd_f32(pdy + s, px + s, pdx + s, Int64(c), limit) }
    }

    public func geluForward(x: BufferView, up: BufferView?, y: BufferView, count n: Int, approximate: Bool) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("geluForward", profileStart) }
        try check(count: n, "geluForward", ["x": x, "y": y])
        if let up { try check(count: n, "geluForward", ["up": up]) }
        let (px, pu, py) = (x.f32(), up?.f32(), y.f32())
        chunked(n, grain: 1 << 14) { s, c in sft_gelu_fwd_f32(px + s, pu.map { $0 + s }, py + s, Int64(c), approximate ? 1 : 0) }
    }

    public func geluBackward(dy: BufferView, x: BufferView, up: BufferView?, dx: BufferView, dup: BufferView?,
                             count n: Int, approximate: Bool) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("geluBackward", profileStart) }
        try check(count: n, "geluBackward", ["dy": dy, "x": x, "dx": dx])
        if let up { try check(count: n, "geluBackward", ["up": up]) }
        if let dup { try check(count: n, "geluBackward", ["dup": dup]) }
        let (pdy, px, pu, pdx, pdu) = (dy.f32(), x.f32(), up?.f32(), dx.f32(), dup?.f32())
        chunked(n, grain: 1 << 14) { s, c in
            sft_gelu_bwd_f32(pdy + s, px + s, pu.map { $0 + s }, pdx + s, pdu.map { $0 + s }, Int64(c), approximate ? 1 : 0)
        }
    }
}
