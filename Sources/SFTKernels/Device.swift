// Device, Buffer, memory statistics and the Backend protocol: the seam every compute backend
// (CPU over OpenBLAS + C loops, CUDA loaded at run time) implements. SFTCore only talks to this.
//
// A Buffer is device memory, not host memory: on CPU it happens to be addressable, on CUDA it
// is a device address. Data crosses with explicit upload/download. Ops are enqueued on the
// backend's stream and may run asynchronously; `synchronize()` waits for them. Buffers come
// from a caching allocator that records current and peak bytes.

import Foundation

/// Element types of stored tensors. Compute is f32 on CPU; bf16/f16 are storage types.
public enum DType: String, Sendable, Hashable, Codable, CaseIterable {
    /// f32: compute and master weights; bf16/f16: stored weights and GPU compute types; i32: token
    /// ids, positions, document ids; u8: packed 4-bit codes and raw bytes.
    case f32, bf16, f16, i32, u8

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f32, .i32: return 4
        case .bf16, .f16: return 2
        case .u8: return 1
        }
    }
}

/// Where a buffer lives.
public enum Device: Hashable, Sendable, CustomStringConvertible {
    /// The host, through CPUBackend (OpenBLAS and the C kernels).
    case cpu
    /// The CUDA GPU of this ordinal (0-based, as CUDA_VISIBLE_DEVICES leaves them), through
    /// CUDABackend.
    case cuda(Int)

    /// "cpu" or "cuda:N", the form `init(parsing:)` reads.
    public var description: String {
        switch self {
        case .cpu: return "cpu"
        case .cuda(let i): return "cuda:\(i)"
        }
    }

    /// Parses "cpu", "cuda", "cuda:1".
    public init(parsing text: String) throws {
        if text == "cpu" { self = .cpu; return }
        if text == "cuda" { self = .cuda(0); return }
        if text.hasPrefix("cuda:"), let i = Int(text.dropFirst(5)), i >= 0 { self = .cuda(i); return }
        throw KernelError.invalidArgument(op: "Device", message: "unknown device '\(text)' (use cpu, cuda or cuda:N)")
    }
}

/// Errors from the kernel layer. They carry the op name and the offending shapes.
public enum KernelError: Error, CustomStringConvertible, Equatable {
    /// An op was called with shapes, strides or values it does not accept.
    case invalidArgument(op: String, message: String)
    /// The allocator could not get `bytes` more on `device`, even after emptying its cache.
    case outOfMemory(device: Device, bytes: Int)
    /// The device's backend cannot be used here (no driver, no GPU, a missing library), with why.
    case backendUnavailable(Device, reason: String)
    /// A native library (CUDA driver, cuBLASLt, NVRTC, OpenBLAS) reported an error in `op`.
    case native(op: String, message: String)

    /// The error in words, naming the op or device.
    public var description: String {
        switch self {
        case .invalidArgument(let op, let m): return "\(op): \(m)"
        case .outOfMemory(let d, let b): return "out of memory on \(d) allocating \(b) bytes"
        case .backendUnavailable(let d, let r): return "\(d) unavailable: \(r)"
        case .native(let op, let m): return "\(op): \(m)"
        }
    }
}

/// Current and peak bytes held by a backend's allocator.
public struct MemoryStats: Sendable, Equatable {
    /// Bytes of buffers currently allocated and in use.
    public var currentBytes: Int = 0
    /// The largest `currentBytes` since the backend started or last reset its statistics.
    public var peakBytes: Int = 0
    /// Bytes kept in the cache for reuse (not counted in currentBytes).
    public var cachedBytes: Int = 0
    /// All zero.
    public init() {}
}

/// A block of device memory. Released to its backend's cache when the last reference goes.
public final class Buffer: @unchecked Sendable {
    /// The device the memory is on.
    public let device: Device
    /// Usable size in bytes.
    public let bytes: Int
    /// Address of the first byte: a host pointer on CPU, a device address on CUDA.
    public let address: UnsafeMutableRawPointer
    let release: (UnsafeMutableRawPointer, Int) -> Void

    /// Wraps memory a backend allocated; `release` gives it back when the buffer is freed.
    /// - Parameters:
    ///   - device: Where the memory is.
    ///   - bytes: Its usable size.
    ///   - address: Its first byte.
    ///   - release: Called with the address and size from `deinit`.
    public init(device: Device, bytes: Int, address: UnsafeMutableRawPointer,
                release: @escaping (UnsafeMutableRawPointer, Int) -> Void) {
        self.device = device
        self.bytes = bytes
        self.address = address
        self.release = release
    }

    deinit { release(address, bytes) }
}

/// A typed position inside a buffer: what ops take as arguments.
public struct BufferView: @unchecked Sendable {
    /// The buffer viewed into (kept alive by the view).
    public let buffer: Buffer
    /// Offset in bytes from the buffer's start.
    public let byteOffset: Int

    /// A view `byteOffset` bytes into `buffer`.
    /// - Parameters:
    ///   - buffer: The buffer.
    ///   - byteOffset: Bytes from its start.
    public init(_ buffer: Buffer, byteOffset: Int = 0) {
        self.buffer = buffer
        self.byteOffset = byteOffset
    }

    /// The address of the view's first byte (host pointer on CPU, device address on CUDA).
    public var raw: UnsafeMutableRawPointer { buffer.address + byteOffset }
    /// Host-visible typed pointer. Valid only for CPU buffers.
    public func f32() -> UnsafeMutablePointer<Float> { raw.assumingMemoryBound(to: Float.self) }
    /// Host-visible Int32 pointer. Valid only for CPU buffers.
    public func i32() -> UnsafeMutablePointer<Int32> { raw.assumingMemoryBound(to: Int32.self) }
    /// Host-visible UInt16 pointer (bf16/f16 bit patterns). Valid only for CPU buffers.
    public func u16() -> UnsafeMutablePointer<UInt16> { raw.assumingMemoryBound(to: UInt16.self) }
    /// Host-visible byte pointer. Valid only for CPU buffers.
    public func u8() -> UnsafeMutablePointer<UInt8> { raw.assumingMemoryBound(to: UInt8.self) }
    /// The view `n` bytes further into the same buffer.
    /// - Parameter n: Byte offset to add (may be 0).
    public func advanced(byBytes n: Int) -> BufferView { BufferView(buffer, byteOffset: byteOffset + n) }
}
