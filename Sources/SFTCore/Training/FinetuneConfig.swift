// The configuration of a finetuning run: one flat JSON object with TRL/HF-Trainer-style keys,
// which `sftctl finetune` reads from a file and overrides with flags of the same names.
// The properties below hold the defaults; FinetuneConfigKeys.swift declares each key once
// (name, aliases, range, help) and reads, writes and checks them.

import Foundation
import SFTKernels

/// How the weights train.
public enum FinetuneMethod: String, CaseIterable, Sendable, ConfigChoice {
    /// Low-rank adapters on the frozen base.
    case lora
    /// LoRA on a 4-bit base (`quantize`, default nf4).
    case qlora
    /// Every weight trains (except `freeze`).
    case full
}

/// The device a run trains on.
public enum FinetuneDevice: Equatable, Sendable, CustomStringConvertible, ConfigValue {
    case cpu
    /// `cuda`: GPU 0, or under mpirun/srun the rank's GPU on its node; `cuda:N`: GPU N.
    case cuda(Int?)

    public init(parsing text: String) throws {
        switch text {
        case "cpu": self = .cpu
        case "cuda": self = .cuda(nil)
        default:
            guard text.hasPrefix("cuda:"), let i = Int(text.dropFirst(5)), i >= 0 else {
                throw SFTError.config(field: "device", message: "'\(text)' is not one of \(Self.configKind)")
            }
            self = .cuda(i)
        }
    }
    public var description: String {
        switch self {
        case .cpu: return "cpu"
        case .cuda(let i): return i.map { "cuda:\($0)" } ?? "cuda"
        }
    }
    /// The device this process uses; `localRank` is its index on its node under a launcher.
    public func device(localRank: Int?) -> Device {
        switch self {
        case .cpu: return .cpu
        case .cuda(let i): return .cuda(i ?? localRank ?? 0)
        }
    }
    init(configJSON j: JSONValue) throws {
        guard let s = j.stringValue else { throw expected(Self.configKind, j) }
        try self.init(parsing: s)
    }
    var configJSON: JSONValue { .string(description) }
    static var configKind: String { "cpu | cuda | cuda:N" }
    static func configJSON(flag word: String) -> JSONValue { .string(word) }
}

/// Every setting of a finetuning run, under TRL / HF Trainer names (camel-cased here,
/// snake_case in JSON and on the command line: `learningRate` is `learning_rate`).
///
/// Decode one from a JSON object with `from(json:source:)`; a key sft does not know, or a
/// value out of range, is an error naming the key.
public struct FinetuneConfig: Codable, Equatable {
    /// The base model: a GGUF file or a Hugging Face model folder.
    public var model: String = ""
    public var data: String = ""
    public var evalData: String? = nil
    public var evalSplit: Double = 0
    public var outputDir: String = "runs/sft"
    public var method: FinetuneMethod = .lora
    public var template: String? = nil
    public var device: FinetuneDevice = .cpu
    public var threads: Int? = nil
    /// Matmul precision: f32, or bf16 (frozen base weights stored bf16, f32 accumulation; Precision.swift).
    public var precision: Precision = .f32
    /// Resume a checkpoint written in the other precision.
    public var allowPrecisionChange: Bool = false
    public var loraR: Int = 16
    public var loraAlpha: Double = 32
    public var loraDropout: Double = 0.05
    public var loraTargetModules: [String] = ["all-linear"]
    public var useRSLoRA: Bool = false
    public var modulesToSave: [String] = []
    /// PEFT's init_lora_weights: true | false | gaussian | pissa | pissa_niter_K | olora.
    public var initLoRAWeights: LoRAInit = .kaiming
    /// PEFT's rank_pattern / alpha_pattern: module-name regex → r / alpha.
    public var rankPattern: [String: Int] = [:]
    public var alphaPattern: [String: Double] = [:]
    public var useDoRA: Bool = false
    /// LoRA+: lora_B's learning rate is this multiple of learning_rate.
    public var loraPlusLRRatio: Double? = nil
    /// LoRA+'s learning rate for LoRA on embedding layers (sft adapts Linear layers only).
    public var loraPlusLREmbedding: Double? = nil
    /// TRL's neftune_noise_alpha.
    public var neftuneNoiseAlpha: Double? = nil
    public var freeze: [String] = []
    /// The 4-bit format; nil: nf4 with method qlora, none otherwise.
    public var quantize: QuantType? = nil
    public var doubleQuant: Bool = true
    public var quantBlockSize: Int = 64
    public var learningRate: Double = 2e-4
    public var numTrainEpochs: Int = 1
    public var maxSteps: Int = -1
    public var perDeviceTrainBatchSize: Int = 1
    public var gradientAccumulationSteps: Int = 1
    public var lrSchedulerType: LRSchedule.Kind = .linear
    public var warmupRatio: Double = 0
    public var warmupSteps: Int = 0
    public var minLRRatio: Double = 0
    public var weightDecay: Double = 0
    public var adamBeta1: Double = 0.9
    public var adamBeta2: Double = 0.999
    public var adamEpsilon: Double = 1e-8
    public var maxGradNorm: Double = 1
    public var gradientCheckpointing: Bool = false
    public var loggingSteps: Int = 1
    public var evalSteps: Int? = nil
    public var earlyStoppingPatience: Int? = nil
    public var saveSteps: Int? = nil
    public var saveEachEpoch: Bool = false
    public var saveTotalLimit: Int? = nil
    public var resumeFromCheckpoint: String? = nil
    /// Allow a fresh run in a folder that holds another run's checkpoints (deleting them).
    public var overwriteOutputDir: Bool = false
    /// Stop (with an error) when the loss diverges; non-finite losses always stop the run.
    public var stopOnDivergence: Bool = true
    /// Start even when the memory estimate exceeds the available memory.
    public var skipMemoryCheck: Bool = false
    public var seed: UInt64 = 42
    public var samplePrompts: [String] = []
    public var sampleMaxNewTokens: Int = 64
    /// Where metrics go: metrics.jsonl always; "tensorboard" adds event files in output/tensorboard.
    public var logging: [LogSink] = [.jsonl]
    /// Data parallelism (under mpirun/srun): 1 shards AdamW's moments across the ranks.
    public var zeroStage: Int = 0
    /// Seconds a rank waits for the others in a collective before the job is ended (0: forever).
    public var collectiveTimeout: Double = 1800
    /// Data parallelism: megabytes of gradients per all-reduce bucket (PyTorch DDP's default 25).
    public var ddpBucketCapMB: Double = 25
    /// The data part (format, masks, packing...), read from the same flat object.
    public var dataConfig = DataConfig()

    public init() {}

    /// Decodes the flat object (see `from(json:)`).
    public init(from decoder: Decoder) throws {
        self = try Self.from(json: try JSONValue(from: decoder))
    }

    public func encode(to encoder: Encoder) throws {
        try json().encode(to: encoder)
    }

    /// Reads a Foundation JSON object (tests build configs this way).
    static func from(json raw: [String: Any], source: String = "config") throws -> FinetuneConfig {
        let data = try JSONSerialization.data(withJSONObject: raw)
        return try from(json: try JSONValue(parsing: data, path: source), source: source)
    }

    /// Throws for a LoRA-only setting given with method full (it would change nothing).
    public func validateLoRAOnlyKeys() throws {
        guard method == .full else { return }
        let loraOnly: [(String, Bool)] = [("use_dora", useDoRA), ("init_lora_weights", initLoRAWeights != .kaiming),
                                          ("rank_pattern", !rankPattern.isEmpty), ("alpha_pattern", !alphaPattern.isEmpty),
                                          ("loraplus_lr_ratio", loraPlusLRRatio != nil)]
        if let (key, _) = loraOnly.first(where: { $0.1 }) {
            throw SFTError.config(field: key, message: "a LoRA setting, but method full trains the weights themselves")
        }
    }

    /// The LoRA part.
    public var lora: LoRAConfig {
        LoRAConfig(r: loraR, alpha: loraAlpha, dropout: loraDropout, targetModules: loraTargetModules,
                   useRSLoRA: useRSLoRA, modulesToSave: modulesToSave, rankPattern: rankPattern,
                   alphaPattern: alphaPattern, initWeights: initLoRAWeights, useDoRA: useDoRA)
    }

    /// Whether the Linear named `name` is loaded straight into bf16: `precision` is bf16 and
    /// the layer stays frozen — a LoRA base outside `modules_to_save`, or a `freeze` match in
    /// full finetuning — as `setPrecision(.bf16)` will find it. PiSSA/OLoRA (they rewrite the
    /// base from its f32 values) and DoRA (refused in bf16) load f32.
    public func loadsBF16(linear name: String) -> Bool {
        guard precision == .bf16 else { return false }
        switch method {
        case .full:
            let key = name.isEmpty ? "weight" : name + ".weight"
            return freeze.contains { key.contains($0) }
        case .lora, .qlora:
            if useDoRA || initLoRAWeights.mutatesBase { return false }
            // modules_to_save trains a module and everything under it: any enclosing name matches.
            let parts = name.split(separator: ".").map(String.init)
            let enclosing = parts.indices.map { parts[...$0].joined(separator: ".") }
            return !enclosing.contains { m in modulesToSave.contains { m == $0 || m.hasSuffix("." + $0) } }
        }
    }

    /// The 4-bit base, for method qlora (or any method with `quantize` set); `precision: bf16`
    /// makes bf16 its compute dtype (4-bit tiles decoded to bf16 for the bf16 GEMMs).
    public func quantization() throws -> QuantizationConfig? {
        guard method == .qlora || quantize != nil else { return nil }
        let q = QuantizationConfig(type: quantize ?? .nf4, blockSize: quantBlockSize, doubleQuant: doubleQuant,
                                   computeDType: precision == .bf16 ? .bf16 : .f32)
        try q.validate()
        return q
    }

    /// The trainer part.
    public func trainer() throws -> TrainerConfig {
        var t = TrainerConfig()
        t.learningRate = learningRate
        t.schedule = lrSchedulerType
        t.warmupRatio = warmupRatio; t.warmupSteps = warmupSteps; t.minLRRatio = minLRRatio
        t.adamw = AdamWConfig(beta1: adamBeta1, beta2: adamBeta2, eps: adamEpsilon, weightDecay: weightDecay)
        t.maxGradNorm = maxGradNorm
        t.maxSteps = maxSteps > 0 ? maxSteps : nil
        t.gradientCheckpointing = gradientCheckpointing
        t.loggingSteps = loggingSteps; t.evalSteps = evalSteps; t.earlyStoppingPatience = earlyStoppingPatience
        t.saveSteps = saveSteps; t.saveEachEpoch = saveEachEpoch; t.saveTotalLimit = saveTotalLimit
        t.stopOnDivergence = stopOnDivergence
        t.loraPlusLRRatio = loraPlusLRRatio
        t.neftuneNoiseAlpha = neftuneNoiseAlpha
        t.seed = seed
        return t
    }
}
