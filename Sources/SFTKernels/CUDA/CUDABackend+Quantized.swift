// The CUDA backend's weight forms. 4-bit (NF4/FP4, + double quantization) weights stay 4-bit
// in device memory: `dequantize4bit` decodes one tile of rows into the f32 scratch that the
// 4-bit linear op (Backend+Linear4bit.swift) hands to cuBLASLt through `gemm`, so no full-size
// f32 copy of a weight ever exists; `matVec4bit` multiplies one or two rows in one pass. The
// kernels are CUDAKernels.quant (CUDAKernels+Quant.swift), mirroring quant_nf4.c.
//
// GGUF blocks (packed decode) are not supported here: `supports(.ggufBlocks)` is false, so the
// model decodes on its exact (dequantized) weights on this device, and `packBlocks` /
// `packedMatVec` keep the protocol's defaults, which throw.

import CSFTKernels
import Foundation

extension CUDABackend {
    public func supports(_ form: WeightFormKind) -> Bool { form != .ggufBlocks }

    public func dequantize4bit(_ w: QuantizedMatrix, rows r0: Int, count rows: Int, into out: BufferView) throws {
        try w.check(on: self, "dequantize4bit")
        try check4bitRows(w, r0, rows, out: out, "dequantize4bit")
        let bs = w.blockSize, start = r0 * w.cols, count = rows * w.cols
        if count == 0 { return }
        let firstBlock = start / bs, lastBlock = (start + count - 1) / bs
        let tables = try quantTables()
        // Double quantization: the tile's absmax values first, into a scratch of its blocks.
        let (absmax, first) = try absmaxView(w, blocks: firstBlock, lastBlock - firstBlock + 1, tables: tables)
        try launch(CUDAKernels.quant, "sft_q4_dequantize_f32", grid: (blocks(count), 1, 1), block: 256,
                   [.ptr(w.packed), .ptr(absmax), .ptr(tables.code(w.type)), .i64(bs), .i64(first), .i64(start), .i64(count),
                    .ptr(out)])
    }

    /// The 4-bit linear op. f32 compute: the shared tile loop (Backend+Linear4bit.swift).
    /// bf16 / f16 compute (bitsandbytes' compute dtype): x rounded to it once, each tile decoded
    /// straight to it, cuBLASLt multiplying 16-bit inputs with f32 accumulation into f32 y.
    public func linear4bit(x: BufferView, weight w: QuantizedMatrix, bias: BufferView?, y: BufferView, N: Int) throws {
        let M = w.rows, K = w.cols, h = w.computeDType
        guard h != .f32, N > Self.linear4bitMatVecMaxRows else {
            return try linear4bitF32(x: x, weight: w, bias: bias, y: y, N: N)   // decode rows: the f32 matvec
        }
        try w.check(on: self, "linear4bit")
        try check(x, count: N * K, "linear4bit", "x")
        try check(y, count: N * M, "linear4bit", "y")
        if let bias { try check(bias, count: M, "linear4bit", "bias") }
        let xh = BufferView(try allocate(bytes: max(1, N * K) * h.size))
        try cast(x, from: .f32, into: xh, to: h, count: N * K)
        if let bias { for r in 0..<N { try copy(bias, to: y.advanced(byBytes: r * M * 4), bytes: M * 4) } }
        try forEach4bitTile16(of: w) { r0, rows, tile in
            // y[:, r0 ..< r0+rows] (+)= x · tileᵀ
            try gemm(transA: false, transB: true, M: N, N: rows, K: K, alpha: 1, A: xh, aType: h, lda: K, strideA: 0,
                     B: tile, bType: h, ldb: K, strideB: 0, beta: bias == nil ? 0 : 1,
                     C: y.advanced(byBytes: r0 * 4), cType: .f32, ldc: M, strideC: 0, batch: 1)
        }
    }

    /// dx = dy · W; with a 16-bit compute dtype dy is rounded to it once and each tile decoded to it.
    public func linear4bitInputGradient(dy: BufferView, weight w: QuantizedMatrix, dx: BufferView, N: Int) throws {
        let M = w.rows, K = w.cols, h = w.computeDType
        guard h != .f32, M > 0 else { return try linear4bitInputGradientF32(dy: dy, weight: w, dx: dx, N: N) }
        try w.check(on: self, "linear4bitInputGradient")
        try check(dy, count: N * M, "linear4bitInputGradient", "dy")
        try check(dx, count: N * K, "linear4bitInputGradient", "dx")
        let dyh = BufferView(try allocate(bytes: max(1, N * M) * h.size))
        try cast(dy, from: .f32, into: dyh, to: h, count: N * M)
        try forEach4bitTile16(of: w) { r0, rows, tile in
            // dX (+)= dY[:, r0 ..< r0+rows] · tile
            try gemm(transA: false, transB: false, M: N, N: K, K: rows, alpha: 1,
                     A: dyh.advanced(byBytes: r0 * h.size), aType: h, lda: M, strideA: 0, B: tile, bType: h, ldb: K, strideB: 0,
                     beta: r0 == 0 ? 0 : 1, C: dx, cType: .f32, ldc: K, strideC: 0, batch: 1)
        }
    }

    /// Calls body(r0, rows, tile) for consecutive row tiles of W decoded to its 16-bit compute
    /// dtype into one scratch (the f32 loop's tile sizes).
    private func forEach4bitTile16(of w: QuantizedMatrix, _ body: (Int, Int, BufferView) throws -> Void) throws {
        let M = w.rows, K = w.cols, h = w.computeDType
        guard h == .bf16 || h == .f16 else {
            throw KernelError.invalidArgument(op: "linear4bit", message: "compute dtype \(h) (use f32, bf16 or f16)")
        }
        let R = linear4bitTileRows(M: M, K: K)
        let scratch = BufferView(try allocate(bytes: max(1, R * K) * h.size))
        let tables = try quantTables()
        var r0 = 0
        while r0 < M {
            let rows = min(R, M - r0), start = r0 * K, count = rows * K
            if count > 0 {
                let firstBlock = start / w.blockSize, lastBlock = (start + count - 1) / w.blockSize
                let (absmax, first) = try absmaxView(w, blocks: firstBlock, lastBlock - firstBlock + 1, tables: tables)
                try launch(CUDAKernels.quant, "sft_q4_dequantize_h", grid: (blocks(count), 1, 1), block: 256,
                           [.ptr(w.packed), .ptr(absmax), .ptr(tables.code(w.type)), .i64(w.blockSize), .i64(first), .i64(start),
                            .i64(count), .ptr(scratch), .i32(h == .bf16 ? 1 : 0)])
            }
            try body(r0, rows, scratch)
            r0 += rows
        }
    }

    public func matVec4bit(_ w: QuantizedMatrix, x: BufferView, y: BufferView, n: Int) throws {
        let M = w.rows, K = w.cols
        try w.check(on: self, "matVec4bit")
        try check(x, count: n * K, "matVec4bit", "x")
        try check(y, count: n * M, "matVec4bit", "y")
        guard n <= 65535 else {
            throw KernelError.invalidArgument(op: "matVec4bit", message: "\(n) rows of x (at most 65535; use linear4bit)")
        }
        if M == 0 || n == 0 { return }
        if K == 0 { return try fill(y, value: 0, count: n * M) }
        let tables = try quantTables()
        let (absmax, _) = try absmaxView(w, blocks: 0, w.blockCount, tables: tables)
        try launch(CUDAKernels.quant, "sft_q4_matvec_f32", grid: (M, n, 1), block: rowThreads(K),
                   [.ptr(w.packed), .ptr(absmax), .ptr(tables.code(w.type)), .i64(w.blockSize), .ptr(x), .ptr(y), .i64(M), .i64(K)])
    }

    /// The absmax of blocks [first, first + n) on the device and the block index it starts at:
    /// the matrix's own buffer (index 0), or, double-quantized, a scratch decoded from the codes.
    private func absmaxView(_ w: QuantizedMatrix, blocks first: Int, _ n: Int,
                            tables: CUDAQuantTables) throws -> (BufferView, Int) {
        switch w.scales {
        case .absmax(let a):
            return (a, 0)
        case .doubleQuantized(let codes, let absmax2, let offset):
            let scratch = BufferView(try allocate(bytes: max(1, n) * 4))
            try launch(CUDAKernels.quant, "sft_dq8_absmax_f32", grid: (blocks(n), 1, 1), block: 256,
                       [.ptr(codes), .ptr(absmax2), .ptr(tables.dynamicMap), .i64(first), .i64(n), .f32(offset), .ptr(scratch)])
            return (scratch, first)
        }
    }

    /// The code tables on this GPU (uploaded on first use from the C tables).
    private func quantTables() throws -> CUDAQuantTables {
        try CUDAQuantTables.tables(for: self)
    }
}

/// The NF4 and FP4 16-value codes and bitsandbytes' signed dynamic map in one GPU's memory.
final class CUDAQuantTables: @unchecked Sendable {
    let nf4: BufferView, fp4: BufferView, dynamicMap: BufferView

    func code(_ type: QuantType) -> BufferView { type == .nf4 ? nf4 : fp4 }

    private init(on gpu: CUDABackend) throws {
        func upload(_ values: [Float]) throws -> BufferView {
            let v = BufferView(try gpu.allocate(bytes: values.count * 4))
            try values.withUnsafeBytes { try gpu.upload($0.baseAddress!, to: v, bytes: $0.count) }
            return v
        }
        nf4 = try upload(BlockwiseQuant.codeValues(.nf4))
        fp4 = try upload(BlockwiseQuant.codeValues(.fp4))
        dynamicMap = try upload(BlockwiseQuant.dynamicMap)
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var byDevice: [Device: CUDAQuantTables] = [:]

    static func tables(for gpu: CUDABackend) throws -> CUDAQuantTables {
        lock.lock()
        defer { lock.unlock() }
        if let t = byDevice[gpu.device] { return t }
        let t = try CUDAQuantTables(on: gpu)
        byDevice[gpu.device] = t
        return t
    }
}
