// NCCL for data parallelism on GPUs (DESIGN.md "Collective"): one communicator over the ranks
// of an MPI job, one GPU per rank. Gradient all-reduces and parameter broadcasts run on the
// CUDA backend's stream, in place in device memory; everything else (the step's few f64
// values, strings, barriers, abort) goes through the MPI group it wraps, which also carries
// NCCL's unique id from rank 0 to the others at start.
//
// NCCL's collectives are asynchronous on the stream. Every one is waited for on the host
// before its buffers are used (`waitForWork`: a CUDA event recorded after it, and
// ncclCommGetAsyncError, polled): a rank that stops answering turns into
// `CollectiveError.timeout` after `timeout` (collective_timeout) seconds and the communicator
// is aborted (ncclCommAbort), as for the MPI operations, instead of a GPU that waits forever.
// `startAllReduceSum` enqueues and returns, so gradient buckets are reduced while the backward
// goes on; the wait comes before the optimizer reads them. (The reduction runs on the compute
// stream, behind the kernels enqueued before it: on a GPU it does not yet overlap with the
// backward's later kernels — that needs a second stream.)

import CSFTKernels
import Foundation

/// A collective whose device-buffer reductions run in GPU memory over NCCL (one GPU per rank);
/// host-memory operations, rank and size are the wrapped host group's.
public final class NCCLCollective: Collective {
    /// The process group (MPI) NCCL was bootstrapped over; it carries host-memory collectives.
    public let host: any Collective
    /// The GPU this rank's communicator and reductions run on.
    public let backend: CUDABackend
    private var comm: UnsafeMutableRawPointer?
    /// Recorded after enqueued collectives to see from the host when they are done.
    private var done: sft_CUevent?

    /// Joins every rank of `host` into one NCCL communicator on `backend`'s GPU.
    /// - Throws: `CollectiveError.unavailable` when NCCL is not found, `.failed` when it fails.
    public init(host: any Collective, backend: CUDABackend) throws {
        guard sft_nccl_load() == 0 else { throw CollectiveError.unavailable("NCCL (libnccl.so.2) not found: \(NCCLLibrary.tried)") }
        self.host = host
        self.backend = backend
        var id = [UInt8](repeating: 0, count: Int(SFT_NCCL_UNIQUE_ID_BYTES))
        if host.rank == 0 {
            guard sft_nccl_unique_id(&id) == 0 else { throw CollectiveError.failed(operation: "NCCL setup", message: lastError) }
        }
        try id.withUnsafeMutableBytes { try host.broadcast($0, root: 0) }
        try backend.bind()
        var c: UnsafeMutableRawPointer?
        guard sft_nccl_comm_init(&c, Int32(host.size), id, Int32(host.rank)) == 0 else {
            throw CollectiveError.failed(operation: "NCCL setup", message: lastError)
        }
        comm = c
        try backend.check(sft_cuEventCreate(&done, UInt32(SFT_CU_EVENT_DISABLE_TIMING)), "cuEventCreate")
    }

    deinit { _ = sft_nccl_comm_destroy(comm) }

    /// Waits until the work enqueued so far on the stream (and NCCL's own) has finished, at
    /// most `timeout` seconds (0: forever); on timeout the communicator is aborted.
    func waitForWork(_ operation: String) throws {
        guard let comm else { throw CollectiveError.failed(operation: operation, message: "the NCCL communicator was aborted") }
        try backend.bind()
        try backend.check(sft_cuEventRecord(done, backend.stream), "cuEventRecord")
        let start = Date()
        var polls = 0
        while true {
            let event = sft_cuEventQuery(done)
            if event != 0 && event != Int32(SFT_CUDA_ERROR_NOT_READY) {
                throw CollectiveError.failed(operation: operation, message: "cuEventQuery: \(cudaErrorText(event))")
            }
            let state = sft_nccl_async_state(comm)
            if state < 0 { throw CollectiveError.failed(operation: operation, message: lastError) }
            if event == 0 && state == 0 { return }
            if timeout > 0, polls % 16 == 0, Date().timeIntervalSince(start) > timeout {
                _ = sft_nccl_comm_abort(comm)
                self.comm = nil
                throw CollectiveError.timeout(operation: operation, seconds: timeout)
            }
            polls += 1
            if polls > 200 { usleep(polls > 20000 ? 1000 : 50) }   // leave the cores to ranks still computing
        }
    }

    private var lastError: String { String(cString: sft_last_error()) }

    public var rank: Int { host.rank }
    public var size: Int { host.size }
    public var timeout: Double {
        get { host.timeout }
        set { host.timeout = newValue }
    }
    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws { try host.allReduceSum(values) }
    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>) throws { try host.allReduceSum(values) }
    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws { try host.broadcast(bytes, root: root) }
    public func barrier() throws { try host.barrier() }
    public func abort(code: Int32) -> Never { host.abort(code: code) }
    public func finish() throws {
        _ = sft_nccl_comm_destroy(comm)
        comm = nil
        try host.finish()
    }
    public var summary: String { "\(host.summary), \(NCCLLibrary.version ?? "NCCL") on the GPUs" }

    /// One ncclAllReduce per buffer, grouped into one launch, waited for.
    public func allReduceSum(_ views: [(view: BufferView, count: Int)], on backend: any Backend) throws {
        try startAllReduceSum(views, on: backend).wait()
    }

    public func startAllReduceSum(_ views: [(view: BufferView, count: Int)], on backend: any Backend) throws -> any PendingReduction {
        guard size > 1, !views.isEmpty else { return CompletedReduction() }
        guard backend === self.backend else {
            try stagedAllReduceSum(views, on: backend)
            return CompletedReduction()
        }
        try enqueueAllReduce(views)
        return NCCLReduction(collective: self)
    }

    private func enqueueAllReduce(_ views: [(view: BufferView, count: Int)]) throws {
        guard let comm else { throw CollectiveError.failed(operation: "all-reduce", message: "the NCCL communicator was aborted") }
        try self.backend.bind()
        try check(sft_nccl_group(1), "all-reduce")
        var failure: CollectiveError?
        for v in views where v.count > 0 && failure == nil {
            if sft_nccl_allreduce_sum_f32(self.backend.address(v.view), v.count, comm, self.backend.stream) != 0 {
                failure = .failed(operation: "all-reduce", message: lastError)
            }
        }
        try check(sft_nccl_group(0), "all-reduce")
        if let failure { throw failure }
    }

    public func broadcast(_ view: BufferView, count: Int, root: Int, on backend: any Backend) throws {
        guard size > 1, count > 0 else { return }
        guard backend === self.backend else { return try stagedBroadcast(view, count: count, root: root, on: backend) }
        try self.backend.bind()
        guard let comm else { throw CollectiveError.failed(operation: "broadcast", message: "the NCCL communicator was aborted") }
        try check(sft_nccl_broadcast(self.backend.address(view), count * 4, Int32(root), comm, self.backend.stream), "broadcast")
        try waitForWork("NCCL broadcast")
    }

    private func check(_ status: Int32, _ operation: String) throws {
        if status != 0 { throw CollectiveError.failed(operation: operation, message: lastError) }
    }
}

/// NCCL all-reduces enqueued on the stream; `wait` waits for them from the host.
final class NCCLReduction: PendingReduction {
    private let collective: NCCLCollective
    private var finished = false
    init(collective: NCCLCollective) { self.collective = collective }
    func progress() {}
    func wait() throws {
        guard !finished else { return }
        try collective.waitForWork("NCCL all-reduce")
        finished = true
    }
}

/// NCCL as found on this machine (for `sftctl inspect --devices` and logs).
public enum NCCLLibrary {
    /// The loaded file, or nil (see `tried`).
    public static var path: String? { sft_nccl_load() == 0 ? String(cString: sft_nccl_lib_path()) : nil }
    /// Every place searched, with why each was rejected.
    public static var tried: String { String(cString: sft_nccl_tried()) }
    /// "NCCL 2.27.3" ("sft emulated NCCL ..." for tools/cuda-emulate's), nil when not loaded.
    public static var version: String? {
        let code = Int(sft_nccl_version())
        guard code >= 0 else { return nil }
        // NCCL_VERSION_CODE: major*10000 + minor*100 + patch from 2.9 on, major*1000 + ... before.
        let text = code >= 10000 ? "NCCL \(code / 10000).\(code / 100 % 100).\(code % 100)"
                                 : "NCCL \(code / 1000).\(code / 100 % 10).\(code % 100)"
        if let emu = sft_nccl_emulation() { return "\(text) (\(String(cString: emu)))" }
        return text
    }
}

/// The group to train with on `backend`: `group` itself, or on CUDA with more than one rank an
/// NCCLCollective over it when NCCL loads (`note` says which and why).
public func deviceCollective(_ group: any Collective, for backend: any Backend) throws -> (group: any Collective, note: String?) {
    guard group.size > 1, let cuda = backend as? CUDABackend else { return (group, nil) }
    guard NCCLLibrary.path != nil else {
        return (group, "NCCL not found, gradients are summed through host memory (searched: \(NCCLLibrary.tried))")
    }
    return (try NCCLCollective(host: group, backend: cuda), nil)
}
