// Exact data parallelism (DESIGN.md "Data parallelism is exact"): N ranks train as one process
// with N× gradient accumulation.
//
// - Every rank builds the same data plan, with `gradient_accumulation_steps × ranks`
//   micro-batches per optimizer step, and runs micro-batches i ≡ rank (mod ranks) of each step.
//   The loss normalizer is the step's global trained-token count, known to every rank from
//   the plan, so each rank's summed gradients are its share of the one-process gradient.
// - Gradients are summed in buckets (`GradientBuckets`, PyTorch DDP's scheme): consecutive
//   parameters in reverse order, about `ddp_bucket_cap_mb` each. During the backward of a
//   rank's last micro-batch of the step, a bucket starts its all-reduce as soon as every
//   parameter in it has its final gradient, while the backward goes on; buckets start in
//   the same order on every rank. Then one small all-reduce carries the step's loss, a stop
//   flag and which parameters got a gradient anywhere (f64). Clipping and the update see the
//   same numbers on every rank; only the summation order differs from one process.
// - Dropout draws are keyed by the global micro-batch (`dropoutOffset`), not by the rank or by
//   what ran before on this process, so masks match one process exactly.
// - `zero_stage: 1` (ZeRO stage 1, Rajbhandari et al. 2020): AdamW's moments are split across
//   ranks by whole parameters (contiguous runs of the parameter list of about equal size, as
//   PyTorch's ZeroRedundancyOptimizer does); each rank updates the parameters it owns and
//   broadcasts them. The trainable weights are f32 and are the weights the forward uses, so
//   they are the master weights: sharding them too is ZeRO stage 3, not done here.
// - Rank 0 writes every file (checkpoints, metrics, outputs); sharded moments are gathered to
//   it for a checkpoint, which is therefore the same whatever the number of ranks.

import Foundation
import SFTKernels

/// Exact data parallelism for one rank of an mpirun/srun job: N ranks train as one process with N×
/// gradient accumulation. Gradients are all-reduced in buckets while the backward runs (as PyTorch
/// DDP); with `zero_stage` 1 AdamW's moments are sharded across ranks by whole parameters. Rank 0
/// writes every file. The file header (DataParallel.swift) gives the whole scheme.
public final class DataParallel {
    /// The communicator shared by the ranks (MPI, or `SingleProcessCollective` alone).
    public let collective: any Collective
    /// 0: every rank keeps all AdamW states; 1: each rank keeps and updates only the parameters it
    /// owns.
    public let zeroStage: Int
    /// Owner rank of each trainable parameter (by position in the trainer's parameter list).
    let owners: [Int]

    /// This process's rank, 0 ..< `size`.
    public var rank: Int { collective.rank }
    /// The number of ranks.
    public var size: Int { collective.size }
    /// Rank 0 writes the run's files.
    public var isWriter: Bool { collective.rank == 0 }

    /// The step's gradient all-reduces, started during the last micro-batch's backward.
    let buckets: GradientBuckets

    /// Sets up the gradient buckets and, for ZeRO stage 1, which rank owns each parameter.
    /// - Parameters:
    ///   - collective: the ranks' communicator.
    ///   - zeroStage: 0 or 1 (config key `zero_stage`).
    ///   - parameters: the trainer's trainable parameters, in its order (the same on every rank).
    ///   - bucketBytes: gradient bytes per all-reduce bucket (`ddp_bucket_cap_mb` × 2^20; default 25 MiB).
    /// - Throws: `SFTError.config` for `zero_stage` other than 0 or 1.
    public init(collective: any Collective, zeroStage: Int = 0, parameters: [(String, Parameter)],
                bucketBytes: Int = 25 << 20) throws {
        guard zeroStage == 0 || zeroStage == 1 else {
            throw SFTError.config(field: "zero_stage", message: "\(zeroStage) is not supported (0: replicated optimizer states, 1: sharded across ranks)")
        }
        self.collective = collective
        self.zeroStage = zeroStage
        buckets = GradientBuckets(parameters: parameters, collective: collective, bucketBytes: bucketBytes)
        owners = zeroStage == 1 ? DataParallel.partition(parameters.map { $0.1.value.count }, ranks: collective.size)
                                : [Int](repeating: -1, count: parameters.count)
    }

    /// Splits a list of sizes into `ranks` contiguous runs of about equal total: parameter i
    /// goes to the rank whose share holds its midpoint.
    public static func partition(_ sizes: [Int], ranks: Int) -> [Int] {
        let total = max(1, sizes.reduce(0, +))
        var before = 0
        return sizes.map { n in
            let mid = Double(before) + Double(n) / 2
            before += n
            return min(ranks - 1, Int(mid / Double(total) * Double(ranks)))
        }
    }

    /// Whether this rank keeps AdamW moments for parameter `index` and updates it.
    func owns(_ index: Int) -> Bool { zeroStage == 0 || owners[index] == rank }

    /// The micro-batches of a step this rank runs (indices into `step.batches`).
    func myMicroBatches(_ count: Int) -> [Int] { Array(stride(from: rank, to: count, by: size)) }

    /// The dropout counter at the start of micro-batch `index` of the plan (counted over the
    /// whole run): 2^36 draws per micro-batch, room for 2^28 micro-batches.
    static func dropoutOffset(globalMicroBatch index: Int) -> UInt64 { UInt64(index) << 36 }

    /// Backward of one of this rank's micro-batches; for the step's last one (`last`), the
    /// gradient buckets start their all-reduces as their gradients become final.
    func backward(_ loss: Tensor, last: Bool) throws {
        guard size > 1, last else { return try Autograd.backward(loss) }
        try buckets.backward(loss)
    }

    /// Sums what the ranks computed for one step: the gradients (the buckets not started
    /// during the backward start now; all are waited for), then the loss (f64), the stop
    /// request and which parameters have a gradient anywhere. A parameter without a gradient
    /// here is reduced as zeros; one with no gradient anywhere is left without one (and is not
    /// updated, as in one process).
    func reduceStep(parameters: [(String, Parameter)], loss: Double, stop: Bool) throws -> (loss: Double, stop: Bool) {
        guard size > 1 else { return (loss, stop) }
        let local = try buckets.finish()
        var head = [loss, stop ? 1 : 0] + local.map { $0 ? 1.0 : 0.0 }
        head = try collective.allReduceSum(head)
        for (i, (_, p)) in parameters.enumerated() where head[2 + i] == 0 { p.value.grad = nil }
        return (head[0], head[1] > 0)
    }

    /// ZeRO-1: every parameter from the rank that updated it.
    func shareUpdatedParameters(_ parameters: [(String, Parameter)]) throws {
        guard zeroStage == 1, size > 1 else { return }
        for (i, (_, p)) in parameters.enumerated() {
            try collective.broadcast(p.value.storage, count: p.value.count, root: owners[i], on: p.value.backend)
        }
    }

    /// AdamW's moments of every parameter, on rank 0 (other ranks get nil): gathered from
    /// their owners under ZeRO-1, read locally otherwise.
    func fullMoments(_ optimizer: AdamW, _ parameters: [(String, Parameter)]) throws -> [(m: [Float], v: [Float])]? {
        var out: [(m: [Float], v: [Float])] = []
        for (i, (name, p)) in parameters.enumerated() {
            if zeroStage == 0 || size == 1 {
                if isWriter { out.append((try optimizer.m[name]!.floats(), try optimizer.v[name]!.floats())) }
                continue
            }
            let n = p.value.count
            var mv = owns(i) ? (try optimizer.m[name]!.floats()) + (try optimizer.v[name]!.floats())
                             : [Float](repeating: 0, count: 2 * n)
            if owners[i] != 0 {   // every rank takes part; only rank 0 keeps the values
                try mv.withUnsafeMutableBytes { try collective.broadcast($0, root: owners[i]) }
            }
            if isWriter { out.append((Array(mv[0..<n]), Array(mv[n...]))) }
        }
        return isWriter ? out : nil
    }

    /// Checks that every rank runs the same data plan and settings as rank 0 (a job whose
    /// ranks were given different configs would otherwise train on a mix, or hang).
    func checkSameRun(_ fingerprint: [String: String]) throws {
        guard size > 1 else { return }
        let lines = fingerprint.sorted { $0.key < $1.key }.map { "\($0.key)\u{1}\($0.value)" }
        let rank0 = try atStep(0, "comparing the ranks' settings") { try collective.broadcast(lines.joined(separator: "\n")) }
        let theirs = Dictionary(rank0.split(separator: "\n").map { l -> (String, String) in
            let kv = l.split(separator: "\u{1}", maxSplits: 1, omittingEmptySubsequences: false)
            return (String(kv[0]), kv.count > 1 ? String(kv[1]) : "")
        }, uniquingKeysWith: { a, _ in a })
        for key in Set(theirs.keys).union(fingerprint.keys).sorted() where theirs[key] != fingerprint[key] {
            throw SFTError.config(field: key, message: "rank \(rank) has \(fingerprint[key] ?? "none"), rank 0 has \(theirs[key] ?? "none"): every rank of a job must run the same config")
        }
    }

    /// Wraps a collective's failure with the step it happened in.
    func atStep<T>(_ step: Int, _ what: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as CollectiveError {
            throw DataParallelError(step: step, operation: what, underlying: e)
        }
    }
}

/// A collective that failed during training, with the step and what it was doing.
public struct DataParallelError: Error, CustomStringConvertible {
    /// The optimizer step (1-based) during which the collective failed; 0 before training starts.
    public var step: Int
    /// What the rank was doing ("summing gradients", "sharing updated parameters", ...).
    public var operation: String
    /// The collective's own error (a timeout, a failed operation, an unusable library).
    public var underlying: CollectiveError
    public var description: String { "data parallel: step \(step), \(operation): \(underlying)" }
}

/// Gradient all-reduces in buckets, started while the backward still runs (the scheme of
/// PyTorch's DistributedDataParallel, Li et al. 2020).
///
/// Buckets are runs of consecutive parameters taken in reverse order (the backward reaches the
/// last layers first) of at most `bucketBytes` (a larger parameter is a bucket alone). The
/// backward reports every gradient it adds to a parameter (`Autograd.leafObserver`); a
/// parameter is final once it has had as many as in the first step's last backward (learned
/// then, with nothing started early: the graph of a micro-batch is the same every step).
/// Buckets start strictly in order, so every rank issues the same collectives in the same
/// order whenever its gradients are ready; whatever has not started when the backward ends
/// starts in `finish`, which also waits for all of them.
final class GradientBuckets: LeafGradientObserver, @unchecked Sendable {  // used by the training thread only
    let parameters: [(String, Parameter)]
    let collective: any Collective
    /// Parameter indices per bucket, in launch order.
    let buckets: [[Int]]
    private let bucketOf: [Int]
    private let index: [ObjectIdentifier: Int]
    /// Gradient additions per parameter in one micro-batch's backward (nil until learned).
    private(set) var expected: [Int]?
    private var seen: [Int]
    private var started = 0
    private var pending: [any PendingReduction] = []
    /// Whether each parameter had a gradient on this rank when its bucket started.
    private var hadGradient: [Bool]
    /// Buckets started before the backward ended, and in all, over the run (for the log).
    private(set) var startedEarly = 0, startedTotal = 0

    init(parameters: [(String, Parameter)], collective: any Collective, bucketBytes: Int) {
        self.parameters = parameters
        self.collective = collective
        var buckets: [[Int]] = [], current: [Int] = [], bytes = 0
        for i in parameters.indices.reversed() {
            let b = parameters[i].1.value.count * 4
            if !current.isEmpty && bytes + b > bucketBytes { buckets.append(current); current = []; bytes = 0 }
            current.append(i)
            bytes += b
        }
        if !current.isEmpty { buckets.append(current) }
        self.buckets = buckets
        var bucketOf = [Int](repeating: 0, count: parameters.count)
        for (b, members) in buckets.enumerated() { for i in members { bucketOf[i] = b } }
        self.bucketOf = bucketOf
        index = Dictionary(uniqueKeysWithValues: parameters.enumerated().map { (ObjectIdentifier($0.element.1.value), $0.offset) })
        seen = [Int](repeating: 0, count: parameters.count)
        hadGradient = [Bool](repeating: false, count: parameters.count)
    }

    /// The last micro-batch's backward, starting buckets as they become final.
    func backward(_ loss: Tensor) throws {
        seen = [Int](repeating: 0, count: parameters.count)
        try Autograd.observingLeafGradients(self) { try Autograd.backward(loss) }
        if expected == nil { expected = seen }
        startedEarly += started
    }

    func gradientAdded(_ leaf: Tensor) throws {
        guard let i = index[ObjectIdentifier(leaf)] else { return }
        seen[i] += 1
        guard let expected else { return }
        if bucketOf[i] < started {
            throw SFTError.unsupported("data parallel: a gradient of \(parameters[i].0) arrived after its bucket's all-reduce started (\(seen[i]) additions, \(expected[i]) expected from the first step): the backward graph changed between steps")
        }
        while started < buckets.count, buckets[started].allSatisfy({ seen[$0] >= expected[$0] }) { try start() }
        for p in pending { try p.progress() }
    }

    private func start() throws {
        var views: [(view: BufferView, count: Int)] = []
        for i in buckets[started] {
            let v = parameters[i].1.value
            hadGradient[i] = v.grad != nil
            if v.grad == nil { v.grad = try Tensor.zeros(v.shape, on: v.backend) }
            views.append((v.grad!.storage, v.count))
        }
        pending.append(try collective.startAllReduceSum(views, on: parameters[buckets[started][0]].1.value.backend))
        started += 1
        startedTotal += 1
    }

    /// Starts the buckets not started yet, waits for every one, and returns which parameters
    /// had a gradient on this rank; then resets for the next step.
    func finish() throws -> [Bool] {
        while started < buckets.count { try start() }
        for p in pending { try p.wait() }
        pending.removeAll()
        started = 0
        return hadGradient
    }
}
