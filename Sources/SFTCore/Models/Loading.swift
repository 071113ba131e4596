// Loading a model from a WeightSource (GGUF file or HF folder): build the architecture the
// config names, then fill every parameter by its HF name. Strict: a missing key, an unused key
// or a wrong shape is an error naming the key.
//
// Loading straight into bf16 (a `precision: bf16` run): the model is built with its Linear
// weights deferred, the Linears the caller names (those that will stay frozen) get bf16
// tensors and the rest f32, then the loader fills each by its dtype. A bf16 tensor is filled
// from the file's bf16 bytes as they are, or else read as f32 (GGUF dequantized, f16/f32
// safetensors) into one f32 staging tensor and cast on the backend — the cast `setPrecision`
// uses, so the result is bit for bit the f32 load followed by `setPrecision(.bf16)` while
// the f32 model never exists (peak: the bf16 model plus one tensor).

import Foundation
import SFTKernels

extension Module {
    /// Fills every parameter under this module (LoRA adapters excepted) from `source`.
    /// `prefix` is prepended to this module's names; `ignoring` lists source keys that may stay
    /// unused (e.g. a tied LM head a checkpoint stores anyway).
    public func loadWeights(from source: WeightSource, prefix: String = "", ignoring: Set<String> = []) throws {
        var unused = Set(source.names)
        for (name, p) in namedParameters(prefix: prefix) where !name.contains(".lora_A.") && !name.contains(".lora_B.") {
            guard let shape = source.shape(of: name) else {
                throw SFTError.weights(key: name, message: "missing from the checkpoint (it has \(source.names.count) tensors)")
            }
            guard shape.reduce(1, *) == p.value.count, shape == p.value.shape || shape.filter({ $0 != 1 }) == p.value.shape.filter({ $0 != 1 }) else {
                throw SFTError.weights(key: name, message: "shape \(shape) in the checkpoint, \(p.value.shape) in the model")
            }
            try p.value.load(from: source, name: name)
            unused.remove(name)
        }
        unused.subtract(ignoring)
        unused = unused.filter { !$0.hasSuffix("rotary_emb.inv_freq") }
        if let key = unused.sorted().first {
            throw SFTError.weights(key: key, message: "not used by the model (\(unused.count) unused tensors)")
        }
        // The weights are in the model now: the file's pages read for them leave the RSS.
        source.releaseResidentPages()
    }
}

extension Module {
    /// Gives every Linear whose weight was deferred (`Linear.deferringWeights`) a zero weight
    /// to be loaded: bf16 for those `bf16` selects by module name, f32 for the rest.
    func allocateDeferredWeights(bf16: (String) -> Bool) throws {
        for (name, m) in namedModules() {
            guard let linear = m as? Linear, linear.quantized == nil, linear.hasPlaceholderWeight else { continue }
            let shape = [linear.outFeatures, linear.inFeatures]
            linear.weight.value = try Tensor.zeros(shape, dtype: bf16(name) ? .bf16 : .f32, on: linear.weight.value.backend)
        }
    }
}

extension Tensor {
    /// Overwrites this tensor with a tensor of `source`. f32: decoded on the host into a
    /// staging array, then uploaded through the backend (whatever its device). bf16: the
    /// stored bf16 bytes uploaded as they are, or the f32 values rounded to nearest even by
    /// the backend's cast.
    func load(from source: WeightSource, name: String) throws {
        switch dtype {
        case .f32:
            try assign(try source.loadF32(name))
        case .bf16:
            if let raw = source.storedBF16(name) {
                guard raw.count == count * 2, let base = raw.baseAddress else {
                    throw SFTError.weights(key: name, message: "\(raw.count) bytes of bf16 for \(count) values")
                }
                try backend.upload(base, to: storage, bytes: raw.count)
            } else {
                let staged = try Tensor(try source.loadF32(name), shape: shape, on: backend)
                try backend.cast(staged.storage, from: .f32, into: storage, to: .bf16, count: count)
            }
        default:
            throw SFTError.weights(key: name, message: "loading into a \(dtype) tensor is not supported")
        }
    }
}

/// A model loaded from disk with what came with it: the network alone, below `LanguageModel`
/// (which adds the tokenizer and chat template and is what a user holds).
public struct LoadedModel {
    /// The model, with its weights loaded.
    public let model: CausalLM
    /// The opened GGUF file or HF folder the weights came from (its config, tokenizer data and
    /// tensors stay readable).
    public let source: WeightSource
    /// The path the model was loaded from.
    public let url: URL
}

/// Loads a model's architecture and weights from a GGUF file or an HF folder (without its
/// tokenizer; `LanguageModel.load` loads both).
public enum ModelLoader {
    /// Builds the architecture `source.config` names and loads its weights.
    public static func load(_ source: WeightSource, on backend: Backend) throws -> CausalLM {
        let model = try ModelRegistry.build(config: source.config, on: backend)
        let ignoring: Set<String> = model.tiedEmbeddings ? ["lm_head.weight"] : []
        try model.loadWeights(from: source, ignoring: ignoring)
        return model
    }

    /// Builds the architecture and loads its weights with the Linears `bf16Linears` selects
    /// (by module name: the ones that stay frozen in a bf16 run) stored bf16 from the start;
    /// everything else f32. Equal to `load(_:on:)` then `setPrecision(.bf16)` once those are
    /// the frozen Linears, without the f32 copy of them.
    public static func load(_ source: WeightSource, on backend: Backend, bf16Linears: (String) -> Bool) throws -> CausalLM {
        guard backend.supports(.denseBF16) else {
            throw SFTError.config(field: "precision", message: "bf16 is not implemented on \(backend.device)")
        }
        let model = try Linear.deferringWeights { try ModelRegistry.build(config: source.config, on: backend) }
        try model.allocateDeferredWeights(bf16: bf16Linears)
        let ignoring: Set<String> = model.tiedEmbeddings ? ["lm_head.weight"] : []
        try model.loadWeights(from: source, ignoring: ignoring)
        return model
    }

    /// Opens a GGUF file or HF folder and loads the model.
    public static func load(at url: URL, on backend: Backend) throws -> LoadedModel {
        let source = try openWeights(at: url)
        return LoadedModel(model: try load(source, on: backend), source: source, url: url)
    }
}
