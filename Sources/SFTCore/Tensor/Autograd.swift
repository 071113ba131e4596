// Reverse-mode autograd over a graph of coarse ops.
//
// Each recorded op leaves a GradNode on its output: the inputs and a closure mapping the
// output's gradient to the inputs' gradients. `backward` walks the graph once in reverse
// topological order. Weight gradients of the fused ops are accumulated straight into the
// leaf's `grad` by the kernels (+=), and the closure returns nil for that input; gradients
// returned for leaves are added to `grad`. Gradient accumulation over micro-batches is
// therefore free: call backward again before zeroing.
//
// Gradient checkpointing (`checkpoint`) runs a block without recording, then re-runs it with
// recording during backward — one decoder layer's activations live at a time.
//
// Modes are scoped, never global: whether ops record (`withNoGrad`) and whether the model
// trains (`training`, which also carries the run's `RandomStream`) are task-local values, so
// two models on two threads or tasks never see each other's mode.

import Foundation
import SFTKernels
import Synchronization

/// The random stream of a training run: dropout masks and NEFTune noise are drawn from
/// (`seed`, `offset`), and each draw advances `offset` by the values it took. The trainer sets
/// the offset per micro-batch (so the masks do not depend on the number of ranks), a checkpoint
/// saves it, and checkpoint recomputation rewinds it to redraw the same masks.
public final class RandomStream: Sendable {
    /// The run's seed (the `seed` config key).
    public let seed: UInt64
    private let position: Mutex<UInt64>

    /// A stream at `offset` values past the start of `seed`'s sequence.
    /// - Parameters:
    ///   - seed: The run's seed.
    ///   - offset: Values already drawn (a resumed run's saved offset).
    public init(seed: UInt64, offset: UInt64 = 0) {
        self.seed = seed
        position = Mutex(offset)
    }

    /// The next value's index in the stream.
    public var offset: UInt64 {
        get { position.withLock { $0 } }
        set { position.withLock { $0 = newValue } }
    }

    /// Returns the offset of the next `count` values and moves past them.
    public func take(_ count: Int) -> UInt64 {
        position.withLock { o in
            defer { o &+= UInt64(count) }
            return o
        }
    }
}

final class GradNode {
    let op: String
    let inputs: [GradEdge]
    let backward: (Tensor) throws -> [Tensor?]

    init(op: String, inputs: [GradEdge], backward: @escaping (Tensor) throws -> [Tensor?]) {
        self.op = op
        self.inputs = inputs
        self.backward = backward
    }
}

/// Where an op input's gradient goes. A node holds the producing node of each input, not the
/// input tensor: an activation stays alive only if some backward closure captured it, so
/// outputs that no backward needs (a Linear's output before the LoRA sum, q before RoPE) are
/// freed during the forward pass.
enum GradEdge {
    case node(GradNode)
    case leaf(Tensor)
    case none

    init(_ t: Tensor) {
        if let n = t.node { self = .node(n) } else if t.requiresGrad { self = .leaf(t) } else { self = .none }
    }
}

/// Sees each gradient the backward adds to a leaf (`Autograd.leafObserver`). Used from the
/// thread running the backward only.
protocol LeafGradientObserver: AnyObject, Sendable {
    func gradientAdded(_ leaf: Tensor) throws
}

/// Reverse-mode differentiation: ops record their backward on the tensors they make, and
/// `backward` runs them. Recording and the training mode are task-local, so they apply to the
/// current task (and its children) only.
public enum Autograd {
    @TaskLocal static var recording = true
    @TaskLocal static var trainingStream: RandomStream? = nil

    /// Whether ops record their backward (off inside `withNoGrad`).
    public static var isEnabled: Bool { recording }
    /// Training mode (inside `training`): dropout and NEFTune noise are active.
    public static var isTraining: Bool { trainingStream != nil }
    /// The random stream of the training run in progress (nil outside `training`).
    public static var random: RandomStream? { trainingStream }

    /// Called with a leaf (a parameter) each time the backward has added to its gradient —
    /// after a node whose input it is ran, including nodes whose kernels add into the
    /// gradient themselves — and in checkpointed blocks' recomputed backwards too. Data
    /// parallelism uses it to start all-reduces of finished gradients early.
    @TaskLocal static var leafObserver: (any LeafGradientObserver)? = nil

    /// Runs `body` (a backward) with `observer` seeing every gradient added to a leaf.
    static func observingLeafGradients<R>(_ observer: any LeafGradientObserver, _ body: () throws -> R) rethrows -> R {
        try $leafObserver.withValue(observer, operation: body)
    }

    /// Runs `body` without recording a graph (inference, evaluation).
    public static func withNoGrad<R>(_ body: () throws -> R) rethrows -> R {
        try $recording.withValue(false, operation: body)
    }

    static func withGrad<R>(_ body: () throws -> R) rethrows -> R {
        try $recording.withValue(true, operation: body)
    }

    /// Runs `body` in training mode, drawing dropout masks and noise from `random`.
    public static func training<R>(_ random: RandomStream, _ body: () throws -> R) rethrows -> R {
        try $trainingStream.withValue(random, operation: body)
    }

    /// Records `node` on `output` when any input needs a gradient.
    static func record(_ output: Tensor, op: String, inputs: [Tensor],
                       backward: @escaping (Tensor) throws -> [Tensor?]) {
        guard isEnabled, inputs.contains(where: { $0.requiresGrad }) else { return }
        output.requiresGrad = true
        output.node = GradNode(op: op, inputs: inputs.map(GradEdge.init), backward: backward)
    }

    /// Back-propagates from `root` (a scalar unless `gradient` is given).
    public static func backward(_ root: Tensor, gradient: Tensor? = nil) throws {
        guard root.requiresGrad else {
            throw SFTError.shape(op: "backward", message: "the tensor does not depend on any parameter that requires a gradient")
        }
        let seed: Tensor
        if let g = gradient {
            guard g.shape == root.shape else {
                throw SFTError.shape(op: "backward", message: "gradient \(g.shape) for tensor \(root.shape)")
            }
            seed = g
        } else {
            guard root.count == 1 else {
                throw SFTError.shape(op: "backward", message: "implicit gradient needs a scalar, got \(root.shape)")
            }
            seed = try Tensor([1], shape: root.shape, on: root.backend)
        }

        guard let rootNode = root.node else {
            try accumulate(seed, into: root)  // a leaf: its gradient is the seed
            try leafObserver?.gradientAdded(root)
            return
        }
        // Topological order of the nodes by iterative DFS.
        var order: [GradNode] = []
        var visited = Set<ObjectIdentifier>()
        var stack: [(GradNode, Bool)] = [(rootNode, false)]
        while let (n, expanded) = stack.popLast() {
            if expanded { order.append(n); continue }
            guard visited.insert(ObjectIdentifier(n)).inserted else { continue }
            stack.append((n, true))
            for case .node(let i) in n.inputs where !visited.contains(ObjectIdentifier(i)) { stack.append((i, false)) }
        }

        var grads: [ObjectIdentifier: Tensor] = [ObjectIdentifier(rootNode): seed]
        try withNoGrad {
            for node in order.reversed() {
                guard let g = grads.removeValue(forKey: ObjectIdentifier(node)) else { continue }
                let inputGrads = try node.backward(g)
                for (edge, ig) in zip(node.inputs, inputGrads) {
                    if case .leaf(let t) = edge {
                        if let ig { try accumulate(ig, into: t) }
                        try leafObserver?.gradientAdded(t)
                        continue
                    }
                    guard let ig else { continue }
                    switch edge {
                    case .none, .leaf: continue
                    case .node(let n):
                        let id = ObjectIdentifier(n)
                        if let existing = grads[id] {
                            // Never add into a tensor the backward closure might still hold.
                            let sum = try Tensor(empty: existing.shape, on: existing.backend)
                            try sum.backend.add(existing.storage, ig.storage, into: sum.storage, count: sum.count)
                            grads[id] = sum
                        } else {
                            grads[id] = ig
                        }
                    }
                }
            }
        }
    }

    /// leaf.grad += g
    static func accumulate(_ g: Tensor, into leaf: Tensor) throws {
        guard g.shape.reduce(1, *) == leaf.count else {
            throw SFTError.shape(op: "backward", message: "gradient \(g.shape) for leaf \(leaf.shape)")
        }
        let buf = try leaf.gradBuffer()
        try leaf.backend.axpy(alpha: 1, g.storage, buf.storage, count: leaf.count)
    }

    /// Gradient checkpointing: runs `body` without keeping its activations and recomputes
    /// them during backward. `inputs` are the tensors `body` reads that are not parameters.
    public static func checkpoint(_ inputs: [Tensor], _ body: @escaping ([Tensor]) throws -> Tensor) throws -> Tensor {
        guard isEnabled else { return try body(inputs) }
        let random = trainingStream, savedOffset = random?.offset
        let out = try withNoGrad { try body(inputs) }
        let result = out.detached()
        // Recorded even when no input needs a gradient: parameters used inside `body` get
        // theirs during the recomputation's own backward.
        result.requiresGrad = true
        result.node = GradNode(op: "checkpoint", inputs: inputs.map(GradEdge.init)) { g in
            let detachedInputs = inputs.map { $0.detached(requiresGrad: $0.requiresGrad) }
            // The recomputation runs in the forward's mode and redraws its masks.
            let resumeOffset = random?.offset
            if let random, let savedOffset { random.offset = savedOffset }
            let recomputed = try $trainingStream.withValue(random) { try withGrad { try body(detachedInputs) } }
            if let random, let resumeOffset { random.offset = resumeOffset }
            if recomputed.requiresGrad { try backward(recomputed, gradient: g) }
            return detachedInputs.map { $0.grad }
        }
        return result
    }
}
