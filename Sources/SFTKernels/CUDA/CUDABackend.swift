// The CUDA backend: the op set on one NVIDIA GPU, through the driver API, NVRTC and cuBLASLt
// loaded at run time (cuda_loader.c). It owns the GPU's primary context, one stream every op is
// enqueued on (asynchronous: `synchronize()` and downloads wait), a caching allocator, pinned
// staging buffers, a cuBLASLt handle with its workspace, and the kernel modules — compiled by
// NVRTC for this GPU's architecture on first use and cached on disk.
//
// Errors found by kernels (an embedding id outside the table) cannot throw at the call: they
// are recorded in a small device "error word" and thrown at the next synchronize or download.
//
// This file: the class, memory, transfers, launching, argument checks. The ops are in
// CUDABackend+Ops.swift and CUDABackend+GEMM.swift.

import CSFTKernels
import Foundation

/// Runs the op set on an NVIDIA GPU.
///
/// ```swift
/// let gpu = try CUDABackend.shared(ordinal: 0)   // or: try backend(for: .cuda(0))
/// let x = try gpu.allocate(bytes: 4 * 1024)
/// try gpu.fill(BufferView(x), value: 1, count: 1024)
/// ```
public final class CUDABackend: Backend, @unchecked Sendable {
    public let device: Device
    /// The GPU this backend runs on: its name, compute capability, SM count and memory.
    public let gpu: CUDAStatus.GPU
    /// The NVRTC target the kernels are compiled for ("sm_90a" on an H100).
    public let arch: String
    /// Where compiled kernels are kept between runs.
    public let kernelCache: CUDAKernelCache
    /// Lets f32 GEMMs use TF32 tensor cores (about 3e-4 relative error instead of 1e-6).
    public var allowTF32: Bool {
        get { lock.lock(); defer { lock.unlock() }; return tf32 }
        set { lock.lock(); tf32 = newValue; lock.unlock() }
    }

    let context: sft_CUcontext
    let stream: sft_CUstream?
    let allocator: CachingAllocator
    let staging: PinnedStaging
    let driverVersion: Int
    private(set) var lt: UnsafeMutableRawPointer?
    static let workspaceBytes = 32 << 20
    private(set) var workspace: Buffer!
    private var errorWord: Buffer!
    private let errorHost: UnsafeMutableRawPointer
    private let lock = NSLock()
    private var tf32 = false
    private var modules: [String: sft_CUmodule] = [:]
    private var functions: [String: sft_CUfunction] = [:]

    private static let sharedLock = NSLock()
    nonisolated(unsafe) private static var instances: [Int: CUDABackend] = [:]

    /// The process-wide backend of GPU `ordinal` (created on first use).
    /// - Throws: `KernelError.backendUnavailable` with the reason when it cannot be used.
    public static func shared(ordinal: Int) throws -> CUDABackend {
        sharedLock.lock()
        defer { sharedLock.unlock() }
        if let b = instances[ordinal] { return b }
        let b = try CUDABackend(ordinal: ordinal)
        instances[ordinal] = b
        return b
    }

    private init(ordinal: Int) throws {
        let status = CUDAStatus.current
        let device = Device.cuda(ordinal)
        if let why = status.unavailableReason(ordinal: ordinal) { throw KernelError.backendUnavailable(device, reason: why) }
        self.device = device
        self.gpu = status.gpus[ordinal]
        self.arch = gpu.arch
        self.driverVersion = status.driverVersion ?? 0
        self.kernelCache = CUDAKernelCache()
        func fail(_ what: String, _ r: sft_CUresult) -> KernelError {
            .backendUnavailable(device, reason: "\(what) failed: \(cudaErrorText(r))")
        }
        var dev: sft_CUdevice = 0
        var r = sft_cuDeviceGet(&dev, Int32(ordinal))
        if r != 0 { throw fail("cuDeviceGet", r) }
        var ctx: sft_CUcontext?
        r = sft_cuDevicePrimaryCtxRetain(&ctx, dev)
        guard r == 0, let ctx else { throw fail("cuDevicePrimaryCtxRetain", r) }
        context = ctx
        r = sft_cuCtxSetCurrent(ctx)
        if r != 0 { throw fail("cuCtxSetCurrent", r) }
        var s: sft_CUstream?
        r = sft_cuStreamCreate(&s, UInt32(SFT_CU_STREAM_NON_BLOCKING))
        if r != 0 { throw fail("cuStreamCreate", r) }
        stream = s
        allocator = .cuda(device, context: ctx)
        staging = try PinnedStaging()
        var host: UnsafeMutableRawPointer?
        r = sft_cuMemAllocHost(&host, 16)
        guard r == 0, let host else { throw fail("cuMemAllocHost", r) }
        errorHost = host
        var handle: UnsafeMutableRawPointer?
        let st = sft_cublaslt_create(&handle)
        if st != 0 { throw KernelError.backendUnavailable(device, reason: "cublasLtCreate failed with status \(st)") }
        lt = handle
        allocator.synchronize = { [unowned self] in _ = try? self.synchronizeStream() }
        workspace = try allocate(bytes: Self.workspaceBytes)
        errorWord = try allocate(bytes: 16)
        try check(sft_cuMemsetD32Async(address(BufferView(errorWord)), 0, 4, stream), "cuMemsetD32Async")
        // Build (or read from the cache) and load one module now, so an NVRTC that cannot target
        // this GPU, or a driver that cannot load its output, is reported here, as the reason
        // the device is unavailable, rather than by the first op of a training run.
        do {
            _ = try function(CUDAKernels.elementwise, "sft_fill_f32")
        } catch {
            throw KernelError.backendUnavailable(device, reason: "the kernels cannot be built or loaded for \(gpu.name) (\(arch)): \(error)")
        }
    }

    // MARK: context, errors

    /// Makes this GPU's context current on the calling thread (ops may come from any thread).
    func bind() throws {
        try check(sft_cuCtxSetCurrent(context), "cuCtxSetCurrent")
    }

    func check(_ r: sft_CUresult, _ what: @autoclosure () -> String) throws {
        if r != 0 { throw KernelError.native(op: what(), message: cudaErrorText(r)) }
    }

    private func synchronizeStream() throws {
        try bind()
        try check(sft_cuStreamSynchronize(stream), "cuStreamSynchronize")
    }

    /// Reads the error word (after the stream's work so far) and throws what a kernel reported.
    private func throwKernelErrors() throws {
        try check(sft_cuMemcpyDtoHAsync(errorHost, address(BufferView(errorWord)), 16, stream), "cuMemcpyDtoHAsync")
        try check(sft_cuStreamSynchronize(stream), "cuStreamSynchronize")
        let word = errorHost.assumingMemoryBound(to: Int32.self)
        guard word[0] != 0 else { return }
        let (code, row, value) = (word[0], word[1], word[2])
        try check(sft_cuMemsetD32Async(address(BufferView(errorWord)), 0, 4, stream), "cuMemsetD32Async")
        switch code {
        case 1: throw KernelError.invalidArgument(op: "embeddingForward", message: "token id \(value) at row \(row) is outside the table")
        case 2: throw KernelError.invalidArgument(op: "embeddingBackward", message: "token id \(value) at row \(row) is outside dtable's rows")
        default: throw KernelError.native(op: "kernel", message: "error code \(code) at row \(row) (value \(value))")
        }
    }

    /// Waits until every enqueued op has finished; throws what a kernel reported meanwhile.
    public func synchronize() throws {
        try bind()
        try throwKernelErrors()
    }

    // MARK: memory and transfers

    public func allocate(bytes: Int) throws -> Buffer { try allocator.allocate(bytes: bytes) }

    public var memoryStats: MemoryStats { allocator.memoryStats }

    public func resetPeakMemory() { allocator.resetPeak() }

    public func freeDeviceMemory() -> Int? { try? deviceMemory().free }

    /// Frees the blocks the allocator keeps for reuse (waits for the stream first).
    public func emptyCache() { allocator.emptyCache() }

    /// Bytes free and total on the GPU, as the driver sees them.
    public func deviceMemory() throws -> (free: Int, total: Int) {
        try bind()
        var free = 0, total = 0
        try check(sft_cuMemGetInfo(&free, &total), "cuMemGetInfo")
        return (free, total)
    }

    /// Device address of a view.
    func address(_ v: BufferView) -> sft_CUdeviceptr {
        sft_CUdeviceptr(UInt(bitPattern: v.raw))
    }

    public func upload(_ src: UnsafeRawPointer, to dst: BufferView, bytes: Int) throws {
        try check(dst, bytes: bytes, "upload", "dst")
        if bytes == 0 { return }
        try bind()
        try staging.upload(src, to: address(dst), bytes: bytes, stream: stream)
    }

    public func download(_ src: BufferView, to dst: UnsafeMutableRawPointer, bytes: Int) throws {
        try check(src, bytes: bytes, "download", "src")
        try bind()
        if bytes > 0 { try staging.download(address(src), to: dst, bytes: bytes, stream: stream) }
        try throwKernelErrors()
    }

    public func copy(_ src: BufferView, to dst: BufferView, bytes: Int) throws {
        try check(src, bytes: bytes, "copy", "src")
        try check(dst, bytes: bytes, "copy", "dst")
        if bytes == 0 { return }
        try bind()
        try check(sft_cuMemcpyDtoDAsync(address(dst), address(src), bytes, stream), "cuMemcpyDtoDAsync")
    }

    // MARK: kernels

    /// The function `name` of `module`, compiling (or reading from the disk cache) and loading
    /// the module on first use.
    func function(_ module: CUDAModuleSource, _ name: String) throws -> sft_CUfunction {
        precondition(module.kernels.contains(name), "kernel \(name) is not listed in module \(module.name)")
        lock.lock()
        defer { lock.unlock() }
        if let f = functions[name] { return f }
        let mod: sft_CUmodule
        if let m = modules[module.name] {
            mod = m
        } else {
            let image = try kernelCache.image(for: module, arch: arch, driverVersion: driverVersion)
            var m: sft_CUmodule?
            try image.withUnsafeBytes { try check(sft_cuModuleLoadData(&m, $0.baseAddress), "cuModuleLoadData(\(module.name), \(arch))") }
            mod = m!
            modules[module.name] = mod
        }
        var f: sft_CUfunction?
        try check(sft_cuModuleGetFunction(&f, mod, name), "cuModuleGetFunction(\(name))")
        functions[name] = f!
        return f!
    }

    /// A kernel argument, passed by value in an 8-byte slot.
    enum Arg {
        case ptr(BufferView)
        case optional(BufferView?)
        case i64(Int)
        case i32(Int32)
        case f32(Float)
        case u64(UInt64)
    }

    /// Enqueues a kernel on the stream. grid: blocks in x, y, z; block: threads (x only).
    func launch(_ module: CUDAModuleSource, _ name: String, grid: (Int, Int, Int), block: Int,
                sharedBytes: Int = 0, _ args: [Arg]) throws {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 { return }
        guard grid.0 < Int(Int32.max), grid.1 <= 65535, grid.2 <= 65535, (1...1024).contains(block) else {
            throw KernelError.invalidArgument(op: name, message: "launch grid \(grid) × \(block) threads is outside CUDA's limits")
        }
        let kinds = String(args.map { a -> Character in
            switch a {
            case .ptr, .optional: return "p"
            case .i64: return "l"
            case .u64: return "u"
            case .i32: return "i"
            case .f32: return "f"
            }
        })
        precondition(module.signatures[name] == kinds, "launch of \(name) with (\(kinds)), its signature is (\(module.signatures[name] ?? "?"))")
        try bind()
        let f = try function(module, name)
        var slots: [UInt64] = args.map { a in
            switch a {
            case .ptr(let v): return UInt64(address(v))
            case .optional(let v): return v.map { UInt64(address($0)) } ?? 0
            case .i64(let x): return UInt64(bitPattern: Int64(x))
            case .i32(let x): return UInt64(UInt32(bitPattern: x))
            case .f32(let x): return UInt64(x.bitPattern)
            case .u64(let x): return x
            }
        }
        let r = slots.withUnsafeMutableBufferPointer { sp -> sft_CUresult in
            var params: [UnsafeMutableRawPointer?] = (0..<sp.count).map { UnsafeMutableRawPointer(sp.baseAddress! + $0) }
            return params.withUnsafeMutableBufferPointer { pp in
                sft_cuLaunchKernel(f, UInt32(grid.0), UInt32(grid.1), UInt32(grid.2), UInt32(block), 1, 1,
                                   UInt32(sharedBytes), stream, pp.baseAddress, nil)
            }
        }
        try check(r, "cuLaunchKernel(\(name), grid \(grid), block \(block))")
    }

    /// Blocks for a grid-stride loop over n elements.
    func blocks(_ n: Int, threads: Int = 256) -> Int {
        max(1, min((n + threads - 1) / threads, max(1, gpu.multiprocessors) * 32))
    }

    /// The device's error word, for kernels that report bad input.
    var errorView: BufferView { BufferView(errorWord) }

    // MARK: argument checks

}
