// Loading a model from a WeightSource (GGUF file or HF folder): build the architecture the
// config names, then fill every parameter by its HF name. Strict: a missing key, an unused key
// or a wrong shape is an error naming the key.

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
    }
}

extension Tensor {
    /// Overwrites this f32 tensor with a tensor of `source`: decoded on the host into a
    /// staging array, then uploaded through the backend (whatever its device).
    func load(from source: WeightSource, name: String) throws {
        try assign(try source.loadF32(name))
    }
}

/// A model loaded from disk with what came with it: the network alone, below `LanguageModel`
/// (which adds the tokenizer and chat template and is what a user holds).
public struct LoadedModel {
    public let model: CausalLM
    public let source: WeightSource
    public let url: URL
}

public enum ModelLoader {
    /// Builds the architecture `source.config` names and loads its weights.
    public static func load(_ source: WeightSource, on backend: Backend) throws -> CausalLM {
        let model = try ModelRegistry.build(config: source.config, on: backend)
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
