// 4-bit weights as QLoRA keeps the frozen base model (Dettmers et al. 2023): bitsandbytes' NF4 /
// FP4 blockwise format with one absmax per block, optionally double-quantized (the absmax
// values themselves stored as 8-bit codes, blocks of 256, plus an offset). Bit-compatible with
// bitsandbytes' quantize_4bit / dequantize_4bit; the C kernels and the exact rounding rules are
// in Sources/CSFTKernels/quant_nf4.c.
//
// `BlockwiseQuant` is the thin Swift face of those kernels on host arrays (what the tests and
// the quantizers call); `QuantizedWeight` is one quantized matrix held in backend memory.

import CSFTKernels
import Foundation

/// The 4-bit data types of bitsandbytes.
public enum QuantType: String, Codable, Sendable, CaseIterable {
    /// NormalFloat4: quantiles of a normal distribution, the QLoRA default.
    case nf4
    /// bitsandbytes' 4-bit float (1 sign, 2 exponent, 1 mantissa bits).
    case fp4

    var cType: Int32 { self == .nf4 ? Int32(SFT_Q4_NF4) : Int32(SFT_Q4_FP4) }
}

/// How to quantize the frozen base weights (`--quantize nf4|fp4 --double-quant --compute-dtype`).
public struct QuantizationConfig: Codable, Equatable, Sendable {
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

/// The C kernels on host arrays. `count` is the number of values of the (flattened) tensor.
public enum BlockwiseQuant {
    /// The 16 values of a 4-bit type, indexed by code.
    public static func codeValues(_ type: QuantType) -> [Float] {
        let p = sft_q4_code(type.cType)!
        return (0..<16).map { p[$0] }
    }

    /// bitsandbytes' signed 8-bit dynamic map (`create_dynamic_map(signed=True)`), 256 ascending values.
    public static let dynamicMap: [Float] = {
        var code = [Float](repeating: 0, count: 256)
        sft_dynamic_map_signed(&code)
        return code
    }()

    /// 4-bit quantizer: packed codes ((count+1)/2 bytes, first value in the high nibble) and
    /// one absmax per block. The vectorized kernel runs on every core; `reference` runs the
    /// readable one instead (the two agree bit for bit).
    public static func quantize4bit(_ values: UnsafeBufferPointer<Float>, type: QuantType, blockSize: Int,
                                    reference: Bool = false) throws -> (packed: [UInt8], absmax: [Float]) {
        let n = values.count
        guard blockSize > 0 else { throw SFTError.shape(op: "quantize4bit", message: "block size \(blockSize)") }
        var packed = [UInt8](repeating: 0, count: (n + 1) / 2)
        var absmax = [Float](repeating: 0, count: (n + blockSize - 1) / blockSize)
        guard n > 0 else { return (packed, absmax) }
        let fast = !reference && blockSize % 2 == 0 && blockSize <= 4096
        let nparts = fast ? min(QuantizedTiles.threads, max(1, n / (1 << 16)), absmax.count) : 1
        try packed.withUnsafeMutableBufferPointer { p in
            try absmax.withUnsafeMutableBufferPointer { a in
                let (pp, ap, x) = (p.baseAddress!, a.baseAddress!, values.baseAddress!)
                try QuantizedTiles.parallel(nparts, op: "quantize4bit") { part in
                    fast ? sft_nf4_quantize(type.cType, x, Int64(n), Int64(blockSize), pp, ap, Int32(part), Int32(nparts))
                         : sft_nf4_quantize_ref(type.cType, x, Int64(n), Int64(blockSize), pp, ap)
                }
            }
        }
        return (packed, absmax)
    }

    public static func quantize4bit(_ values: [Float], type: QuantType, blockSize: Int,
                                    reference: Bool = false) throws -> (packed: [UInt8], absmax: [Float]) {
        try values.withUnsafeBufferPointer { try quantize4bit($0, type: type, blockSize: blockSize, reference: reference) }
    }

    /// Dequantizes all `count` values: the vectorized kernel, or the readable reference when
    /// `reference` is true (the two agree bit for bit).
    public static func dequantize4bit(packed: [UInt8], absmax: [Float], count: Int, type: QuantType, blockSize: Int,
                                      reference: Bool = false) throws -> [Float] {
        guard blockSize > 0, packed.count >= (count + 1) / 2, absmax.count >= (count + blockSize - 1) / blockSize else {
            throw SFTError.shape(op: "dequantize4bit", message: "\(packed.count) bytes and \(absmax.count) scales for \(count) values in blocks of \(blockSize)")
        }
        var out = [Float](repeating: 0, count: count)
        guard count > 0 else { return out }
        let rc = out.withUnsafeMutableBufferPointer { y in
            reference ? sft_nf4_dequantize_ref(type.cType, packed, absmax, Int64(count), Int64(blockSize), y.baseAddress)
                      : sft_nf4_dequantize(type.cType, packed, absmax, Int64(blockSize), 0, Int64(count), y.baseAddress)
        }
        if rc != 0 { throw SFTError.shape(op: "dequantize4bit", message: String(cString: sft_last_error())) }
        return out
    }

    /// Dequantizes values [start, start + count) of a tensor with the vectorized kernel
    /// (`packed` and `absmax` are the whole tensor's).
    public static func dequantizeRange(packed: [UInt8], absmax: [Float], start: Int, count: Int, type: QuantType,
                                       blockSize: Int) throws -> [Float] {
        guard blockSize > 0, start >= 0, count >= 0, packed.count >= (start + count + 1) / 2,
              absmax.count >= (start + count + blockSize - 1) / blockSize else {
            throw SFTError.shape(op: "dequantizeRange", message: "values \(start)..<\(start + count) of \(packed.count) bytes, \(absmax.count) scales")
        }
        var out = [Float](repeating: 0, count: count)
        guard count > 0 else { return out }
        let rc = absmax.withUnsafeBufferPointer { a in
            out.withUnsafeMutableBufferPointer { y in
                sft_nf4_dequantize(type.cType, packed, a.baseAddress! + start / blockSize, Int64(blockSize), Int64(start),
                                   Int64(count), y.baseAddress)
            }
        }
        if rc != 0 { throw SFTError.shape(op: "dequantizeRange", message: String(cString: sft_last_error())) }
        return out
    }

    /// y = W x for W (rows, cols) in 4 bits (the batch-1 decode kernel, single-threaded here).
    public static func matVec4bit(packed: [UInt8], absmax: [Float], x: [Float], rows: Int, cols: Int, type: QuantType,
                                  blockSize: Int) throws -> [Float] {
        guard blockSize > 0, x.count == cols, packed.count >= (rows * cols + 1) / 2,
              absmax.count >= (rows * cols + blockSize - 1) / blockSize else {
            throw SFTError.shape(op: "matVec4bit", message: "\(rows)×\(cols) matrix, x of \(x.count), \(packed.count) bytes, \(absmax.count) scales")
        }
        var y = [Float](repeating: 0, count: rows)
        let rc = y.withUnsafeMutableBufferPointer { yp in
            sft_nf4_matvec(type.cType, packed, absmax, Int64(blockSize), x, yp.baseAddress, Int64(rows), Int64(cols), 0, 1)
        }
        if rc != 0 { throw SFTError.shape(op: "matVec4bit", message: String(cString: sft_last_error())) }
        return y
    }

    /// bitsandbytes' reference 8-bit blockwise quantizer against an ascending 256-value code.
    public static func quantizeBlockwise8(_ values: [Float], blockSize: Int, code: [Float] = dynamicMap) throws -> (codes: [UInt8], absmax: [Float]) {
        guard code.count == 256, blockSize > 0 else {
            throw SFTError.shape(op: "quantizeBlockwise8", message: "code of \(code.count) values (256 needed), block size \(blockSize)")
        }
        var q = [UInt8](repeating: 0, count: values.count)
        var absmax = [Float](repeating: 0, count: (values.count + blockSize - 1) / blockSize)
        guard !values.isEmpty else { return (q, absmax) }
        let rc = q.withUnsafeMutableBufferPointer { qp in
            absmax.withUnsafeMutableBufferPointer { a in
                sft_quantize_blockwise8_ref(values, Int64(values.count), Int64(blockSize), code, qp.baseAddress, a.baseAddress)
            }
        }
        if rc != 0 { throw SFTError.shape(op: "quantizeBlockwise8", message: String(cString: sft_last_error())) }
        return (q, absmax)
    }

    /// code[q] · absmax[block] + offset for every value.
    public static func dequantizeBlockwise8(codes: [UInt8], absmax: [Float], blockSize: Int, offset: Float = 0,
                                            code: [Float] = dynamicMap) throws -> [Float] {
        guard code.count == 256, blockSize > 0, absmax.count >= (codes.count + blockSize - 1) / blockSize else {
            throw SFTError.shape(op: "dequantizeBlockwise8", message: "\(codes.count) codes, \(absmax.count) scales, block size \(blockSize)")
        }
        var out = [Float](repeating: 0, count: codes.count)
        out.withUnsafeMutableBufferPointer { y in
            sft_dequantize_blockwise8(codes, absmax, code, Int64(blockSize), offset, 0, Int64(codes.count), y.baseAddress)
        }
        return out
    }
}

/// One 4-bit matrix (out, in) in backend memory: packed codes and the block scales.
///
/// ```swift
/// let q = try QuantizedWeight(quantizing: w, shape: [out, inF], config: QuantizationConfig(), on: CPUBackend.shared)
/// let approx = try q.dequantize()   // w to within half a code step per block
/// ```
public final class QuantizedWeight {
    /// The absmax values of a double-quantized weight: 8-bit codes into `code` (the dynamic
    /// map) with one f32 scale per 256 of them, plus `offset` (their mean before quantization).
    public struct DoubleQuantizedScales {
        public static let blockSize = 256
        public let codes: Tensor      // u8, one per 4-bit block
        public let absmax: Tensor     // f32, one per 256 codes
        public let offset: Float
        public let code: [Float]      // 256 ascending values (one shared array)
    }

    public enum Scales {
        case absmax(Tensor)                      // f32, one per block
        case doubleQuantized(DoubleQuantizedScales)
    }

    public let type: QuantType
    /// (out, in), as the f32 weight it replaces.
    public let shape: [Int]
    public let blockSize: Int
    public let computeDType: DType
    /// u8, (count + 1) / 2 bytes; value 2i in the high nibble of byte i.
    public let packed: Tensor
    public let scales: Scales

    public var count: Int { shape.reduce(1, *) }
    public var blockCount: Int { (count + blockSize - 1) / blockSize }
    public var backend: Backend { packed.backend }
    public var isDoubleQuantized: Bool { if case .doubleQuantized = scales { return true } else { return false } }

    /// Bytes held: packed codes plus scales (the 8-bit code table is shared by all weights).
    public var byteCount: Int {
        switch scales {
        case .absmax(let a): return packed.count + a.count * 4
        case .doubleQuantized(let d): return packed.count + d.codes.count + d.absmax.count * 4 + 4
        }
    }

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

    /// The f32 absmax of blocks [first, first + n) into `out` (host memory).
    func absmax(blocks first: Int, _ n: Int, into out: UnsafeMutablePointer<Float>) throws {
        switch scales {
        case .absmax(let a):
            try a.backend.download(a.storage.advanced(byBytes: first * 4), to: out, bytes: n * 4)
        case .doubleQuantized(let d):
            guard d.codes.device == .cpu else { throw SFTError.unsupported("double-quantized 4-bit weights on \(d.codes.device)") }
            sft_dequantize_blockwise8(d.codes.storage.u8(), d.absmax.storage.f32(), d.code, Int64(DoubleQuantizedScales.blockSize),
                                      d.offset, Int64(first), Int64(n), out)
        }
    }

    /// The f32 absmax of every block (rebuilt from the 8-bit codes when double-quantized).
    public func absmaxValues() throws -> [Float] {
        try [Float](unsafeUninitializedCapacity: blockCount) { buf, n in
            if let p = buf.baseAddress { try absmax(blocks: 0, blockCount, into: p) }
            n = blockCount
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
