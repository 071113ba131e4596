// Module and Parameter: the tree models are built from, with HF-style dotted names
// (`model.layers.0.self_attn.q_proj.weight`) so checkpoints load and save by name.
//
// A Parameter is a box around a tensor, so loaders, LoRA and optimizers can replace or update
// the tensor without the module knowing. Modules list their children and their own parameters;
// everything else (walks, counting, freezing) is derived here once.

import Foundation
import SFTKernels

/// A named weight of a module: a reference box around a tensor, so loaders, LoRA and the
/// optimizer can replace or update the tensor without the module knowing.
public final class Parameter {
    /// The current tensor (its shape is the HF checkpoint's).
    public var value: Tensor
    /// Trainable parameters accumulate gradients and are updated by the optimizer.
    public var trainable: Bool {
        get { value.requiresGrad }
        set { value.requiresGrad = newValue; if !newValue { value.grad = nil } }
    }
    /// Boxes `value`.
    /// - Parameters:
    ///   - value: The tensor.
    ///   - trainable: Whether it takes gradients (sets `value.requiresGrad`).
    public init(_ value: Tensor, trainable: Bool = false) {
        self.value = value
        self.value.requiresGrad = trainable
    }
}

/// A node of a model's tree: its own parameters and named children, from which dotted HF-style
/// names (`model.layers.0.self_attn.q_proj.weight`) are derived for loading, saving, LoRA
/// targeting and freezing. Subclasses override `children` and `localParameters`.
open class Module {
    /// An empty module (subclasses set up their parameters and children).
    public init() {}

    /// Sub-modules by their local checkpoint name (`self_attn`, `layers.3`, `q_proj`).
    open var children: [(String, Module)] { [] }
    /// This module's own parameters by local name (`weight`, `bias`).
    open var localParameters: [(String, Parameter)] { [] }

    /// Every parameter under this module with its dotted name.
    public func namedParameters(prefix: String = "") -> [(String, Parameter)] {
        var out: [(String, Parameter)] = []
        walk(prefix: prefix) { name, module in
            for (p, param) in module.localParameters { out.append((join(name, p), param)) }
        }
        return out
    }

    /// Every module under (and including) this one with its dotted name.
    public func namedModules(prefix: String = "") -> [(String, Module)] {
        var out: [(String, Module)] = []
        walk(prefix: prefix) { out.append(($0, $1)) }
        return out
    }

    private func walk(prefix: String, _ visit: (String, Module) -> Void) {
        visit(prefix, self)
        for (n, c) in children { c.walk(prefix: join(prefix, n), visit) }
    }

    /// The parameters under this module that take gradients, with their dotted names.
    public var trainableParameters: [(String, Parameter)] { namedParameters().filter { $0.1.trainable } }

    /// Number of scalar parameters (all, or only trainable).
    public func parameterCount(trainableOnly: Bool = false) -> Int {
        namedParameters().filter { !trainableOnly || $0.1.trainable }.reduce(0) { $0 + $1.1.value.count }
    }

    /// Freezes or unfreezes every parameter under this module.
    public func setTrainable(_ on: Bool) {
        for (_, p) in namedParameters() { p.trainable = on }
    }

    /// Drops accumulated gradients (start of an optimizer step).
    public func zeroGrad() {
        for (_, p) in namedParameters() { p.value.grad = nil }
    }
}

@inline(__always) func join(_ a: String, _ b: String) -> String { a.isEmpty ? b : (b.isEmpty ? a : a + "." + b) }
