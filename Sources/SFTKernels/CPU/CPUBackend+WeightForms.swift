// The CPU backend's weight-form ops: 4-bit tiles and matrix-vector products through the
// vectorized kernels of quant_nf4.c, and GGUF packed decode through quant_dot.c, split over the
// backend's thread pool. Each part's result does not depend on the number of parts, so the
// output is the same for every thread count. Readable references: sft_nf4_dequantize_ref
// (quant_nf4.c) and the reference dot products of quant_dot.c.

import CSFTKernels
import Foundation

extension CPUBackend {
    public func supports(_ form: WeightFormKind) -> Bool { true }

    public func dequantize4bit(_ w: QuantizedMatrix, rows r0: Int, count rows: Int, into out: BufferView) throws {
        try w.check(on: self, "dequantize4bit")
        try check4bitRows(w, r0, rows, out: out, "dequantize4bit")
        let bs = w.blockSize, start = r0 * w.cols, count = rows * w.cols
        if count == 0 { return }
        let firstBlock = start / bs, lastBlock = (start + count - 1) / bs
        let packed = w.packed.u8(), y = out.f32(), type = w.type.cType
        let nparts = min(threads, max(1, count / (1 << 15)))
        // The scales of the tile's blocks: a view into absmax, or rebuilt from 8-bit codes.
        try withScales(w, blocks: firstBlock, lastBlock - firstBlock + 1) { absmax in
            try runParts(nparts, op: "dequantize4bit") { p, np in
                // Part boundaries on multiples of 32 values keep the vector loops whole.
                let lo = count * p / np / 32 * 32, hi = p == np - 1 ? count : count * (p + 1) / np / 32 * 32
                guard hi > lo else { return 0 }
                let s = start + lo
                return sft_nf4_dequantize(type, packed, absmax + (s / bs - firstBlock), Int64(bs), Int64(s), Int64(hi - lo), y + lo)
            }
        }
    }

    public func matVec4bit(_ w: QuantizedMatrix, x: BufferView, y: BufferView, n: Int) throws {
        let M = w.rows, K = w.cols
        try w.check(on: self, "matVec4bit")
        try check(x, count: n * K, "matVec4bit", "x")
        try check(y, count: n * M, "matVec4bit", "y")
        let packed = w.packed.u8(), type = w.type.cType
        let nparts = min(threads, M, max(1, M * K / (1 << 16)))
        try withScales(w, blocks: 0, w.blockCount) { scales in
            for r in 0..<n {
                let xr = x.f32() + r * K, yr = y.f32() + r * M
                try runParts(nparts, op: "matVec4bit") { p, np in
                    sft_nf4_matvec(type, packed, scales, Int64(w.blockSize), xr, yr, Int64(M), Int64(K), Int32(p), Int32(np))
                }
            }
        }
    }

    public func packBlocks(_ type: GGMLType, rows: Int, cols: Int, bytes: UnsafeRawBufferPointer) throws -> PackedBlocks {
        guard let bs = type.blockSize, let ts = type.typeSize, cols % bs == 0, bytes.count >= rows * cols / bs * ts else {
            throw KernelError.invalidArgument(op: "packBlocks(\(type))", message: "\(bytes.count) bytes do not hold \(rows) x \(cols) values")
        }
        let laidOut = try interleaveForMatVec(type, bytes, rows: rows, cols: cols)
        let size = rows * cols / bs * ts
        let buffer = try allocate(bytes: max(1, size))
        if let laidOut {
            try laidOut.withUnsafeBytes { try upload($0.baseAddress!, to: BufferView(buffer), bytes: size) }
        } else if size > 0 {
            try upload(bytes.baseAddress!, to: BufferView(buffer), bytes: size)
        }
        return PackedBlocks(type: type, rows: rows, cols: cols, buffer: buffer, interleaved: laidOut != nil)
    }

    public func packedMatVec(_ products: [PackedProduct], x: BufferView, epilogue: MatVecEpilogue,
                             activations: MatVecActivations) throws {
        guard let cols = products.first?.blocks.cols else { return }
        guard products.allSatisfy({ $0.blocks.cols == cols }) else {
            throw KernelError.invalidArgument(op: "packedMatVec", message: "matrices of \(products.map { $0.blocks.cols }) columns share one x")
        }
        try check(x, count: cols, "packedMatVec", "x")
        for p in products {
            guard p.blocks.device == device else {
                throw KernelError.invalidArgument(op: "packedMatVec", message: "packed \(p.blocks.type) weights are on \(p.blocks.device)")
            }
            if let y = p.y { try check(y, count: p.blocks.rows, "packedMatVec", "y") }
        }
        try quantizedMatVecs(products.map {
            QuantizedMatVecOutput($0.blocks.type, weights: UnsafeRawPointer($0.blocks.buffer.address), rows: $0.blocks.rows,
                                  y: $0.y?.f32(), interleaved: $0.blocks.interleaved)
        }, x: x.f32(), cols: cols, epilogue: epilogue, activations: activations, threads: threads)
    }

    /// Calls body with the f32 absmax of blocks [first, first + n): a view into the absmax
    /// buffer, or rebuilt from the 8-bit codes of a double-quantized matrix.
    private func withScales<R>(_ w: QuantizedMatrix, blocks first: Int, _ n: Int,
                               _ body: (UnsafePointer<Float>) throws -> R) throws -> R {
        switch w.scales {
        case .absmax(let a):
            return try body(UnsafePointer(a.f32() + first))
        case .doubleQuantized(let codes, let absmax2, let offset):
            var out = [Float](repeating: 0, count: max(1, n))
            out.withUnsafeMutableBufferPointer { o in
                BlockwiseQuant.dynamicMap.withUnsafeBufferPointer { code in
                    sft_dequantize_blockwise8(codes.u8(), absmax2.f32(), code.baseAddress, Int64(QuantizedMatrix.doubleQuantBlockSize),
                                              offset, Int64(first), Int64(n), o.baseAddress)
                }
            }
            return try out.withUnsafeBufferPointer { try body($0.baseAddress!) }
        }
    }

    /// Runs body(part, nparts) for every part on the pool; throws the C message of a failing part.
    func runParts(_ nparts: Int, op: String, _ body: (Int, Int) -> Int32) throws {
        let failure = NSLock()
        var message: String?
        parallel(nparts) { p, np in
            if body(Int(p), Int(np)) != 0 {
                // The message is thread-local in C: read it on the failing thread.
                let m = String(cString: sft_last_error())
                failure.lock(); if message == nil { message = m }; failure.unlock()
            }
        }
        if let message { throw KernelError.invalidArgument(op: op, message: message) }
    }
}
