// Host entry points to the GGML block kernels in CSFTKernels (they run on host arrays, the CPU
// backend's packed decode calls them, and the GGUF/safetensors readers decode blocks with
// them): matrix-vector products on quantized weights without dequantizing them first (generation reads each weight once per
// token, so decoding blocks on the fly beats holding f32 copies), and dequantization of raw
// blocks. Products run on the shim's thread pool in one C call each (quant_dot.c): with
// quantized activations, x is quantized once per call and the row pieces use integer dot
// products.
import CSFTKernels
import Foundation

/// Instruction sets of the quantized kernels; `.auto` picks the best this CPU has.
public enum QuantKernelISA: Int32, Sendable, CaseIterable {
    /// `avx512vnni`: AVX-512 F/BW/VL with VNNI; the integer-activation kernels use vpdpbusd
    /// and vpdpwssd (plain AVX-512 runs them on AVX2 instructions).
    case auto = 0, generic = 1, avx2 = 2, avx512 = 3, avx512vnni = 4

    /// The best instruction set available on this CPU.
    public static var best: QuantKernelISA { QuantKernelISA(rawValue: sft_quant_isa_level()) ?? .generic }
}

/// How a quantized matrix-vector product reads x.
public enum MatVecActivations: Sendable {
    /// x stays f32 and weight blocks are decoded to f32: the dequantized product up to
    /// summation order.
    case f32
    /// x is quantized once per product to integer blocks of 32 and each block pair is an
    /// integer dot product, as llama.cpp does: 8-bit x (scale max|x|/127) for Q4_0, Q4_1,
    /// Q5_0 and Q5_1 weights, 16-bit x (max|x|/32767) for Q8_0 weights, where it costs the
    /// same; other types use f32. Faster; x is rounded by at most half a step per value.
    case quantized
}

/// What a product does with W x.
public enum MatVecEpilogue: Sendable {
    /// y = W x
    case store
    /// y += W x (a residual add fused into the product)
    case accumulate
    /// Two matrices of equal rows, gate then up: y₀ = silu(W₀ x) ⊙ (W₁ x); the second output's
    /// y is not written.
    case swiglu
}

/// One matrix of `quantizedMatVecs`: W (rows, x's cols) in GGML type `type`, rows contiguous
/// (or `interleaved`, see `interleaveForMatVec`), and its output y (rows).
public struct QuantizedMatVecOutput {
    /// The block format of `weights`.
    public var type: GGMLType
    /// The GGML blocks of W, row after row (or interleaved).
    public var weights: UnsafeRawPointer
    /// Output length: W's rows.
    public var rows: Int
    /// Where the rows' products go (f32, `rows` values).
    public var y: UnsafeMutablePointer<Float>?
    /// Whether `weights` is in the 8-row interleaved layout of `interleaveForMatVec`.
    public var interleaved: Bool

    /// - Parameters:
    ///   - type: The block format.
    ///   - weights: The blocks.
    ///   - rows: W's rows.
    ///   - y: The output.
    ///   - interleaved: Whether the blocks are interleaved.
    public init(_ type: GGMLType, weights: UnsafeRawPointer, rows: Int, y: UnsafeMutablePointer<Float>?, interleaved: Bool = false) {
        self.type = type; self.weights = weights; self.rows = rows; self.y = y; self.interleaved = interleaved
    }
}

/// The blocks of W (rows, cols) rearranged for the integer kernels (Q4_0, Q4_1 and Q8_0; nil
/// for other types): rows in groups of 8, each block column holding the 8 rows' scales and
/// then their codes so that one vector load gives a few codes of every row. Those kernels read
/// it 2-4 times faster than GGML's row layout. Same size; the last rows % 8 rows stay as they
/// are.
public func interleaveForMatVec(_ type: GGMLType, _ bytes: UnsafeRawBufferPointer, rows: Int, cols: Int) throws -> [UInt8]? {
    let t = Int32(bitPattern: type.rawValue)
    guard sft_qx_can_interleave(t) != 0 else { return nil }
    guard let bs = type.blockSize, let ts = type.typeSize, cols % bs == 0, bytes.count >= rows * cols / bs * ts,
          let src = bytes.baseAddress else {
        throw KernelError.invalidArgument(op: "interleaveForMatVec(\(type))", message: "\(bytes.count) bytes do not hold \(rows) x \(cols) values")
    }
    let count = rows * cols / bs * ts
    return try [UInt8](unsafeUninitializedCapacity: count) { dst, n in
        guard sft_qx_interleave(t, src, Int64(rows), Int64(cols), dst.baseAddress) == 0 else {
            throw KernelError.invalidArgument(op: "interleaveForMatVec(\(type))", message: String(cString: sft_last_error()))
        }
        n = count
    }
}

/// y_k = W_k x for one to four matrices sharing x (cols), in one call: x is quantized once
/// (with `.quantized`), and the rows of all matrices are split into pieces on the CPU backend's
/// thread pool (`threads`, default the backend's). Each row is computed whole by one thread, so
/// the result does not depend on the thread count. `isa` forces a kernel variant (tests).
///
/// ```swift
/// // q, k, v of one token from the same normalized hidden state
/// try quantizedMatVecs([.init(.q4_1, weights: wq, rows: 576, y: q), .init(.q4_1, weights: wk, rows: 192, y: k),
///                       .init(.q4_1, weights: wv, rows: 192, y: v)], x: h, cols: 576)
/// ```
public func quantizedMatVecs(_ outputs: [QuantizedMatVecOutput], x: UnsafePointer<Float>, cols: Int,
                             epilogue: MatVecEpilogue = .store, activations: MatVecActivations = .quantized,
                             isa: QuantKernelISA = .auto, threads: Int? = nil) throws {
    let mode: Int32
    switch epilogue {
    case .store: mode = Int32(SFT_QMV_STORE)
    case .accumulate: mode = Int32(SFT_QMV_ACCUMULATE)
    case .swiglu: mode = Int32(SFT_QMV_SWIGLU)
    }
    let nthreads = Int32(max(1, threads ?? CPUBackend.shared.threads))
    let outs = outputs.map {
        sft_qmv_out(type: Int32(bitPattern: $0.type.rawValue), w: $0.weights, rows: Int64($0.rows), y: $0.y, interleaved: $0.interleaved ? 1 : 0)
    }
    let status = outs.withUnsafeBufferPointer {
        sft_qmatvec(isa.rawValue, activations == .quantized ? 1 : 0, $0.baseAddress, Int32($0.count), x, Int64(cols), mode, nthreads)
    }
    guard status == 0 else {
        throw KernelError.invalidArgument(op: "quantizedMatVecs(\(outputs.map { "\($0.type)" }.joined(separator: ", ")))",
                             message: String(cString: sft_last_error()))
    }
}

/// y = W x for W (rows, cols) stored row-major in GGML type `type` (cols a multiple of the
/// block size), x (cols), y (rows). x stays f32 unless `activations` is `.quantized` (see
/// `quantizedMatVecs`, which this calls); `threads` defaults to the backend's for large
/// matrices and 1 for small ones. `isa` forces a kernel variant (tests compare them).
public func quantizedMatVec(_ type: GGMLType, weights: UnsafeRawPointer, x: UnsafePointer<Float>,
                            y: UnsafeMutablePointer<Float>, rows: Int, cols: Int,
                            activations: MatVecActivations = .f32, isa: QuantKernelISA = .auto,
                            threads: Int? = nil) throws {
    let t = threads ?? (rows * cols >= 1 << 16 ? CPUBackend.shared.threads : 1)
    try quantizedMatVecs([QuantizedMatVecOutput(type, weights: weights, rows: rows, y: y)], x: x, cols: cols,
                         activations: activations, isa: isa, threads: t)
}

/// Activation blocks of x (a multiple of 32 values) as the integer products make them: per
/// block of 32, the scale d = max|x|/127 (`bits` 8) or max|x|/32767 (`bits` 16), the codes
/// x/d rounded half to even, and for 8 bits s = d · Σ codes (empty for 16). `isa` picks
/// the quantizer variant (all give the same bits).
public func quantizeActivations(_ x: [Float], bits: Int = 8, isa: QuantKernelISA = .auto) throws
    -> (d: [Float], s: [Float], codes: [Int32]) {
    guard x.count % 32 == 0, bits == 8 || bits == 16 else {
        throw KernelError.invalidArgument(op: "quantizeActivations", message: "\(x.count) values in \(bits)-bit blocks: need a multiple of 32 and 8 or 16 bits")
    }
    let nb = x.count / 32
    if bits == 8 {
        var blocks = [sft_q8x_block](repeating: sft_q8x_block(), count: nb)
        guard sft_qx_quantize(isa.rawValue, 8, x, Int64(x.count), &blocks) == 0 else { throw KernelError.invalidArgument(op: "quantizeActivations", message: String(cString: sft_last_error())) }
        let codes = blocks.flatMap { b in withUnsafeBytes(of: b.qs) { $0.bindMemory(to: Int8.self).map(Int32.init) } }
        return (blocks.map(\.d), blocks.map(\.s), codes)
    }
    var blocks = [sft_q16x_block](repeating: sft_q16x_block(), count: nb)
    guard sft_qx_quantize(isa.rawValue, 16, x, Int64(x.count), &blocks) == 0 else { throw KernelError.invalidArgument(op: "quantizeActivations", message: String(cString: sft_last_error())) }
    let codes = blocks.flatMap { b in withUnsafeBytes(of: b.qs) { $0.bindMemory(to: Int16.self).map(Int32.init) } }
    return (blocks.map(\.d), [], codes)
}

/// Decodes `count` values of GGML type `type` from raw blocks.
public func dequantizeBlocks(_ type: GGMLType, _ bytes: UnsafeRawBufferPointer, count: Int) throws -> [Float] {
    guard let bs = type.blockSize, let ts = type.typeSize, count % bs == 0, bytes.count >= count / bs * ts else {
        throw KernelError.invalidArgument(op: "dequantizeBlocks(\(type))", message: "\(bytes.count) bytes do not hold \(count) values")
    }
    return try [Float](unsafeUninitializedCapacity: count) { buf, n in
        n = count
        guard count > 0, let src = bytes.baseAddress, let dst = buf.baseAddress else { return }
        guard sft_gguf_dequantize(Int32(bitPattern: type.rawValue), src, dst, Int64(count)) == 0 else {
            throw KernelError.invalidArgument(op: "dequantizeBlocks(\(type))", message: String(cString: sft_last_error()))
        }
    }
}

/// Decodes `count` values of GGML type `type` from raw blocks at `src` into `dst` (host
/// memory; the readers' loop over large tensors). Throws the kernel's message.
public func dequantizeBlocks(_ type: GGMLType, from src: UnsafeRawPointer, into dst: UnsafeMutablePointer<Float>, count: Int) throws {
    guard sft_gguf_dequantize(Int32(bitPattern: type.rawValue), src, dst, Int64(count)) == 0 else {
        throw KernelError.invalidArgument(op: "dequantizeBlocks(\(type))", message: String(cString: sft_last_error()))
    }
}
