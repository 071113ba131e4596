// What every decoder-only language model in the zoo provides, the inputs it takes, its KV
// cache, and the registry that maps an HF `model_type` / GGUF `general.architecture` to the
// Swift type that builds it.

import Foundation
import SFTKernels

/// One batch of token rows as the model sees it. Tokens are flattened rows of B·T.
public struct ModelInput {
    public var ids: Tensor          // (B·T) i32
    public var positions: Tensor    // (B·T) i32, restarting at 0 for each packed document
    public var docIds: Tensor?      // (B·T) i32; nil: every row is one document
    public var B: Int
    public var T: Int

    public init(ids: Tensor, positions: Tensor, docIds: Tensor?, B: Int, T: Int) {
        self.ids = ids; self.positions = positions; self.docIds = docIds; self.B = B; self.T = T
    }

    /// One unpacked row of tokens at positions 0..<n.
    public init(tokens: [Int32], on backend: Backend) throws {
        let n = tokens.count
        self.init(ids: try Tensor(ints: tokens, shape: [n], on: backend),
                  positions: try Tensor(ints: (0..<Int32(n)).map { $0 }, shape: [n], on: backend),
                  docIds: nil, B: 1, T: n)
    }
}

/// Keys and values of past tokens for one sequence, per layer, in device memory.
public final class KVCache {
    let keys: [Tensor]     // per layer (capacity, KV·D)
    let values: [Tensor]
    public let capacity: Int
    /// Tokens stored so far.
    public internal(set) var count = 0
    /// Buffers a model reuses across one-token decode steps of this sequence (its own type).
    var stepBuffers: AnyObject?

    public init(layers: Int, capacity: Int, kvDim: Int, on backend: Backend) throws {
        keys = try (0..<layers).map { _ in try Tensor(empty: [capacity, kvDim], on: backend) }
        values = try (0..<layers).map { _ in try Tensor(empty: [capacity, kvDim], on: backend) }
        self.capacity = capacity
    }

    public func reset() { count = 0 }

    /// Throws unless `n` (≥ 1) more tokens fit: the check every family's `decode` starts with.
    public func checkRoom(for n: Int) throws {
        guard n > 0 else { throw SFTError.shape(op: "decode", message: "no tokens to run") }
        guard count + n <= capacity else {
            throw SFTError.shape(op: "decode", message: "KV cache full: \(count) + \(n) tokens > capacity \(capacity)")
        }
    }
}

/// A decoder-only causal language model.
public protocol CausalLM: Module {
    var modelType: String { get }
    var vocabSize: Int { get }
    var hiddenSize: Int { get }
    var numLayers: Int { get }
    /// The (V, C) matrix of the LM head (the embedding when tied).
    var lmHeadWeight: Parameter { get }
    /// Whether the LM head shares the embedding matrix.
    var tiedEmbeddings: Bool { get }
    /// The config as an HF config.json object (for saving merged models); throws when the
    /// model has a setting transformers cannot express.
    var hfConfig: [String: JSONValue] { get throws }

    /// Final hidden states (B·T, C) after the last norm. `checkpointing` recomputes each
    /// decoder layer in backward instead of keeping its activations.
    func hiddenStates(_ input: ModelInput, checkpointing: Bool) throws -> Tensor

    /// PEFT's default `target_modules` for this family (its
    /// TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING entry; nil where PEFT has none and
    /// asks for explicit targets); sft's own default is "all-linear".
    var peftDefaultLoRATargets: [String]? { get }
    /// Parameter and activation sizes, for the memory estimate (`MemoryEstimate(model:...)`).
    var layout: ModelLayout { get }
    /// How the model is written as GGUF: llama.cpp's architecture, its `<arch>.*` keys and
    /// derived tensors; throws naming what llama.cpp cannot express.
    func ggufExport() throws -> GGUFModelExport
    /// Final-logit softcapping (Gemma 2): logits are cap · tanh(z / cap); 0 = none.
    var finalLogitSoftcap: Float { get }

    func makeCache(capacity: Int) throws -> KVCache
    /// Runs `ids` after the tokens already in `cache`, appends their keys/values, and returns
    /// the logits (V) of the last one.
    func decode(_ ids: [Int32], cache: KVCache) throws -> [Float]
}

extension CausalLM {
    /// Training memory of this model for a run of this shape (see `MemoryEstimate(model:...)`).
    public func memoryEstimate(quantization: QuantizationConfig?, lora: LoRAConfig?, batch: Int, sequence: Int,
                               checkpointing: Bool, optimizerShards: Int) -> MemoryEstimate? {
        MemoryEstimate(model: self, quantization: quantization, lora: lora, batch: batch, sequence: sequence,
                       checkpointing: checkpointing, optimizerShards: optimizerShards)
    }

    /// The HF name of the LM head's weight (the embedding's when tied).
    public var lmHeadName: String? {
        let head = lmHeadWeight
        return namedParameters().first { $0.1 === head }?.0
    }

    public var finalLogitSoftcap: Float { 0 }

    /// Logits (V) of one final hidden row (1, C): through the packed LM head when there is one,
    /// softcapped when the family caps its logits.
    func headLogits(_ last: Tensor) throws -> [Float] {
        let z = try packedLMHead?.apply(last).floats() ?? Ops.linear(last, lmHeadWeight.value).floats()
        return softcapped(z)
    }

    /// Logits (n, V) of final hidden states h (n, C): the LM head, softcapped when the family
    /// caps its logits (no gradient: training goes through `loss`).
    func softcappedLogits(_ h: Tensor) throws -> Tensor {
        let z = try Ops.linear(h, lmHeadWeight.value)
        guard finalLogitSoftcap > 0 else { return z }
        return try Tensor(softcapped(try z.floats()), shape: z.shape, on: z.backend)
    }

    /// cap · tanh(z / cap) of every logit (cap = `finalLogitSoftcap`; unchanged when 0).
    private func softcapped(_ z: [Float]) -> [Float] {
        let cap = finalLogitSoftcap
        guard cap > 0 else { return z }
        return z.map { cap * tanh($0 / cap) }
    }

    /// Mean next-token loss over `targets` (−100 = ignored), normalized by `normalizer`
    /// (defaults to the number of counted targets).
    public func loss(_ input: ModelInput, targets: Tensor, normalizer: Float? = nil,
                     checkpointing: Bool = false) throws -> (loss: Tensor, tokens: Int) {
        let h = try hiddenStates(input, checkpointing: checkpointing)
        let norm: Float
        if let normalizer { norm = normalizer } else {
            let counted = try targets.ints().filter { $0 != -100 }.count
            norm = Float(max(1, counted))
        }
        return try Ops.crossEntropyLMHead(h, weight: lmHeadWeight.value, targets: targets, normalizer: norm,
                                          precision: matmulPrecision, softcap: finalLogitSoftcap)
    }

    /// Logits (T, V) for every position of one row (no gradient). For tests and evaluation of
    /// short texts; training uses the fused loss instead.
    public func logits(_ tokens: [Int32]) throws -> [Float] {
        try logitsTensor(tokens).floats()
    }

    /// The same logits as a (T, V) tensor on the model's device, without the copy to the host
    /// (what transformers' `model(ids).logits` returns).
    public func logitsTensor(_ tokens: [Int32]) throws -> Tensor {
        try Autograd.withNoGrad {
            let input = try ModelInput(tokens: tokens, on: lmHeadWeight.value.backend)
            return try softcappedLogits(try hiddenStates(input, checkpointing: false))
        }
    }
}

/// A family's config as the registry reads it: decoded from an HF-style config object, with the
/// model's sizes (what the memory estimate needs before any weight is allocated).
protocol ModelFamilyConfig: SendableMetatype {
    init(hf: [String: JSONValue]) throws
    var layout: ModelLayout { get }
}

extension LlamaConfig: ModelFamilyConfig {}
extension MPTConfig: ModelFamilyConfig {}
extension Phi3Config: ModelFamilyConfig {}
extension Gemma2Config: ModelFamilyConfig {}
extension Gemma3Config: ModelFamilyConfig {}

/// One architecture in the registry: how to build its model and how to size it from its config.
public struct ModelFamily: Sendable {
    public let build: ModelRegistry.Builder
    /// The model's sizes from its config alone (the memory estimate before loading).
    public let layout: @Sendable (_ config: [String: JSONValue]) throws -> ModelLayout

    init<C: ModelFamilyConfig>(_ config: C.Type, _ make: @escaping @Sendable (C, Backend) throws -> CausalLM) {
        build = { try make(try C(hf: $0), $1) }
        layout = { try C(hf: $0).layout }
    }
}

/// Builds models from an HF-style config object (`config.json` contents).
public enum ModelRegistry {
    public typealias Builder = @Sendable (_ config: [String: JSONValue], _ backend: Backend) throws -> CausalLM

    /// model_type → family. One line per architecture.
    public static let families: [String: ModelFamily] = [
        "llama": ModelFamily(LlamaConfig.self) { try LlamaModel(config: $0, on: $1) },
        "mistral": ModelFamily(LlamaConfig.self) { try LlamaModel(config: $0, on: $1) },
        "qwen2": ModelFamily(LlamaConfig.self) { try LlamaModel(config: $0, on: $1) },
        "qwen3": ModelFamily(LlamaConfig.self) { try LlamaModel(config: $0, on: $1) },
        "mpt": ModelFamily(MPTConfig.self) { try MPTModel(config: $0, on: $1) },
        "phi3": ModelFamily(Phi3Config.self) { try Phi3Model(config: $0, on: $1) },
        "gemma2": ModelFamily(Gemma2Config.self) { try Gemma2Model(config: $0, on: $1) },
        "gemma3_text": ModelFamily(Gemma3Config.self) { try Gemma3Model(config: $0, on: $1) },
    ]

    /// The family of `config`'s `model_type`; throws naming it when unsupported.
    public static func family(of config: [String: JSONValue]) throws -> ModelFamily {
        guard let type = config["model_type"]?.stringValue else {
            throw SFTError.config(field: "model_type", message: "missing from the model config")
        }
        guard let f = families[type] else {
            throw SFTError.config(field: "model_type", message: "'\(type)' is not supported (supported: \(families.keys.sorted().joined(separator: ", ")))")
        }
        return f
    }

    public static func build(config: [String: JSONValue], on backend: Backend) throws -> CausalLM {
        try family(of: config).build(config, backend)
    }
}
