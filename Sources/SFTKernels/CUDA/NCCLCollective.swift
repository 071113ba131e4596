// NCCL for data parallelism on GPUs (DESIGN.md "Collective"): one communicator over the ranks
// of an MPI job, one GPU per rank. Gradient all-reduces and parameter broadcasts run on the
// CUDA backend's stream, in place in device memory; everything else (the step's few f64
// values, strings, barriers, abort) goes through the MPI group it wraps, which also carries
// NCCL's unique id from rank 0 to the others at start.
//
// NCCL's collectives are asynchronous on the stream: `timeout` (collective_timeout) bounds the
// MPI operations around them, not a GPU-side wait.

import CSFTKernels
import Foundation

public final class NCCLCollective: Collective {
    public let host: any Collective
    public let backend: CUDABackend
    private var comm: UnsafeMutableRawPointer?

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
    }

    deinit { _ = sft_nccl_comm_destroy(comm) }

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

    /// One ncclAllReduce per buffer, grouped into one launch.
    public func allReduceSum(_ views: [(view: BufferView, count: Int)], on backend: any Backend) throws {
        guard size > 1, !views.isEmpty else { return }
        guard backend === self.backend else { return try stagedAllReduceSum(views, on: backend) }
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
        try check(sft_nccl_broadcast(self.backend.address(view), count * 4, Int32(root), comm, self.backend.stream), "broadcast")
    }

    private func check(_ status: Int32, _ operation: String) throws {
        if status != 0 { throw CollectiveError.failed(operation: operation, message: lastError) }
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
