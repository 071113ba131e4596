// 4-bit weights as QLoRA keeps the frozen base model (Dettmers et al. 2023): bitsandbytes' NF4 /
// FP4 blockwise format with one absmax per block, optionally double-quantized (the absmax
// values themselves stored as 8-bit codes, blocks of 256, plus an offset). Bit-compatible with
// bitsandbytes' quantize_4bit / dequantize_4bit; the C kernels and the exact rounding rules are
// in Sources/CSFTKernels/quant_nf4.c.
//
// `BlockwiseQuant` (SFTKernels, Blockwise4bit.swift) is the face of those kernels on host
// arrays; `QuantizedWeight` is one quantized matrix held in backend memory, and `matrix` the
// backend's weight form over it (`QuantizedMatrix`), which the backend's 4-bit ops read.

import Foundation
import SFTKernels

/// How to quantize the frozen base weights (`--quantize nf4|fp4 --double-quant --compute-dtype`).
public struct QuantizationConfig: Codable, Equatable, Sendable {
    /// The 4-bit code book: NF4 (QLoRA's default) or FP4 (`quant_type`, `--quantize`).
    public var type: QuantType
    /// Values per absmax block: a power of two from 32 to 4096 (bitsandbytes' range); 64 is
    /// the QLoRA setting.
    public var blockSize: Int
    /// Quantize the absmax values to 8 bits (blocks of 256) as well: saves ~0.37 bits per
    /// weight at block size 64.
    public var doubleQuant: Bool
    /// The dtype the dequantized tiles are multiplied in on GPU (bf16, f16 or f32). CPU
    /// backends always compute in f32.
    public var computeDType: DType

    /// - Parameters:
    ///   - type: NF4 or FP4.
    ///   - blockSize: Values per absmax block.
    ///   - doubleQuant: Whether to quantize the absmax values too.
    ///   - computeDType: The GPU compute dtype.
    public init(type: QuantType = .nf4, blockSize: Int = 64, doubleQuant: Bool = false, computeDType: DType = .f32) {
        self.type = type; self.blockSize = blockSize; self.doubleQuant = doubleQuant; self.computeDType = computeDType
    }

    enum CodingKeys: String, CodingKey {
        case type = "quant_type", blockSize = "block_size", doubleQuant = "double_quant", computeDType = "compute_dtype"
    }

    /// Throws `SFTError.config` naming the first invalid field.
    public func validate() throws {
        guard blockSize >= 32, blockSize <= 4096, blockSize & (blockSize - 1) == 0 else {
            throw SFTError.config(field: "block_size", message: "\(blockSize) is not a power of two from 32 to 4096")
        }
        guard [.f32, .bf16, .f16].contains(computeDType) else {
            throw SFTError.config(field: "compute_dtype", message: "\(computeDType) is not a compute dtype (bf16, f16, f32)")
        }
    }
}

/// One 4-bit matrix (out, in) in backend memory: packed codes and the block scales.
///
/// ```swift
/// let q = try QuantizedWeight(quantizing: w, shape: [out, inF], config: QuantizationConfig(), on: try backend(for: .cpu))
/// let approx = try q.dequantize()   // w to within half a code step per block
/// ```
public final class QuantizedWeight {
    /// The absmax values of a double-quantized weight: 8-bit codes into `code` (the dynamic
    /// map) with one f32 scale per 256 of them, plus `offset` (their mean before quantization).
    public struct DoubleQuantizedScales {
        /// Absmax codes per f32 scale (bitsandbytes' second-level block size).
        public static let blockSize = 256
        /// u8, one per 4-bit block: its absmax minus `offset`, as an index into `code` (scaled by
        /// the group's `absmax`).
        public let codes: Tensor
        /// f32, one scale per 256 codes.
        public let absmax: Tensor
        /// Added back to every decoded absmax (the mean the codes were centered on).
        public let offset: Float
        /// The 256 ascending values of bitsandbytes' dynamic 8-bit map (one shared array).
        public let code: [Float]
    }

    /// The per-block scales of the 4-bit codes.
    public enum Scales {
        /// f32, one absmax per block.
        case absmax(Tensor)
        /// The absmax values themselves quantized to 8 bits (QLoRA's double quantization).
        case doubleQuantized(DoubleQuantizedScales)
    }

    /// The 4-bit code book of `packed`.
    public let type: QuantType
    /// (out, in), as the f32 weight it replaces.
    public let shape: [Int]
    /// Values per absmax block.
    public let blockSize: Int
    /// The dtype GPU kernels multiply the dequantized tiles in.
    public let computeDType: DType
    /// u8, (count + 1) / 2 bytes; value 2i in the high nibble of byte i.
    public let packed: Tensor
    /// The absmax of every block, plain or double-quantized.
    public let scales: Scales

    /// Number of weight values: the product of `shape`.
    public var count: Int { shape.reduce(1, *) }
    /// Number of absmax blocks (the last may be partial).
    public var blockCount: Int { (count + blockSize - 1) / blockSize }
    /// The backend holding the codes.
    public var backend: Backend { packed.backend }
    /// Whether the scales are double-quantized.
    public var isDoubleQuantized: Bool { if case .doubleQuantized = scales { return true } else { return false } }

    /// Bytes held: packed codes plus scales (the 8-bit code table is shared by all weights).
    public var byteCount: Int {
        switch scales {
        case .absmax(let a): return packed.count + a.count * 4
        case .doubleQuantized(let d): return packed.count + d.codes.count + d.absmax.count * 4 + 4
        }
    }

    /// Wraps codes and scales quantized elsewhere, without checking them.
    /// - Parameters:
    ///   - type: The code book.
    ///   - shape: (out, in).
    ///   - blockSize: Values per block.
    ///   - computeDType: The GPU compute dtype.
    ///   - packed: u8 codes, two per byte.
    ///   - scales: The block scales.
    public init(type: QuantType, shape: [Int], blockSize: Int, computeDType: DType, packed: Tensor, scales: Scales) {
        self.type = type; self.shape = shape; self.blockSize = blockSize; self.computeDType = computeDType
        self.packed = packed; self.scales = scales
    }

    /// Quantizes f32 `values` (row-major for `shape`) with `config`. The offset of double
    /// quantization is the mean of the absmax values (computed in f64, so it may differ from
    /// bitsandbytes' f32 mean in the last bits; any offset decodes the same way).
    public convenience init(quantizing values: UnsafeBufferPointer<Float>, shape: [Int], config: QuantizationConfig,
                            on backend: Backend) throws {
        let (packed, scales) = try Self.quantize(values, shape: shape, config: config, on: backend)
        self.init(type: config.type, shape: shape, blockSize: config.blockSize, computeDType: config.computeDType,
                  packed: packed, scales: scales)
    }

    /// Quantizes f32 `values` (row-major for `shape`) with `config`; see the buffer-pointer overload.
    /// - Parameters:
    ///   - values: The weight, row-major.
    ///   - shape: (out, in).
    ///   - config: Code book, block size, double quantization and compute dtype.
    ///   - backend: Where the quantized weight lives.
    /// - Throws: When the config is invalid or the count does not match `shape`.
    public convenience init(quantizing values: [Float], shape: [Int], config: QuantizationConfig, on backend: Backend) throws {
        let (packed, scales) = try values.withUnsafeBufferPointer { try Self.quantize($0, shape: shape, config: config, on: backend) }
        self.init(type: config.type, shape: shape, blockSize: config.blockSize, computeDType: config.computeDType,
                  packed: packed, scales: scales)
    }

    private static func quantize(_ values: UnsafeBufferPointer<Float>, shape: [Int], config: QuantizationConfig,
                                 on backend: Backend) throws -> (Tensor, Scales) {
        try config.validate()
        guard shape.reduce(1, *) == values.count, !shape.isEmpty else {
            throw SFTError.shape(op: "QuantizedWeight", message: "\(values.count) values for shape \(shape)")
        }
        let (packedBytes, absmax) = try BlockwiseQuant.quantize4bit(values, type: config.type, blockSize: config.blockSize)
        let packed = try Tensor(bytes: packedBytes, on: backend)
        guard config.doubleQuant else { return (packed, .absmax(try Tensor(absmax, shape: [absmax.count], on: backend))) }
        let offset = Float(absmax.reduce(0.0) { $0 + Double($1) } / Double(max(1, absmax.count)))
        let (codes, absmax2) = try BlockwiseQuant.quantizeBlockwise8(absmax.map { $0 - offset },
                                                                       blockSize: DoubleQuantizedScales.blockSize)
        return (packed, .doubleQuantized(DoubleQuantizedScales(codes: try Tensor(bytes: codes, on: backend),
                                                               absmax: try Tensor(absmax2, shape: [absmax2.count], on: backend),
                                                               offset: offset, code: BlockwiseQuant.dynamicMap)))
    }

    /// The backend's 4-bit weight form over these tensors (views: this object keeps them alive).
    public var matrix: QuantizedMatrix {
        let s: QuantizedMatrix.Scales
        switch scales {
        case .absmax(let a): s = .absmax(a.storage)
        case .doubleQuantized(let d): s = .doubleQuantized(codes: d.codes.storage, absmax: d.absmax.storage, offset: d.offset)
        }
        return QuantizedMatrix(type: type, rows: shape[0], cols: shape.count == 2 ? shape[1] : count / max(1, shape[0]),
                               blockSize: blockSize, packed: packed.storage, scales: s, computeDType: computeDType)
    }

    /// The f32 absmax of every block (rebuilt from the 8-bit codes when double-quantized),
    /// downloaded to the host.
    public func absmaxValues() throws -> [Float] {
        switch scales {
        case .absmax(let a):
            return try a.floats()
        case .doubleQuantized(let d):
            var codes = [UInt8](repeating: 0, count: d.codes.count)
            try codes.withUnsafeMutableBytes { try d.codes.backend.download(d.codes.storage, to: $0.baseAddress!, bytes: $0.count) }
            return try BlockwiseQuant.dequantizeBlockwise8(codes: codes, absmax: try d.absmax.floats(),
                                                           blockSize: DoubleQuantizedScales.blockSize, offset: d.offset, code: d.code)
        }
    }

    /// The packed codes on the host.
    public func packedBytes() throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: packed.count)
        try out.withUnsafeMutableBytes { try backend.download(packed.storage, to: $0.baseAddress!, bytes: $0.count) }
        return out
    }

    /// All values as f32, row-major for `shape`.
    public func dequantize() throws -> [Float] {
        try BlockwiseQuant.dequantize4bit(packed: try packedBytes(), absmax: try absmaxValues(), count: count,
                                          type: type, blockSize: blockSize)
    }
}

extension Tensor {
    /// A new 1-D u8 tensor holding `bytes`.
    convenience init(bytes: [UInt8], on backend: Backend) throws {
        try self.init(empty: [bytes.count], dtype: .u8, on: backend)
        if !bytes.isEmpty {
            try bytes.withUnsafeBytes { try backend.upload($0.baseAddress!, to: storage, bytes: $0.count) }
        }
    }
}
