// The forms a weight matrix is stored in, owned by the backends (DESIGN.md, "one door"): a
// `Linear` holds dense f32 (a plain buffer), dense bf16 (mixed precision, DenseBF16.swift), a 4-bit `QuantizedMatrix` (bitsandbytes NF4/FP4
// with one absmax per block, optionally double-quantized), or GGUF blocks for packed decode
// (`PackedBlocks`). The ops that read them are Backend requirements (Backend.swift); a backend
// answers `supports(_:)` for each form. What a backend does not run natively:
//   - 4-bit: the protocol's default `dequantize4bit` is a CPU fallback with explicit transfers
//     (download the tile's bytes and scales, decode on the host, upload the f32 tile), so every
//     backend runs QLoRA; the CPU and CUDA backends decode on their own device.
//   - GGUF blocks: no fallback. `supports(.ggufBlocks)` is false and the model keeps using its
//     exact (dequantized) weights on that device; `packBlocks` / `packedMatVec` throw there.

/// A weight form, as asked of `Backend.supports(_:)`.
public enum WeightFormKind: String, Sendable, Hashable, CaseIterable {
    /// f32 values in a buffer: every backend.
    case dense
    /// bf16 values in a buffer, multiplied by `gemmBF16` (DenseBF16.swift).
    case denseBF16
    /// `QuantizedMatrix`: 4-bit codes + absmax (or double-quantized absmax).
    case blockwise4bit
    /// `PackedBlocks`: GGUF quantized blocks read by the batch-1 decode matvec.
    case ggufBlocks
}

/// One 4-bit matrix (rows, cols), row-major, in a backend's memory: packed codes ((count+1)/2
/// bytes, value 2i in the high nibble of byte i) and the scales of its blocks of `blockSize`
/// values. Views into buffers the caller owns (SFTCore's QuantizedWeight keeps them alive).
public struct QuantizedMatrix: @unchecked Sendable {
    /// How the block scales are stored.
    public enum Scales {
        /// f32, one per block.
        case absmax(BufferView)
        /// 8-bit codes (one per block) into bitsandbytes' signed dynamic map, one f32 scale per
        /// `QuantizedMatrix.doubleQuantBlockSize` codes, plus `offset`:
        /// absmax[b] = dynamicMap[codes[b]] · absmax2[b / 256] + offset (two roundings).
        case doubleQuantized(codes: BufferView, absmax: BufferView, offset: Float)
    }

    /// Codes per f32 scale of double quantization.
    public static let doubleQuantBlockSize = 256

    /// The 4-bit code book (NF4 or FP4).
    public let type: QuantType
    /// Output features (the matrix's rows).
    public let rows: Int
    /// Input features (the matrix's columns).
    public let cols: Int
    /// Values per absmax block (a power of two, 32…4096).
    public let blockSize: Int
    /// The codes, two per byte, (count + 1) / 2 bytes.
    public let packed: BufferView
    /// The block scales, plain or double-quantized.
    public let scales: Scales
    /// What decoded tiles are multiplied in: f32, or bf16 / f16 (x and the tile rounded to
    /// it, f32 accumulation and output) where the backend implements that (CUDA: both; the
    /// CPU: bf16 through its bf16 GEMM, f16 computed in f32).
    public let computeDType: DType

    /// Views over buffers the caller keeps alive; checked when an op uses them.
    /// - Parameters:
    ///   - type: NF4 or FP4.
    ///   - rows: Output features.
    ///   - cols: Input features.
    ///   - blockSize: Values per absmax block.
    ///   - packed: The codes.
    ///   - scales: The block scales.
    ///   - computeDType: What decoded tiles are multiplied in (default f32).
    public init(type: QuantType, rows: Int, cols: Int, blockSize: Int, packed: BufferView, scales: Scales,
                computeDType: DType = .f32) {
        self.type = type; self.rows = rows; self.cols = cols; self.blockSize = blockSize
        self.packed = packed; self.scales = scales; self.computeDType = computeDType
    }

    /// Number of values, rows · cols.
    public var count: Int { rows * cols }
    /// Number of absmax blocks (the last may be partial).
    public var blockCount: Int { (count + blockSize - 1) / max(1, blockSize) }
    /// The device the codes are on.
    public var device: Device { packed.buffer.device }

    /// Throws unless every buffer is on `backend`'s device and large enough.
    func check(on backend: Backend, _ op: String) throws {
        guard rows >= 0, cols >= 0, blockSize > 0 else {
            throw KernelError.invalidArgument(op: op, message: "4-bit matrix \(rows)×\(cols), block size \(blockSize)")
        }
        try backend.check(packed, bytes: (count + 1) / 2, op, "packed codes")
        switch scales {
        case .absmax(let a):
            try backend.check(a, count: blockCount, op, "absmax")
        case .doubleQuantized(let codes, let a, _):
            try backend.check(codes, bytes: blockCount, op, "absmax codes")
            try backend.check(a, count: (blockCount + Self.doubleQuantBlockSize - 1) / Self.doubleQuantBlockSize, op,
                              "double-quantization scales")
        }
    }
}

/// A weight matrix (rows, cols) in a GGML block format, laid out by the backend that made it
/// (`Backend.packBlocks`) for its matrix-vector kernel: GGML rows, or for Q4_0 / Q4_1 / Q8_0 on
/// the CPU the interleaved layout its integer kernels read fastest (`interleaveForMatVec`).
public final class PackedBlocks: @unchecked Sendable {
    /// The GGML block format.
    public let type: GGMLType
    /// Output features.
    public let rows: Int
    /// Input features (a multiple of the format's block size).
    public let cols: Int
    /// The blocks in the backend's memory.
    public let buffer: Buffer
    /// Whether `buffer` holds the interleaved layout.
    public let interleaved: Bool

    /// Wraps blocks a backend laid out (`Backend.packBlocks` makes these).
    /// - Parameters:
    ///   - type: The block format.
    ///   - rows: Output features.
    ///   - cols: Input features.
    ///   - buffer: The blocks in the backend's memory.
    ///   - interleaved: Whether they are in the interleaved layout.
    public init(type: GGMLType, rows: Int, cols: Int, buffer: Buffer, interleaved: Bool) {
        self.type = type; self.rows = rows; self.cols = cols; self.buffer = buffer; self.interleaved = interleaved
    }

    /// The device holding the blocks.
    public var device: Device { buffer.device }
}

/// One matrix of `Backend.packedMatVec` and the f32 output y (rows) it writes (nil: the second
/// matrix of a SwiGLU pair, whose product is not stored).
public struct PackedProduct {
    /// The matrix.
    public var blocks: PackedBlocks
    /// Where its product goes (f32, rows values); nil for the up matrix of a SwiGLU pair.
    public var y: BufferView?

    /// - Parameters:
    ///   - blocks: The matrix.
    ///   - y: Its output, or nil.
    public init(_ blocks: PackedBlocks, y: BufferView?) {
        self.blocks = blocks; self.y = y
    }
}
