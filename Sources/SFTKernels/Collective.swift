// Collectives for data parallelism (DESIGN.md "Collective"): the few operations a data-parallel
// trainer needs — sum over ranks, broadcast, barrier, abort — behind one protocol, with a
// single-process implementation (size 1, every operation a no-op) and MPI (Open MPI loaded at
// run time, mpi_loader.c). `worldCollective()` picks MPI when the environment says the process
// was started by mpirun or srun.
//
// Device buffers: by default (the extensions at the end) tensors move through a host staging
// buffer (backend download / upload); on CUDA with NCCL, `deviceCollective` wraps the group in
// an NCCLCollective (NCCLCollective.swift) that reduces them in GPU memory.

import CSFTKernels
import Foundation

/// A group of processes ("ranks") that reduce and share buffers.
public protocol Collective: AnyObject {
    /// This process's index, 0 ..< size. Rank 0 writes the run's files.
    var rank: Int { get }
    /// Number of ranks in the group (1 for a single process).
    var size: Int { get }
    /// Seconds a collective waits for every rank before it throws `CollectiveError.timeout`
    /// (0: forever).
    var timeout: Double { get set }
    /// Replaces `values` on every rank by their sum over all ranks.
    func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws
    /// Replaces `values` on every rank by their f64 sum over all ranks (loss and token totals).
    func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>) throws
    /// Copies rank `root`'s bytes into every rank's `bytes` (same length everywhere).
    func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws
    /// Returns once every rank has called it (throws `CollectiveError.timeout` past `timeout`).
    func barrier() throws
    /// Ends every rank of the job with exit status `code`.
    func abort(code: Int32) -> Never
    /// Leaves the group at the end of a successful run (MPI_Finalize).
    func finish() throws
    /// What the group runs on, for logs ("single process", "Open MPI v4.1.4, 2 ranks").
    var summary: String { get }
    /// Sums the f32 device buffers `views` (with their element counts) over all ranks, in place.
    /// Default: staged through host memory (`stagedAllReduceSum`); NCCLCollective reduces on the GPU.
    func allReduceSum(_ views: [(view: BufferView, count: Int)], on backend: any Backend) throws
    /// Copies rank `root`'s f32 device buffer (`count` elements) into every rank's.
    func broadcast(_ view: BufferView, count: Int, root: Int, on backend: any Backend) throws
    /// Starts summing `views` over all ranks and returns before the sums are there, so a
    /// trainer can reduce finished gradients while its backward pass goes on. The buffers
    /// must not be touched until `wait()` returns; every rank must start the same reductions
    /// in the same order. Default: the blocking `allReduceSum`, already complete.
    func startAllReduceSum(_ views: [(view: BufferView, count: Int)], on backend: any Backend) throws -> any PendingReduction
}

/// A sum over ranks started by `Collective.startAllReduceSum` and not yet waited for.
public protocol PendingReduction: AnyObject {
    /// Lets the library move the work on without blocking (MPI progresses only inside its calls).
    func progress() throws
    /// Waits (at most the collective's timeout) until the sums are in the buffers.
    func wait() throws
}

/// A reduction that was done before it was returned.
public final class CompletedReduction: PendingReduction {
    /// A reduction that is already complete.
    public init() {}
    public func progress() {}
    public func wait() {}
}

/// Why a collective operation failed.
public enum CollectiveError: Error, CustomStringConvertible, Equatable {
    /// A rank did not join a collective within the timeout.
    case timeout(operation: String, seconds: Double)
    /// The library reported an error in `operation` (its message).
    case failed(operation: String, message: String)
    /// The environment asks for a job (mpirun/srun) but its library cannot be used.
    case unavailable(String)

    /// The failure in words, naming the operation (and the `collective_timeout` key for timeouts).
    public var description: String {
        switch self {
        case .timeout(let op, let s):
            return "\(op): no answer from every rank within \(Int(s)) s (collective_timeout); a rank is stalled or has died"
        case .failed(let op, let m): return "\(op): \(m)"
        case .unavailable(let m): return m
        }
    }
}

/// One process alone: rank 0 of 1.
public final class SingleProcessCollective: Collective {
    /// The group of this process alone.
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public var timeout: Double = 0
    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws {}
    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>) throws {}
    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws {}
    public func barrier() throws {}
    public func abort(code: Int32) -> Never { exit(code) }
    public func finish() throws {}
    public var summary: String { "single process" }
}

/// MPI_COMM_WORLD of an Open MPI job.
public final class MPICollective: Collective {
    /// This process's MPI rank in MPI_COMM_WORLD.
    public let rank: Int
    /// The number of MPI ranks in MPI_COMM_WORLD.
    public let size: Int
    /// Seconds a collective waits for every rank (`collective_timeout`; 0: forever).
    public var timeout: Double

    /// Loads libmpi and initializes MPI (once per process).
    /// - Throws: `CollectiveError.unavailable` naming what is missing.
    public init(timeout: Double = 0) throws {
        var r: Int32 = 0, s: Int32 = 0
        guard sft_mpi_init(&r, &s) == 0 else { throw CollectiveError.unavailable(String(cString: sft_last_error())) }
        rank = Int(r); size = Int(s)
        self.timeout = timeout
    }

    func check(_ status: Int32, _ operation: String) throws {
        if status == 0 { return }
        if status == Int32(SFT_MPI_TIMEOUT) { throw CollectiveError.timeout(operation: operation, seconds: timeout) }
        throw CollectiveError.failed(operation: operation, message: String(cString: sft_last_error()))
    }

    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws {
        guard let p = values.baseAddress, !values.isEmpty else { return }
        try check(sft_mpi_allreduce_sum_f32(p, values.count, timeout), "all-reduce")
    }

    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>) throws {
        guard let p = values.baseAddress, !values.isEmpty else { return }
        try check(sft_mpi_allreduce_sum_f64(p, values.count, timeout), "all-reduce")
    }

    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws {
        guard let p = bytes.baseAddress, !bytes.isEmpty else { return }
        try check(sft_mpi_broadcast(p, bytes.count, Int32(root), timeout), "broadcast")
    }

    public func barrier() throws { try check(sft_mpi_barrier(timeout), "barrier") }

    public func abort(code: Int32) -> Never {
        sft_mpi_abort(code)
        exit(code)   // not reached: sft_mpi_abort exits
    }

    public func finish() throws {
        guard sft_mpi_finalize() == 0 else { throw CollectiveError.failed(operation: "finalize", message: String(cString: sft_last_error())) }
    }

    public var summary: String { "\(MPILibrary.version ?? "MPI"), \(size) ranks" }

    public func startAllReduceSum(_ views: [(view: BufferView, count: Int)], on backend: any Backend) throws -> any PendingReduction {
        guard size > 1 else { return CompletedReduction() }
        return try MPIReduction(views, on: backend, collective: self)
    }
}

/// Nonblocking MPI all-reduces of f32 buffers: in place in host memory on the CPU backend,
/// through one staging buffer (downloaded at the start, uploaded by `wait`) on others.
final class MPIReduction: PendingReduction {
    private var requests: [UnsafeMutableRawPointer?] = []
    private let views: [(view: BufferView, count: Int)]
    private let backend: any Backend
    private let collective: MPICollective
    private var staging: UnsafeMutableBufferPointer<Float>?
    /// Elements per MPI request (MPI counts are ints).
    static let piece = 1 << 28

    init(_ views: [(view: BufferView, count: Int)], on backend: any Backend, collective: MPICollective) throws {
        self.views = views
        self.backend = backend
        self.collective = collective
        if backend is CPUBackend {
            for v in views { try start(v.view.f32(), count: v.count) }
        } else {
            let total = views.reduce(0) { $0 + $1.count }
            let buf = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, total))
            staging = buf
            var at = 0
            for v in views where v.count > 0 {
                try backend.download(v.view, to: buf.baseAddress! + at, bytes: v.count * 4)
                at += v.count
            }
            try start(buf.baseAddress!, count: total)
        }
    }

    private func start(_ p: UnsafeMutablePointer<Float>, count: Int) throws {
        var at = 0
        while at < count {
            let n = min(Self.piece, count - at)
            var request: UnsafeMutableRawPointer?
            try collective.check(sft_mpi_iallreduce_sum_f32(p + at, n, &request), "all-reduce")
            requests.append(request)
            at += n
        }
    }

    func progress() throws {
        for i in requests.indices where requests[i] != nil {
            var done: Int32 = 0
            try collective.check(sft_mpi_request_test(&requests[i], &done), "all-reduce")
        }
    }

    func wait() throws {
        for i in requests.indices { try collective.check(sft_mpi_request_wait(&requests[i], collective.timeout), "all-reduce") }
        requests.removeAll()
        guard let buf = staging else { return }
        var at = 0
        for v in views where v.count > 0 {
            try backend.upload(buf.baseAddress! + at, to: v.view, bytes: v.count * 4)
            at += v.count
        }
        buf.deallocate()
        staging = nil
    }

    deinit {
        // Unfinished requests may still write into the staging buffer: it is left allocated
        // (this happens only when a run is ending on an error).
        if requests.allSatisfy({ $0 == nil }) { staging?.deallocate() }
    }
}

/// The MPI library as found on this machine (for `sftctl inspect --devices`).
public enum MPILibrary {
    /// The loaded file, or nil with `loadError` saying why not.
    public static var path: String? {
        sft_mpi_load() == 0 ? String(cString: sft_mpi_lib_path()) : nil
    }
    /// Why libmpi could not be loaded ("" when it was).
    public static var loadError: String { _ = sft_mpi_load(); return String(cString: sft_mpi_load_error()) }
    /// "Open MPI v4.1.4", or nil when no library loads.
    public static var version: String? {
        var text = [CChar](repeating: 0, count: 512)
        guard sft_mpi_library_version(&text, text.count) == 0 else { return nil }
        return String(nulTerminated: text).trimmingCharacters(in: .whitespaces).components(separatedBy: ", package")[0]
    }
}

/// Whether the environment says this process is one rank of a launched job, and its size:
/// Open MPI's mpirun sets OMPI_COMM_WORLD_SIZE; PMIx launchers (srun --mpi=pmix, Open MPI 5)
/// PMIX_RANK; PMI-2 launchers (srun --mpi=pmi2) PMI_SIZE.
public func launchedRanks(_ env: [String: String] = ProcessInfo.processInfo.environment) -> Int? {
    if let s = env["OMPI_COMM_WORLD_SIZE"].flatMap(Int.init) { return s }
    if let s = env["PMI_SIZE"].flatMap(Int.init) { return s }
    if env["PMIX_RANK"] != nil { return env["SLURM_STEP_NUM_TASKS"].flatMap(Int.init) ?? env["SLURM_NTASKS"].flatMap(Int.init) ?? 0 }
    return nil
}

/// This process's index among the job's ranks on its machine (for one GPU per rank):
/// OMPI_COMM_WORLD_LOCAL_RANK (mpirun), SLURM_LOCALID (srun), MPI_LOCALRANKID, PMI_LOCAL_RANK.
public func launchedLocalRank(_ env: [String: String] = ProcessInfo.processInfo.environment) -> Int? {
    for key in ["OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "PMI_LOCAL_RANK"] {
        if let r = env[key].flatMap(Int.init) { return r }
    }
    return nil
}

nonisolated(unsafe) private var world: (any Collective)?
private let worldLock = NSLock()

/// The process group of this run: MPI when started by mpirun/srun, else a single process.
/// Created once per process (later calls return the same group with `timeout` updated).
/// - Throws: `CollectiveError.unavailable` when the environment names a job but Open MPI
///   cannot be loaded (running alone would have every rank train the same data and write the
///   same files).
public func worldCollective(timeout: Double = 0) throws -> any Collective {
    worldLock.lock(); defer { worldLock.unlock() }
    if let w = world { w.timeout = timeout; return w }
    let w: any Collective
    if let ranks = launchedRanks() {
        do { w = try MPICollective(timeout: timeout) } catch let e as CollectiveError {
            throw CollectiveError.unavailable("this process was started as one of \(ranks) ranks (mpirun/srun), but MPI cannot be used: \(e)")
        }
    } else {
        w = SingleProcessCollective()
    }
    world = w
    return w
}

/// The group `worldCollective()` created, if any (for ending a job on an error).
public var existingWorldCollective: (any Collective)? {
    worldLock.lock(); defer { worldLock.unlock() }
    return world
}

// MARK: - convenience over the primitives

extension Collective {
    /// Sums `values` over all ranks.
    public func allReduceSum(_ values: [Double]) throws -> [Double] {
        var v = values
        try v.withUnsafeMutableBufferPointer { try allReduceSum($0) }
        return v
    }

    /// Rank `root`'s string on every rank.
    public func broadcast(_ text: String, root: Int = 0) throws -> String {
        guard size > 1 else { return text }
        var bytes = Array(text.utf8)
        var count = [Double(bytes.count)]
        try count.withUnsafeMutableBytes { try broadcast($0, root: root) }
        bytes = rank == root ? bytes : [UInt8](repeating: 0, count: Int(count[0]))
        try bytes.withUnsafeMutableBytes { try broadcast($0, root: root) }
        return String(decoding: bytes, as: UTF8.self)
    }

    public func allReduceSum(_ views: [(view: BufferView, count: Int)], on backend: any Backend) throws {
        try stagedAllReduceSum(views, on: backend)
    }

    /// Sums the f32 device buffers `views` (with their element counts) over all ranks, in
    /// buckets of at most `bucketBytes` staged through host memory: one collective per bucket.
    public func stagedAllReduceSum(_ views: [(view: BufferView, count: Int)], on backend: any Backend,
                                   bucketBytes: Int = 32 << 20) throws {
        guard size > 1 else { return }
        let capacity = max(1, min(bucketBytes / 4, views.reduce(0) { $0 + $1.count }))
        var staging = [Float](repeating: 0, count: capacity)
        var i = 0
        while i < views.count {
            // A bucket: consecutive buffers that fit (a larger buffer goes alone, in pieces).
            var j = i, used = 0
            while j < views.count, used + views[j].count <= capacity { used += views[j].count; j += 1 }
            if j == i {
                try reduceLarge(views[i].view, count: views[i].count, staging: &staging, on: backend)
                i += 1
                continue
            }
            try staging.withUnsafeMutableBufferPointer { buf in
                var at = 0
                for k in i..<j {
                    try backend.download(views[k].view, to: buf.baseAddress! + at, bytes: views[k].count * 4)
                    at += views[k].count
                }
                try allReduceSum(UnsafeMutableBufferPointer(rebasing: buf[0..<used]))
                at = 0
                for k in i..<j {
                    try backend.upload(buf.baseAddress! + at, to: views[k].view, bytes: views[k].count * 4)
                    at += views[k].count
                }
            }
            i = j
        }
    }

    private func reduceLarge(_ view: BufferView, count: Int, staging: inout [Float], on backend: any Backend) throws {
        let cap = staging.count
        try staging.withUnsafeMutableBufferPointer { buf in
            var done = 0
            while done < count {
                let n = min(cap, count - done)
                let part = BufferView(view.buffer, byteOffset: view.byteOffset + done * 4)
                try backend.download(part, to: buf.baseAddress!, bytes: n * 4)
                try allReduceSum(UnsafeMutableBufferPointer(rebasing: buf[0..<n]))
                try backend.upload(buf.baseAddress!, to: part, bytes: n * 4)
                done += n
            }
        }
    }

    public func broadcast(_ view: BufferView, count: Int, root: Int, on backend: any Backend) throws {
        try stagedBroadcast(view, count: count, root: root, on: backend)
    }

    public func startAllReduceSum(_ views: [(view: BufferView, count: Int)], on backend: any Backend) throws -> any PendingReduction {
        try allReduceSum(views, on: backend)
        return CompletedReduction()
    }

    /// Copies rank `root`'s f32 device buffer (`count` elements) into every rank's through host memory.
    public func stagedBroadcast(_ view: BufferView, count: Int, root: Int, on backend: any Backend) throws {
        guard size > 1, count > 0 else { return }
        var staging = [Float](repeating: 0, count: count)
        try staging.withUnsafeMutableBytes { raw in
            if rank == root { try backend.download(view, to: raw.baseAddress!, bytes: count * 4) }
            try broadcast(raw, root: root)
            if rank != root { try backend.upload(raw.baseAddress!, to: view, bytes: count * 4) }
        }
    }
}
