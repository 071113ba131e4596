// Swift entry points to the GGML block kernels in CSFTKernels (quant_gguf.c): matrix-vector
// products on quantized weights without dequantizing them first (generation reads each
// weight once per token, so decoding blocks on the fly beats holding f32 copies), and
// dequantization of raw blocks.
import Foundation
import CSFTKernels

/// Instruction sets of the quantized kernels; `.auto` picks the best this CPU has.
public enum QuantKernelISA: Int32, Sendable, CaseIterable {
    case auto = 0, generic = 1, avx2 = 2, avx512 = 3

    /// The best instruction set available on this CPU.
    public static var best: QuantKernelISA { QuantKernelISA(rawValue: sft_quant_isa_level()) ?? .generic }
}

/// y = W x for W (rows, cols) stored row-major in GGML type `type` (cols a multiple of the
/// block size), x (cols), y (rows). Work is split over `parts` threads (default: all cores
/// for large matrices). `isa` forces a kernel variant (tests compare them).
public func quantizedMatVec(_ type: GGMLType, weights: UnsafeRawPointer, x: UnsafePointer<Float>,
                            y: UnsafeMutablePointer<Float>, rows: Int, cols: Int,
                            isa: QuantKernelISA = .auto, parts: Int? = nil) throws {
    let nparts = max(1, min(rows, parts ?? (rows * cols >= 1 << 16 ? ProcessInfo.processInfo.activeProcessorCount : 1)))
    let t = Int32(bitPattern: type.rawValue)
    if nparts == 1 {
        guard sft_matvec_q_isa(isa.rawValue, t, weights, x, y, Int64(rows), Int64(cols), 0, 1) == 0 else {
            throw SFTError.shape(op: "quantizedMatVec(\(type))", message: String(cString: sft_last_error()))
        }
        return
    }
    var failure: String?
    let lock = NSLock()
    DispatchQueue.concurrentPerform(iterations: nparts) { part in
        if sft_matvec_q_isa(isa.rawValue, t, weights, x, y, Int64(rows), Int64(cols), Int32(part), Int32(nparts)) != 0 {
            let m = String(cString: sft_last_error())
            lock.lock(); failure = m; lock.unlock()
        }
    }
    if let failure { throw SFTError.shape(op: "quantizedMatVec(\(type))", message: failure) }
}

/// Decodes `count` values of GGML type `type` from raw blocks.
public func dequantizeBlocks(_ type: GGMLType, _ bytes: UnsafeRawBufferPointer, count: Int) throws -> [Float] {
    guard let bs = type.blockSize, let ts = type.typeSize, count % bs == 0, bytes.count >= count / bs * ts else {
        throw SFTError.shape(op: "dequantizeBlocks(\(type))", message: "\(bytes.count) bytes do not hold \(count) values")
    }
    return try [Float](unsafeUninitializedCapacity: count) { buf, n in
        n = count
        guard count > 0, let src = bytes.baseAddress, let dst = buf.baseAddress else { return }
        guard sft_gguf_dequantize(Int32(bitPattern: type.rawValue), src, dst, Int64(count)) == 0 else {
            throw SFTError.unsupported(String(cString: sft_last_error()))
        }
    }
}
