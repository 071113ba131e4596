// What every decoder-only language model in the zoo provides, the inputs it takes, its KV
// cache, and the registry that maps an HF `model_type` / GGUF `general.architecture` to the
// Swift type that builds it.

import Foundation
import SFTKernels

/// One batch of token rows as the model sees it. Tokens are flattened rows of B·T.
public struct ModelInput {
    /// Token ids, (B·T) i32, row-major: row b's tokens are `ids[b·T ..< (b+1)·T]`.
    public var ids: Tensor
    /// Position of each token for RoPE, (B·T) i32, restarting at 0 for each packed document.
    public var positions: Tensor
    /// Document index of each token, (B·T) i32, for packed rows: attention never crosses
    /// documents. nil: every row is one document.
    public var docIds: Tensor?
    /// Batch size: the number of rows.
    public var B: Int
    /// Tokens per row (every row has the same length; padding is the caller's).
    public var T: Int

    /// A batch from prepared tensors; all three are (B·T) i32 on the model's backend.
    /// - Parameters:
    ///   - ids: Token ids, (B·T).
    ///   - positions: Position of each token within its document, (B·T).
    ///   - docIds: Document index of each token for packed rows; nil when rows are not packed.
    ///   - B: Number of rows.
    ///   - T: Tokens per row.
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
    /// Keys per layer, each (capacity, KV·D) f32 (KV kv heads of head dim D);
    /// rows `0..<count` are filled.
    let keys: [Tensor]
    /// Values per layer, each (capacity, KV·D) f32; rows `0..<count` are filled.
    let values: [Tensor]
    /// Most tokens the cache holds (prompt plus generated); `checkRoom(for:)` throws past it.
    public let capacity: Int
    /// Tokens stored so far.
    public internal(set) var count = 0
    /// Buffers a model reuses across one-token decode steps of this sequence (its own type).
    var stepBuffers: AnyObject?

    /// Allocates empty key and value buffers (uninitialized device memory; nothing is stored yet).
    /// Models make theirs with `CausalLM.makeCache(capacity:)`, which knows the sizes.
    /// - Parameters:
    ///   - layers: Number of decoder layers.
    ///   - capacity: Most tokens the cache will hold.
    ///   - kvDim: KV·D, the width of one token's keys (and values) in one layer.
    ///   - backend: The device the buffers live on (the model's).
    /// - Throws: When the device cannot allocate the buffers.
    public init(layers: Int, capacity: Int, kvDim: Int, on backend: Backend) throws {
        keys = try (0..<layers).map { _ in try Tensor(empty: [capacity, kvDim], on: backend) }
        values = try (0..<layers).map { _ in try Tensor(empty: [capacity, kvDim], on: backend) }
        self.capacity = capacity
    }

    /// Forgets every stored token (keeps the buffers) so the cache can serve a new sequence.
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
    /// The HF `model_type` of the family, e.g. "llama", "qwen2", "gemma3_text".
    var modelType: String { get }
    /// V, the number of token ids (rows of the embedding, columns of the logits).
    var vocabSize: Int { get }
    /// C, the width of the residual stream (HF `hidden_size`; MPT `d_model`).
    var hiddenSize: Int { get }
    /// Number of decoder layers.
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

    /// An empty KV cache for one sequence of at most `capacity` tokens, sized for this model, on
    /// its backend. Pass it to `decode(_:cache:)`.
    /// - Parameter capacity: Most tokens (prompt plus generated) the cache will hold.
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

    /// No softcapping (0), for families without `final_logit_softcapping`.
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
    /// Builds the model, with freshly allocated (uninitialized) weights, from an HF config object.
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
    /// Makes a model with unloaded weights from an HF config.json object on a backend; throws
    /// naming the config field that is missing, inconsistent or not implemented.
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

    /// Builds the model `config`'s `model_type` names, with allocated but not yet loaded weights.
    /// - Parameters:
    ///   - config: An HF config.json object.
    ///   - backend: The device the weights are allocated on.
    /// - Throws: `SFTError.config` naming the field when `model_type` is missing or unsupported,
    ///   or when the family rejects the config.
    public static func build(config: [String: JSONValue], on backend: Backend) throws -> CausalLM {
        try family(of: config).build(config, backend)
    }
}
