// The 4-bit linear op (bitsandbytes' Linear4bit behaviour) on CPU: y = x Wᵀ (+ b) with W kept
// in NF4/FP4 and dequantized on the fly, a tile of rows at a time, into one reused f32 scratch
// that the backend's GEMM reads. The same tiles give the input gradient dX = dY W; the frozen
// base gets no weight gradient. One token at a time (generation) skips the tiles: a 4-bit
// matrix-vector kernel decodes and multiplies in one pass.
//
// Shapes: N rows (tokens), K in features, M out features; W is (M, K) as in HF checkpoints.

import CSFTKernels
import Foundation
import SFTKernels

extension Ops {
    /// Rows of x at or below which the matrix-vector kernel beats dequantize + GEMM.
    static let quantizedMatVecMaxRows = 2

    /// y = x Wᵀ (+ bias) for a 4-bit W (M, K). x: (…, K) → (…, M). Records dX = dY W for
    /// backward (W is frozen; bias gets its gradient when it trains).
    public static func quantizedLinear(_ x: Tensor, _ w: QuantizedWeight, bias: Tensor? = nil) throws -> Tensor {
        let M = w.shape[0], K = w.shape[1]
        try check(w.shape.count == 2 && x.shape.last == K, "linear4bit", "x \(x.shape) · 4-bit weight \(w.shape)ᵀ")
        try check(x.dtype == .f32, "linear4bit", "x is \(x.dtype), expected f32")
        guard x.device == .cpu, w.packed.device == .cpu else {
            throw SFTError.unsupported("4-bit linear layers on \(x.device) (only the CPU backend runs them so far)")
        }
        if let bias { try check(bias.shape == [M], "linear4bit", "bias \(bias.shape) for \(M) outputs") }
        let N = x.count / max(1, K), be = x.backend
        let y = try Tensor(empty: Array(x.shape.dropLast()) + [M], on: be)
        if N <= quantizedMatVecMaxRows {
            try QuantizedTiles.matVec(w, x: x, y: y, rows: N)
            if let bias { for r in 0..<N { try be.axpy(alpha: 1, bias.storage, y.storage.advanced(byBytes: r * M * 4), count: M) } }
        } else {
            if let bias { for r in 0..<N { try be.copy(bias.storage, to: y.storage.advanced(byBytes: r * M * 4), bytes: M * 4) } }
            try QuantizedTiles.forEachTile(of: w) { r0, rows, tile in
                // y[:, r0 ..< r0+rows] (+)= x · tileᵀ
                try be.gemm(transA: false, transB: true, M: N, N: rows, K: K, alpha: 1, A: x.storage, lda: K, strideA: 0,
                            B: tile, ldb: K, strideB: 0, beta: bias == nil ? 0 : 1,
                            C: y.storage.advanced(byBytes: r0 * 4), ldc: M, strideC: 0, batch: 1)
            }
        }
        var inputs = [x]
        if let bias { inputs.append(bias) }
        Autograd.record(y, op: "linear4bit", inputs: inputs) { g in
            var dx: Tensor? = nil
            if x.requiresGrad {
                let t = try Tensor(empty: x.shape, on: be)
                try QuantizedTiles.forEachTile(of: w) { r0, rows, tile in
                    // dX (+)= dY[:, r0 ..< r0+rows] · tile
                    try be.gemm(transA: false, transB: false, M: N, N: K, K: rows, alpha: 1,
                                A: g.storage.advanced(byBytes: r0 * 4), lda: M, strideA: 0, B: tile, ldb: K, strideB: 0,
                                beta: r0 == 0 ? 0 : 1, C: t.storage, ldc: K, strideC: 0, batch: 1)
                }
                dx = t
            }
            if let bias, bias.requiresGrad {
                let db = try bias.gradBuffer()
                for r in 0..<N { try be.axpy(alpha: 1, g.storage.advanced(byBytes: r * M * 4), db.storage, count: M) }
            }
            return [dx, nil]
        }
        return y
    }
}

/// Tile-wise dequantization and the matrix-vector path (CPU).
enum QuantizedTiles {
    /// Scratch per tile: about 1 M floats, and at least 64 rows so the GEMM stays efficient.
    static func tileRows(M: Int, K: Int) -> Int { min(M, max(64, (1 << 20) / max(1, K))) }

    static var threads: Int { max(1, CPUBackend.shared.threads) }

    /// Dequantizes rows [r0, r0 + rows) of W into `out` (rows × K floats), on every core.
    static func dequantizeRows(_ w: QuantizedWeight, _ r0: Int, _ rows: Int, into out: UnsafeMutablePointer<Float>,
                               absmaxScratch: UnsafeMutablePointer<Float>) throws {
        let K = w.shape[1], bs = w.blockSize
        let start = r0 * K, count = rows * K
        let firstBlock = start / bs, lastBlock = (start + count - 1) / bs
        // The scales of the tile's blocks: a view into absmax, or rebuilt from 8-bit codes.
        let absmax: UnsafePointer<Float>
        switch w.scales {
        case .absmax(let a): absmax = UnsafePointer(a.storage.f32() + firstBlock)
        case .doubleQuantized:
            try w.absmax(blocks: firstBlock, lastBlock - firstBlock + 1, into: absmaxScratch)
            absmax = UnsafePointer(absmaxScratch)
        }
        let packed = w.packed.storage.u8(), type = w.type.cType
        let nparts = min(threads, max(1, count / (1 << 15)))
        try parallel(nparts) { p in
            // Part boundaries on multiples of 32 values keep the vector loops whole.
            let lo = count * p / nparts / 32 * 32, hi = p == nparts - 1 ? count : count * (p + 1) / nparts / 32 * 32
            guard hi > lo else { return 0 }
            let s = start + lo
            return sft_nf4_dequantize(type, packed, absmax + (s / bs - firstBlock), Int64(bs), Int64(s), Int64(hi - lo), out + lo)
        }
    }

    /// Runs body(part) for parts 0..<n on all cores; throws the C message of a failing part.
    static func parallel(_ n: Int, op: String = "linear4bit", _ body: (Int) -> Int32) throws {
        if n <= 1 {
            if body(0) != 0 { throw SFTError.shape(op: op, message: String(cString: sft_last_error())) }
            return
        }
        let errors = UnsafeMutablePointer<Int32>.allocate(capacity: n)
        defer { errors.deallocate() }
        errors.initialize(repeating: 0, count: n)
        let messages = UnsafeMutablePointer<String?>.allocate(capacity: n)
        defer { messages.deinitialize(count: n); messages.deallocate() }
        messages.initialize(repeating: nil, count: n)
        DispatchQueue.concurrentPerform(iterations: n) { p in
            errors[p] = body(p)
            // The message is thread-local in C: read it on the failing thread.
            if errors[p] != 0 { messages[p] = String(cString: sft_last_error()) }
        }
        if let p = (0..<n).first(where: { errors[$0] != 0 }) {
            throw SFTError.shape(op: op, message: messages[p] ?? "kernel failed")
        }
    }

    /// Calls body(r0, rows, tile) for consecutive row tiles of W dequantized into one scratch.
    static func forEachTile(of w: QuantizedWeight, _ body: (Int, Int, BufferView) throws -> Void) throws {
        let M = w.shape[0], K = w.shape[1]
        let R = tileRows(M: M, K: K)
        let be = w.backend
        let scratch = try Tensor(empty: [R, K], on: be)
        let absScratch = try Tensor(empty: [R * K / w.blockSize + 2], on: be)
        var r0 = 0
        while r0 < M {
            let rows = min(R, M - r0)
            try dequantizeRows(w, r0, rows, into: scratch.storage.f32(), absmaxScratch: absScratch.storage.f32())
            try body(r0, rows, scratch.storage)
            r0 += rows
        }
    }

    /// y (rows, M) = x (rows, K) Wᵀ with the 4-bit matrix-vector kernel, row by row.
    static func matVec(_ w: QuantizedWeight, x: Tensor, y: Tensor, rows: Int) throws {
        let M = w.shape[0], K = w.shape[1]
        let absmax: Tensor
        switch w.scales {
        case .absmax(let a): absmax = a
        case .doubleQuantized:
            absmax = try Tensor(empty: [w.blockCount], on: w.backend)
            try w.absmax(blocks: 0, w.blockCount, into: absmax.storage.f32())
        }
        let packed = w.packed.storage.u8(), scales = absmax.storage.f32(), type = w.type.cType
        let nparts = min(threads, M, max(1, M * K / (1 << 16)))
        for r in 0..<rows {
            let xr = x.storage.f32() + r * K, yr = y.storage.f32() + r * M
            try parallel(nparts) { p in
                sft_nf4_matvec(type, packed, scales, Int64(w.blockSize), xr, yr, Int64(M), Int64(K), Int32(p), Int32(nparts))
            }
        }
    }
}
