// bitsandbytes' 4-bit blockwise formats (NF4 / FP4, one absmax per block, optionally the
// absmax values double-quantized to 8 bits) on host arrays: the quantizers, the reference and
// vectorized dequantizers and the 8-bit blockwise code of double quantization. The C kernels
// and the exact rounding rules are in Sources/CSFTKernels/quant_nf4.c. The backends' 4-bit
// weight form (`QuantizedMatrix`, WeightForms.swift) holds what these produce in device memory.

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
        guard blockSize > 0 else { throw KernelError.invalidArgument(op: "quantize4bit", message: "block size \(blockSize)") }
        var packed = [UInt8](repeating: 0, count: (n + 1) / 2)
        var absmax = [Float](repeating: 0, count: (n + blockSize - 1) / blockSize)
        guard n > 0 else { return (packed, absmax) }
        let fast = !reference && blockSize % 2 == 0 && blockSize <= 4096
        let nparts = fast ? min(CPUBackend.shared.threads, max(1, n / (1 << 16)), absmax.count) : 1
        try packed.withUnsafeMutableBufferPointer { p in
            try absmax.withUnsafeMutableBufferPointer { a in
                let (pp, ap, x) = (p.baseAddress!, a.baseAddress!, values.baseAddress!)
                try CPUBackend.shared.runParts(nparts, op: "quantize4bit") { part, nparts in
                    fast ? sft_nf4_quantize(type.cType, x, Int64(n), Int64(blockSize), pp, ap, Int32(part), Int32(nparts))
                         : sft_nf4_quantize_ref(type.cType, x, Int64(n), Int64(blockSize), pp, ap)
                }
            }
        }
        return (packed, absmax)
    }

    /// Quantizes `values` to 4-bit codes in blocks (the array form of the buffer-pointer overload).
    /// - Parameters:
    ///   - values: The values, in order.
    ///   - type: NF4 or FP4.
    ///   - blockSize: Values per absmax block.
    ///   - reference: Whether to use the readable reference kernel instead of the vectorized one.
    /// - Returns: The codes, two per byte, and one absmax per block.
    /// - Throws: `KernelError.invalidArgument` for an invalid block size.
    public static func quantize4bit(_ values: [Float], type: QuantType, blockSize: Int,
                                    reference: Bool = false) throws -> (packed: [UInt8], absmax: [Float]) {
        try values.withUnsafeBufferPointer { try quantize4bit($0, type: type, blockSize: blockSize, reference: reference) }
    }

    /// Dequantizes all `count` values: the vectorized kernel, or the readable reference when
    /// `reference` is true (the two agree bit for bit).
    public static func dequantize4bit(packed: [UInt8], absmax: [Float], count: Int, type: QuantType, blockSize: Int,
                                      reference: Bool = false) throws -> [Float] {
        guard blockSize > 0, packed.count >= (count + 1) / 2, absmax.count >= (count + blockSize - 1) / blockSize else {
            throw KernelError.invalidArgument(op: "dequantize4bit", message: "\(packed.count) bytes and \(absmax.count) scales for \(count) values in blocks of \(blockSize)")
        }
        var out = [Float](repeating: 0, count: count)
        guard count > 0 else { return out }
        let rc = out.withUnsafeMutableBufferPointer { y in
            reference ? sft_nf4_dequantize_ref(type.cType, packed, absmax, Int64(count), Int64(blockSize), y.baseAddress)
                      : sft_nf4_dequantize(type.cType, packed, absmax, Int64(blockSize), 0, Int64(count), y.baseAddress)
        }
        if rc != 0 { throw KernelError.invalidArgument(op: "dequantize4bit", message: String(cString: sft_last_error())) }
        return out
    }

    /// Dequantizes values [start, start + count) of a tensor with the vectorized kernel
    /// (`packed` and `absmax` are the whole tensor's).
    public static func dequantizeRange(packed: [UInt8], absmax: [Float], start: Int, count: Int, type: QuantType,
                                       blockSize: Int) throws -> [Float] {
        guard blockSize > 0, start >= 0, count >= 0, packed.count >= (start + count + 1) / 2,
              absmax.count >= (start + count + blockSize - 1) / blockSize else {
            throw KernelError.invalidArgument(op: "dequantizeRange", message: "values \(start)..<\(start + count) of \(packed.count) bytes, \(absmax.count) scales")
        }
        var out = [Float](repeating: 0, count: count)
        guard count > 0 else { return out }
        let rc = absmax.withUnsafeBufferPointer { a in
            out.withUnsafeMutableBufferPointer { y in
                sft_nf4_dequantize(type.cType, packed, a.baseAddress! + start / blockSize, Int64(blockSize), Int64(start),
                                   Int64(count), y.baseAddress)
            }
        }
        if rc != 0 { throw KernelError.invalidArgument(op: "dequantizeRange", message: String(cString: sft_last_error())) }
        return out
    }

    /// y = W x for W (rows, cols) in 4 bits (the batch-1 decode kernel, single-threaded here).
    public static func matVec4bit(packed: [UInt8], absmax: [Float], x: [Float], rows: Int, cols: Int, type: QuantType,
                                  blockSize: Int) throws -> [Float] {
        guard blockSize > 0, x.count == cols, packed.count >= (rows * cols + 1) / 2,
              absmax.count >= (rows * cols + blockSize - 1) / blockSize else {
            throw KernelError.invalidArgument(op: "matVec4bit", message: "\(rows)×\(cols) matrix, x of \(x.count), \(packed.count) bytes, \(absmax.count) scales")
        }
        var y = [Float](repeating: 0, count: rows)
        let rc = y.withUnsafeMutableBufferPointer { yp in
            sft_nf4_matvec(type.cType, packed, absmax, Int64(blockSize), x, yp.baseAddress, Int64(rows), Int64(cols), 0, 1)
        }
        if rc != 0 { throw KernelError.invalidArgument(op: "matVec4bit", message: String(cString: sft_last_error())) }
        return y
    }

    /// bitsandbytes' reference 8-bit blockwise quantizer against an ascending 256-value code.
    public static func quantizeBlockwise8(_ values: [Float], blockSize: Int, code: [Float] = dynamicMap) throws -> (codes: [UInt8], absmax: [Float]) {
        guard code.count == 256, blockSize > 0 else {
            throw KernelError.invalidArgument(op: "quantizeBlockwise8", message: "code of \(code.count) values (256 needed), block size \(blockSize)")
        }
        var q = [UInt8](repeating: 0, count: values.count)
        var absmax = [Float](repeating: 0, count: (values.count + blockSize - 1) / blockSize)
        guard !values.isEmpty else { return (q, absmax) }
        let rc = q.withUnsafeMutableBufferPointer { qp in
            absmax.withUnsafeMutableBufferPointer { a in
                sft_quantize_blockwise8_ref(values, Int64(values.count), Int64(blockSize), code, qp.baseAddress, a.baseAddress)
            }
        }
        if rc != 0 { throw KernelError.invalidArgument(op: "quantizeBlockwise8", message: String(cString: sft_last_error())) }
        return (q, absmax)
    }

    /// code[q] · absmax[block] + offset for every value.
    public static func dequantizeBlockwise8(codes: [UInt8], absmax: [Float], blockSize: Int, offset: Float = 0,
                                            code: [Float] = dynamicMap) throws -> [Float] {
        guard code.count == 256, blockSize > 0, absmax.count >= (codes.count + blockSize - 1) / blockSize else {
            throw KernelError.invalidArgument(op: "dequantizeBlockwise8", message: "\(codes.count) codes, \(absmax.count) scales, block size \(blockSize)")
        }
        var out = [Float](repeating: 0, count: codes.count)
        out.withUnsafeMutableBufferPointer { y in
            sft_dequantize_blockwise8(codes, absmax, code, Int64(blockSize), offset, 0, Int64(codes.count), y.baseAddress)
        }
        return out
    }
}

