// Quantize-on-load: the model is built with no f32 Linear weights, then each selected Linear's
// weight is read from the checkpoint as f32, quantized to 4 bits and the f32 copy dropped,
// tensor by tensor, so peak host memory stays near the quantized model plus one f32 tensor.
// The strict loader then fills everything else (norms, embeddings, the LM head) and is told
// to expect the quantized keys as already consumed.
//
// A quantized Linear keeps its `weight` Parameter (other code holds it) with an empty
// (0, in) placeholder tensor, and stops listing it as a parameter; `dequantize()` turns it
// back into an ordinary f32 Linear.

import Foundation
import SFTKernels

extension Linear {
    /// When true, new Linears allocate a (0, in) placeholder instead of their f32 weight
    /// (task-local: set only inside `deferringWeights`).
    @TaskLocal static var deferWeights = false

    /// Runs `body` (a model constructor) with Linear weight allocation deferred: the weights
    /// are created by `quantizeLinears(in:from:…)`, or allocated as f32 there when skipped.
    public static func deferringWeights<R>(_ body: () throws -> R) rethrows -> R {
        try $deferWeights.withValue(true, operation: body)
    }

    /// Whether the f32 weight is an empty placeholder (deferred, or dropped by quantization).
    public var hasPlaceholderWeight: Bool { weight.value.count == 0 && outFeatures * inFeatures > 0 }

    /// Replaces the weight with its 4-bit form built from `values` (row-major (out, in)).
    public func setQuantized(_ values: UnsafeBufferPointer<Float>, config: QuantizationConfig) throws {
        let be = weight.value.backend
        quantized = try QuantizedWeight(quantizing: values, shape: [outFeatures, inFeatures], config: config, on: be)
        weight.value = try Tensor.zeros([0, inFeatures], on: be)
    }

    /// Quantizes the current f32 weight in place (a model already in memory).
    public func quantize(_ config: QuantizationConfig) throws {
        guard quantized == nil else { return }
        guard !hasPlaceholderWeight else {
            throw SFTError.weights(key: "weight", message: "this Linear has no f32 weight to quantize (built with deferred weights)")
        }
        let w = try weight.value.floats()
        try w.withUnsafeBufferPointer { try setQuantized($0, config: config) }
    }

    /// Turns a 4-bit Linear back into an f32 one holding the dequantized weight.
    public func dequantize() throws {
        guard let q = quantized else { return }
        let be = weight.value.backend
        weight.value = try Tensor(try q.dequantize(), shape: [outFeatures, inFeatures], on: be)
        quantized = nil
    }
}

extension Module {
    /// Checkpoint keys (`….weight`) of the Linears under this module that are 4-bit: the
    /// strict loader must not expect them among the parameters.
    public func quantizedWeightNames(prefix: String = "") -> Set<String> {
        Set(namedModules(prefix: prefix).compactMap { name, m in
            (m as? Linear)?.quantized == nil ? nil : join(name, "weight")
        })
    }

    /// Bytes held by the 4-bit weights under this module.
    public var quantizedBytes: Int {
        namedModules().reduce(0) { $0 + (($1.1 as? Linear)?.quantized?.byteCount ?? 0) }
    }

    /// Quantizes, in place, the Linears of a model already in memory (all but `skip`).
    /// Returns the quantized module names.
    @discardableResult
    public func quantizeLinears(config: QuantizationConfig, skip: [String] = ["lm_head"]) throws -> [String] {
        try config.validate()
        var done: [String] = []
        for (name, linear) in try selectedLinears(skip: skip) {
            try linear.quantize(config)
            done.append(name)
        }
        weightBackend?.emptyCache()
        return done
    }

    /// Linears by name, those named in `skip` (last name component, full name or suffix)
    /// left out; `skip` must leave out the LM head of a CausalLM (its fused loss reads f32).
    func selectedLinears(skip: [String]) throws -> [(String, Linear)] {
        let head = (self as? CausalLM)?.lmHeadWeight
        var out: [(String, Linear)] = []
        for (name, m) in namedModules() {
            guard let linear = m as? Linear else { continue }
            let last = name.split(separator: ".").last.map(String.init) ?? name
            if skip.contains(where: { $0 == last || $0 == name || name.hasSuffix("." + $0) }) { continue }
            if let head, head === linear.weight {
                throw SFTError.config(field: "skip", message: "'\(name)' is the LM head, which stays f32 (the fused cross-entropy reads it); add it to skip")
            }
            out.append((name, linear))
        }
        return out
    }

    var weightBackend: Backend? { namedParameters().first?.1.value.backend }
}

/// Quantizes every Linear of `model` not named in `skip` from `source`, one tensor at a time:
/// read as f32, quantize, drop the f32. Skipped Linears whose weight was deferred get a zero
/// weight for the loader to fill: bf16 where `bf16Linears` selects them (frozen in a bf16 run),
/// else f32. Returns the quantized module names.
///
/// ```swift
/// let model = try Linear.deferringWeights { try ModelRegistry.build(config: source.config, on: cpu) }
/// let names = try quantizeLinears(in: model, from: source, config: QuantizationConfig(type: .nf4))
/// try model.loadWeights(from: source, ignoring: model.quantizedWeightNames())
/// ```
/// (`ModelLoader.load(_:on:quantization:)` does all three.)
@discardableResult
public func quantizeLinears(in model: Module, from source: WeightSource, config: QuantizationConfig,
                            skip: [String] = ["lm_head"], bf16Linears: (String) -> Bool = { _ in false }) throws -> [String] {
    try config.validate()
    let selected = try model.selectedLinears(skip: skip)
    var done: [String] = []
    for (name, linear) in selected {
        let key = join(name, "weight")
        guard let shape = source.shape(of: key) else {
            throw SFTError.weights(key: key, message: "missing from the checkpoint (it has \(source.names.count) tensors)")
        }
        let want = [linear.outFeatures, linear.inFeatures]
        guard shape.reduce(1, *) == want.reduce(1, *), shape.filter({ $0 != 1 }) == want.filter({ $0 != 1 }) else {
            throw SFTError.weights(key: key, message: "shape \(shape) in the checkpoint, \(want) in the model")
        }
        let n = want.reduce(1, *)
        let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        defer { buffer.deallocate() }
        try source.loadF32(key, into: buffer.baseAddress!)
        try linear.setQuantized(UnsafeBufferPointer(buffer), config: config)
        done.append(name)
    }
    try model.allocateDeferredWeights(bf16: bf16Linears)
    // Blocks freed by dropped f32 weights go back to the system, not to the allocator's cache.
    model.weightBackend?.emptyCache()
    return done
}

extension ModelLoader {
    /// Builds the architecture `source.config` names with its Linears (but `skip`) in 4 bits,
    /// quantized while loading, then loads the remaining weights strictly (the skipped Linears
    /// `bf16Linears` selects straight into bf16, as `load(_:on:bf16Linears:)`).
    public static func load(_ source: WeightSource, on backend: Backend, quantization: QuantizationConfig,
                            skip: [String] = ["lm_head"], bf16Linears: (String) -> Bool = { _ in false }) throws -> CausalLM {
        let model = try Linear.deferringWeights { try ModelRegistry.build(config: source.config, on: backend) }
        try quantizeLinears(in: model, from: source, config: quantization, skip: skip, bf16Linears: bf16Linears)
        var ignoring = model.quantizedWeightNames()
        if model.tiedEmbeddings { ignoring.insert("lm_head.weight") }
        try model.loadWeights(from: source, ignoring: ignoring)
        return model
    }
}
