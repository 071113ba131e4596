// What a backend gets for the weight-form ops it does not implement itself: dense weights
// only in `supports`; 4-bit decoding as a CPU fallback with explicit transfers (the tile's
// codes and scales are downloaded, decoded by the C kernels on the host, the f32 tile
// uploaded — never host pointers into device memory); the 4-bit matvec as tiles + the
// backend's GEMM; GGUF blocks not at all (a typed error: callers ask `supports` first).

extension Backend {
    public func supports(_ form: WeightFormKind) -> Bool { form == .dense }

    public func dequantize4bit(_ w: QuantizedMatrix, rows r0: Int, count rows: Int, into out: BufferView) throws {
        try dequantize4bitOnHost(w, rows: r0, count: rows, into: out)
    }

    /// The CPU fallback of `dequantize4bit` on any backend: download the tile's codes and
    /// scales, decode them with the C kernels on the host, upload the f32 tile. (Public so the
    /// tests can compare it with a backend's own decoder.)
    public func dequantize4bitOnHost(_ w: QuantizedMatrix, rows r0: Int, count rows: Int, into out: BufferView) throws {
        try w.check(on: self, "dequantize4bit")
        try check4bitRows(w, r0, rows, out: out, "dequantize4bit")
        let start = r0 * w.cols, n = rows * w.cols
        if n == 0 { return }
        // The bytes of values [start, start + n) and the scales of their blocks, on the host.
        let byte0 = start / 2, bytes = (start + n + 1) / 2 - byte0
        var packed = [UInt8](repeating: 0, count: bytes)
        try packed.withUnsafeMutableBytes { try download(w.packed.advanced(byBytes: byte0), to: $0.baseAddress!, bytes: bytes) }
        let firstBlock = start / w.blockSize, lastBlock = (start + n - 1) / w.blockSize
        let absmax = try hostAbsmax(w, blocks: firstBlock, lastBlock - firstBlock + 1)
        // Decode from value (start − 2·byte0) of the downloaded bytes (0 or 1), scales shifted
        // so that block b of the matrix is absmax[b − firstBlock].
        var values = [Float](repeating: 0, count: n)
        let shift = start - 2 * byte0
        let rc = values.withUnsafeMutableBufferPointer { y in
            absmax.withUnsafeBufferPointer { a in
                // The downloaded bytes do not start on a block boundary: decode one block's
                // segment at a time, each as a single "block" with its own scale.
                var i = 0
                while i < n {
                    let b = (start + i) / w.blockSize
                    let stop = min(n, (b + 1) * w.blockSize - start)
                    let s = sft_nf4_dequantize(w.type.cType, packed, a.baseAddress! + (b - firstBlock), Int64(1) << 62,
                                               Int64(shift + i), Int64(stop - i), y.baseAddress! + i)
                    if s != 0 { return s }
                    i = stop
                }
                return 0
            }
        }
        if rc != 0 { throw KernelError.invalidArgument(op: "dequantize4bit", message: String(cString: sft_last_error())) }
        try values.withUnsafeBytes { try upload($0.baseAddress!, to: out, bytes: $0.count) }
    }

    public func matVec4bit(_ w: QuantizedMatrix, x: BufferView, y: BufferView, n: Int) throws {
        try linear4bitTiles(x: x, weight: w, hasBias: false, y: y, N: n)
    }

    public func packBlocks(_ type: GGMLType, rows: Int, cols: Int, bytes: UnsafeRawBufferPointer) throws -> PackedBlocks {
        throw KernelError.invalidArgument(op: "packBlocks", message: "GGUF packed weights are not supported on \(device) (supports(.ggufBlocks) is false; use the dequantized weights)")
    }

    public func packedMatVec(_ products: [PackedProduct], x: BufferView, epilogue: MatVecEpilogue,
                             activations: MatVecActivations) throws {
        throw KernelError.invalidArgument(op: "packedMatVec", message: "GGUF packed weights are not supported on \(device) (supports(.ggufBlocks) is false; use the dequantized weights)")
    }

    public func emptyCache() {}

    /// Throws unless rows [r0, r0 + rows) are inside W and `out` holds them as f32.
    func check4bitRows(_ w: QuantizedMatrix, _ r0: Int, _ rows: Int, out: BufferView, _ op: String) throws {
        guard r0 >= 0, rows >= 0, r0 + rows <= w.rows else {
            throw KernelError.invalidArgument(op: op, message: "rows \(r0)..<\(r0 + rows) of a \(w.rows)×\(w.cols) 4-bit matrix")
        }
        try check(out, count: rows * w.cols, op, "out")
    }

    /// The f32 absmax of blocks [first, first + n) on the host (downloaded; decoded from the
    /// 8-bit codes when double-quantized).
    func hostAbsmax(_ w: QuantizedMatrix, blocks first: Int, _ n: Int) throws -> [Float] {
        var out = [Float](repeating: 0, count: n)
        if n == 0 { return out }
        switch w.scales {
        case .absmax(let a):
            try out.withUnsafeMutableBytes { try download(a.advanced(byBytes: first * 4), to: $0.baseAddress!, bytes: n * 4) }
        case .doubleQuantized(let codes, let absmax2, let offset):
            let bs2 = QuantizedMatrix.doubleQuantBlockSize
            // Whole 256-code blocks around [first, first + n), decoded, then the range cut out.
            let b0 = first / bs2, b1 = (first + n - 1) / bs2
            let c0 = b0 * bs2, cn = min(w.blockCount, (b1 + 1) * bs2) - c0
            var q = [UInt8](repeating: 0, count: cn)
            try q.withUnsafeMutableBytes { try download(codes.advanced(byBytes: c0), to: $0.baseAddress!, bytes: cn) }
            var s = [Float](repeating: 0, count: b1 - b0 + 1)
            try s.withUnsafeMutableBytes { try download(absmax2.advanced(byBytes: b0 * 4), to: $0.baseAddress!, bytes: $0.count) }
            let all = try BlockwiseQuant.dequantizeBlockwise8(codes: q, absmax: s, blockSize: bs2, offset: offset)
            out = Array(all[(first - c0) ..< (first - c0 + n)])
        }
        return out
    }
}

import CSFTKernels
