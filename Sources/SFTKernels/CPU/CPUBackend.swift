// The CPU backend: host memory from a caching allocator, GEMM through OpenBLAS, every other op
// through the C shim's vectorized loops (CSFTKernels), run on several cores by splitting the
// work into (part, nparts) on the shim's thread pool (sft_parallel_for). Ops run
// synchronously, so OpenBLAS's threads and the kernel parts never run at the same time.
//
// This file: the class, memory, transfers, threads, and argument checks shared by the ops
// (CPUBackend+Ops.swift, CPUBackend+GEMM.swift).

import COpenBLAS
import CSFTKernels
import Foundation

/// Runs the op set on the host CPU.
///
/// ```swift
/// let cpu = CPUBackend.shared
/// let x = try cpu.allocate(bytes: 4 * 1024)
/// try cpu.fill(BufferView(x), value: 1, count: 1024)
/// ```
public final class CPUBackend: Backend, @unchecked Sendable {
    /// The process-wide CPU backend (one allocator, one thread setting).
    public static let shared = CPUBackend()

    public let device: Device = .cpu
    let allocator = CachingAllocator.host()
    private let threadLock = NSLock()
    private var threadCount: Int

    /// A backend using every active core. Prefer `shared` (one allocator for the process).
    /// Puts OpenBLAS in single-threaded mode: the backend splits GEMMs over cores itself.
    public init() {
        threadCount = max(1, ProcessInfo.processInfo.activeProcessorCount)
        openblas_set_num_threads(1)
    }

    // MARK: threads and instruction set

    /// Cores the backend's ops use (GEMMs included: OpenBLAS itself runs single-threaded).
    public var threads: Int {
        threadLock.lock()
        defer { threadLock.unlock() }
        return threadCount
    }

    /// Sets the cores the backend's ops use. Values below 1 mean 1.
    public func setThreads(_ n: Int) {
        let n = max(1, n)
        threadLock.lock()
        threadCount = n
        threadLock.unlock()
    }

    /// Sets OpenBLAS's own thread count (`openblas_set_num_threads`) for code that calls CBLAS
    /// directly. The backend keeps it at 1 and splits GEMMs over its own pool: after a
    /// multi-threaded call, OpenBLAS's idle threads spin for about 0.1 s and slow the kernels
    /// that follow.
    public static func setBLASThreads(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }

    /// The instruction set the C kernels run on: "avx512", "avx2" or "generic".
    public static var instructionSet: String { String(cString: sft_cpu_isa()) }

    /// Instruction sets this CPU can run, best first (always ends with "generic").
    public static var supportedInstructionSets: [String] {
        let current = instructionSet
        defer { _ = sft_cpu_set_isa(current) }
        return ["avx512", "avx2", "generic"].filter { sft_cpu_set_isa($0) == 0 }
    }

    /// Makes the C kernels use a lower instruction set than the best one detected — for tests
    /// and benchmarks that check every variant on one machine. Process-wide.
    public static func setInstructionSet(_ name: String) throws {
        if sft_cpu_set_isa(name) != 0 {
            throw KernelError.invalidArgument(op: "setInstructionSet", message: String(cString: sft_last_error()))
        }
    }

    // MARK: memory and transfers

    public func allocate(bytes: Int) throws -> Buffer { try allocator.allocate(bytes: bytes) }

    public var memoryStats: MemoryStats { allocator.memoryStats }

    public func resetPeakMemory() { allocator.resetPeak() }

    /// Frees the blocks the allocator keeps for reuse (cachedBytes drops to 0).
    public func emptyCache() { allocator.emptyCache() }

    public func upload(_ src: UnsafeRawPointer, to dst: BufferView, bytes: Int) throws {
        try check(dst, bytes: bytes, "upload", "dst")
        dst.raw.copyMemory(from: src, byteCount: bytes)
    }

    public func download(_ src: BufferView, to dst: UnsafeMutableRawPointer, bytes: Int) throws {
        try check(src, bytes: bytes, "download", "src")
        dst.copyMemory(from: src.raw, byteCount: bytes)
    }

    public func copy(_ src: BufferView, to dst: BufferView, bytes: Int) throws {
        let profileStart = OpProfile.begin(); defer { OpProfile.end("copy", profileStart) }
        try check(src, bytes: bytes, "copy", "src")
        try check(dst, bytes: bytes, "copy", "dst")
        memmove(dst.raw, src.raw, bytes)
    }

    /// Ops on the CPU finish before they return.
    public func synchronize() throws {}

    // MARK: work splitting

    /// Parts to split `work` units (elements, or flops / 16) into: one per `grain` units, at
    /// most one per core, so small calls skip the thread hand-off.
    func parts(work: Int, grain: Int = 1 << 15) -> Int {
        max(1, min(threads, work / grain))
    }

    /// Runs body(part, nparts) for every part, in parallel when nparts > 1, on the C shim's
    /// thread pool (sft_parallel_for: its workers stay awake between the ops of a training step,
    /// where libdispatch's often start too late to help an op of a few milliseconds).
    func parallel(_ nparts: Int, _ body: (Int32, Int32) -> Void) {
        if nparts <= 1 { body(0, 1); return }
        withoutActuallyEscaping(body) { body in
            var job = ParallelJob(body: body, nparts: Int32(nparts))
            withUnsafeMutablePointer(to: &job) { ptr in
                sft_parallel_for(Int64(nparts), Int32(threads), { ctx, i in
                    let job = ctx!.assumingMemoryBound(to: ParallelJob.self)
                    job.pointee.body(Int32(i), job.pointee.nparts)
                }, ptr)
            }
        }
    }

    /// Splits [0, n) into contiguous ranges, one per part, for position-independent loops.
    func chunked(_ n: Int, grain: Int = 1 << 16, _ body: (_ start: Int, _ count: Int) -> Void) {
        let nparts = parts(work: n, grain: grain)
        parallel(nparts) { p, np in
            let lo = n * Int(p) / Int(np), hi = n * (Int(p) + 1) / Int(np)
            if hi > lo { body(lo, hi - lo) }
        }
    }

    // MARK: argument checks

}

/// What a pool worker needs to run one part of `CPUBackend.parallel`.
private struct ParallelJob {
    let body: (Int32, Int32) -> Void
    let nparts: Int32
}
