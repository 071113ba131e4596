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
    /// The CPU backend (OpenBLAS matmuls, `threads` threads).
    case cpu
    /// `cuda`: GPU 0, or under mpirun/srun the rank's GPU on its node; `cuda:N`: GPU N.
    case cuda(Int?)

    /// Parses `cpu`, `cuda` or `cuda:N` (N ≥ 0); anything else is `SFTError.config` for `device`.
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
    /// The base model: a GGUF file or a Hugging Face model folder (config.json, *.safetensors,
    /// tokenizer.json). Key `model`, flag `--model`; required. TRL: `model_name_or_path`.
    public var model: String = ""
    /// The training data: a .json file (an array of records), .jsonl or .csv; `format` says how
    /// records read. Key `data`, flag `--data`; required. TRL: `dataset_name`.
    public var data: String = ""
    /// A validation file read like `data`; evaluated every `eval_steps` and at the end. Key
    /// `eval_data`, flag `--eval-data`; nil: none (or `eval_split`).
    public var evalData: String? = nil
    /// The fraction of the training records held out for validation when there is no `eval_data`,
    /// in [0, 1) (at least one record when above 0). Key `eval_split`, flag `--eval-split`; default
    /// 0 (none). Like `datasets`' `train_test_split(test_size:)`.
    public var evalSplit: Double = 0
    /// The run folder: adapter/ (or model/ with method full), checkpoint-N/, config.json,
    /// metrics.jsonl, loss.svg. Key `output_dir`, flag `--output-dir`; default runs/sft. HF
    /// TrainingArguments: `output_dir`.
    public var outputDir: String = "runs/sft"
    /// How the weights train: LoRA, QLoRA (LoRA on a 4-bit base) or full finetuning. Key `method`,
    /// flag `--method`; default lora. TRL expresses this as `use_peft` plus `load_in_4bit`.
    public var method: FinetuneMethod = .lora
    /// The chat template: a built-in template name or a path to a .jinja file. Key `template`, flag
    /// `--template`; nil: the model's own (the GGUF's or tokenizer_config.json's `chat_template`).
    public var template: String? = nil
    /// Where the run computes: `cpu`, `cuda` or `cuda:N`. Key `device`, flag `--device`; default
    /// cpu.
    public var device: FinetuneDevice = .cpu
    /// CPU threads for the CPU backend. Key `threads`, flag `--threads`, at least 1; nil: all
    /// cores.
    public var threads: Int? = nil
    /// Matmul precision: f32, or bf16 (frozen base weights stored bf16, bf16 products with f32
    /// accumulation; master weights, adapters and AdamW states stay f32; Precision.swift). Key
    /// `precision`, flag `--precision`; default f32. Closest HF setting: TrainingArguments `bf16`.
    public var precision: Precision = .f32
    /// Resume a checkpoint written under the other `precision` instead of refusing it. Key
    /// `allow_precision_change`, flag `--allow-precision-change`; default false.
    public var allowPrecisionChange: Bool = false
    /// The LoRA rank r: A is (r, in), B is (out, r). Key `lora_r` (alias `r`), flag `--lora-r`, at
    /// least 1; default 16. PEFT LoraConfig: `r`.
    public var loraR: Int = 16
    /// LoRA alpha: the update is scaled by alpha/r (alpha/sqrt(r) with `use_rslora`). Key
    /// `lora_alpha`, flag `--lora-alpha`, above 0; default 32. PEFT LoraConfig: `lora_alpha`.
    public var loraAlpha: Double = 32
    /// Dropout probability on the LoRA input while training, in [0, 1). Key `lora_dropout`, flag
    /// `--lora-dropout`; default 0.05. PEFT LoraConfig: `lora_dropout`.
    public var loraDropout: Double = 0.05
    /// The Linear layers that get adapters: module names (`q_proj`, `v_proj`...) or `all-linear`
    /// (every Linear but the output head). Key `lora_target_modules` (alias `target_modules`), flag
    /// `--lora-target-modules` (comma-separated or repeated); default [all-linear]. PEFT
    /// LoraConfig: `target_modules`.
    public var loraTargetModules: [String] = ["all-linear"]
    /// Rank-stabilized LoRA: scale by alpha/sqrt(r) instead of alpha/r. Key `use_rslora`, flag
    /// `--use-rslora`; default false. PEFT LoraConfig: `use_rslora`.
    public var useRSLoRA: Bool = false
    /// Modules trained fully and saved with the adapter, e.g. ["lm_head"]. Key `modules_to_save`,
    /// flag `--modules-to-save`; default none. PEFT LoraConfig: `modules_to_save`.
    public var modulesToSave: [String] = []
    /// How A and B start: true (Kaiming-uniform A, zero B) | false (both random) | gaussian | pissa
    /// | pissa_niter_K | olora; PiSSA/OLoRA adapters are saved converted for the original base. Key
    /// `init_lora_weights`, flag `--init-lora-weights`; default true. PEFT LoraConfig:
    /// `init_lora_weights`.
    public var initLoRAWeights: LoRAInit = .kaiming
    /// Per-module ranks: module-name regex → r, matched by PEFT's rules, e.g. {"q_proj": 8}. Key
    /// `rank_pattern`, flag `--rank-pattern` (a JSON object), each at least 1; default empty. PEFT
    /// LoraConfig: `rank_pattern`.
    public var rankPattern: [String: Int] = [:]
    /// Per-module alphas: module-name regex → alpha, as `rankPattern`. Key `alpha_pattern`, flag
    /// `--alpha-pattern`, each above 0; default empty. PEFT LoraConfig: `alpha_pattern`.
    public var alphaPattern: [String: Double] = [:]
    /// DoRA: a trained magnitude per output row on top of the LoRA direction. Key `use_dora`, flag
    /// `--use-dora`; default false. PEFT LoraConfig: `use_dora`.
    public var useDoRA: Bool = false
    /// LoRA+: lora_B learns at this multiple of `learning_rate` (lora_A at the rate itself). Key
    /// `loraplus_lr_ratio`, flag `--loraplus-lr-ratio`, above 0; nil: off. PEFT:
    /// `create_loraplus_optimizer(loraplus_lr_ratio:)`.
    public var loraPlusLRRatio: Double? = nil
    /// LoRA+'s learning rate for LoRA on embedding layers; accepted for PEFT compatibility, but sft
    /// adapts Linear layers only, so it changes nothing. Key `loraplus_lr_embedding`, flag
    /// `--loraplus-lr-embedding`, above 0; nil: unset. PEFT:
    /// `create_loraplus_optimizer(loraplus_lr_embedding:)`.
    public var loraPlusLREmbedding: Double? = nil
    /// NEFTune: while training, input embeddings get uniform noise scaled by alpha/sqrt(L*d) (L
    /// tokens, d model width). Key `neftune_noise_alpha`, flag `--neftune-noise-alpha`, at least 0;
    /// nil: off. TRL/HF: `neftune_noise_alpha`.
    public var neftuneNoiseAlpha: Double? = nil
    /// Full finetuning: parameters whose names contain one of these substrings stay frozen. Key
    /// `freeze`, flag `--freeze`; default none.
    public var freeze: [String] = []
    /// The 4-bit number format of the quantized base (nf4 or fp4). Key `quantize`, flag
    /// `--quantize`; nil: nf4 with method qlora, unquantized otherwise. bitsandbytes:
    /// `bnb_4bit_quant_type`.
    public var quantize: QuantType? = nil
    /// Quantize the 4-bit blocks' f32 scales again, to 8 bits (QLoRA's double quantization). Key
    /// `double_quant`, flag `--double-quant`; default true. bitsandbytes:
    /// `bnb_4bit_use_double_quant`.
    public var doubleQuant: Bool = true
    /// Values per 4-bit scale: a power of two in [16, 4096]. Key `quant_block_size`, flag
    /// `--quant-block-size`; default 64 (bitsandbytes' fixed block size).
    public var quantBlockSize: Int = 64
    /// The peak learning rate, reached after warmup. Key `learning_rate`, flag `--learning-rate`,
    /// above 0; default 2e-4. HF TrainingArguments: `learning_rate`.
    public var learningRate: Double = 2e-4
    /// Passes over the training data (whole epochs only). Key `num_train_epochs`, flag
    /// `--num-train-epochs`, at least 0; default 1. HF TrainingArguments: `num_train_epochs`.
    public var numTrainEpochs: Int = 1
    /// Stop after this many optimizer steps; -1: run all epochs. Key `max_steps`, flag
    /// `--max-steps`; default -1. HF TrainingArguments: `max_steps`.
    public var maxSteps: Int = -1
    /// Rows per micro-batch (per rank under mpirun/srun). Key `per_device_train_batch_size`, flag
    /// `--per-device-train-batch-size`, at least 1; default 1. HF TrainingArguments:
    /// `per_device_train_batch_size`.
    public var perDeviceTrainBatchSize: Int = 1
    /// Micro-batches whose gradients add up to one optimizer step. Key
    /// `gradient_accumulation_steps`, flag `--gradient-accumulation-steps`, at least 1; default 1.
    /// HF TrainingArguments: `gradient_accumulation_steps`.
    public var gradientAccumulationSteps: Int = 1
    /// The learning-rate schedule after warmup: constant, constant_with_warmup, cosine or linear
    /// (to 0 at the last step). Key `lr_scheduler_type`, flag `--lr-scheduler-type`; default
    /// linear. HF TrainingArguments: `lr_scheduler_type`.
    public var lrSchedulerType: LRSchedule.Kind = .linear
    /// Linear warmup as a fraction of the total optimizer steps, in [0, 1]. Key `warmup_ratio`,
    /// flag `--warmup-ratio`; default 0. HF TrainingArguments: `warmup_ratio`.
    public var warmupRatio: Double = 0
    /// Linear warmup in optimizer steps; overrides `warmup_ratio` when above 0. Key `warmup_steps`,
    /// flag `--warmup-steps`; default 0. HF TrainingArguments: `warmup_steps`.
    public var warmupSteps: Int = 0
    /// The cosine schedule's floor as a fraction of the peak, in [0, 1]. Key `min_lr_ratio`, flag
    /// `--min-lr-ratio`; default 0. HF: `lr_scheduler_kwargs={"min_lr_rate": x}` with
    /// cosine_with_min_lr.
    public var minLRRatio: Double = 0
    /// AdamW's decoupled weight decay, not applied to norms and biases. Key `weight_decay`, flag
    /// `--weight-decay`, at least 0; default 0. HF TrainingArguments: `weight_decay`.
    public var weightDecay: Double = 0
    /// AdamW's first-moment decay, in [0, 1). Key `adam_beta1`, flag `--adam-beta1`; default 0.9.
    /// HF TrainingArguments: `adam_beta1`.
    public var adamBeta1: Double = 0.9
    /// AdamW's second-moment decay, in [0, 1). Key `adam_beta2`, flag `--adam-beta2`; default
    /// 0.999. HF TrainingArguments: `adam_beta2`.
    public var adamBeta2: Double = 0.999
    /// AdamW's epsilon, in (0, 1]. Key `adam_epsilon`, flag `--adam-epsilon`; default 1e-8. HF
    /// TrainingArguments: `adam_epsilon`.
    public var adamEpsilon: Double = 1e-8
    /// Clip gradients to this global L2 norm; 0: no clipping. Key `max_grad_norm`, flag
    /// `--max-grad-norm`; default 1. HF TrainingArguments: `max_grad_norm`.
    public var maxGradNorm: Double = 1
    /// Recompute each decoder layer's activations in the backward pass instead of keeping them
    /// (less memory, about one more forward). Key `gradient_checkpointing`, flag
    /// `--gradient-checkpointing`; default false. HF TrainingArguments: `gradient_checkpointing`.
    public var gradientCheckpointing: Bool = false
    /// Log the loss, learning rate and gradient norm every N optimizer steps. Key `logging_steps`,
    /// flag `--logging-steps`, at least 1; default 1. HF TrainingArguments: `logging_steps`.
    public var loggingSteps: Int = 1
    /// Evaluate on the validation data every N optimizer steps. Key `eval_steps`, flag
    /// `--eval-steps`, at least 1; nil: only at the end. HF TrainingArguments: `eval_steps`.
    public var evalSteps: Int? = nil
    /// Stop after N evaluations in a row without a lower validation loss. Key
    /// `early_stopping_patience`, flag `--early-stopping-patience`, at least 1; nil: never.
    /// transformers: `EarlyStoppingCallback(early_stopping_patience:)`.
    public var earlyStoppingPatience: Int? = nil
    /// Write a checkpoint every N optimizer steps. Key `save_steps`, flag `--save-steps`, at least
    /// 1; nil: no checkpoints during the run. HF TrainingArguments: `save_steps`.
    public var saveSteps: Int? = nil
    /// Write a checkpoint at the end of each epoch. Key `save_each_epoch`, flag
    /// `--save-each-epoch`; default false. HF TrainingArguments: `save_strategy="epoch"`.
    public var saveEachEpoch: Bool = false
    /// Keep only the newest N checkpoints, deleting older ones. Key `save_total_limit`, flag
    /// `--save-total-limit`, at least 1; nil: keep all. HF TrainingArguments: `save_total_limit`.
    public var saveTotalLimit: Int? = nil
    /// Resume from a checkpoint folder, or `latest` for the newest one in `output_dir`. Key
    /// `resume_from_checkpoint`, flag `--resume-from-checkpoint`; nil: a fresh run. HF:
    /// `trainer.train(resume_from_checkpoint:)`.
    public var resumeFromCheckpoint: String? = nil
    /// Start a fresh run in an `output_dir` that holds another run's checkpoints, deleting them
    /// (otherwise that is an error). Key `overwrite_output_dir`, flag `--overwrite-output-dir`;
    /// default false. HF TrainingArguments: `overwrite_output_dir`.
    public var overwriteOutputDir: Bool = false
    /// Stop with an error when the loss stays above 4x its running minimum for 20 steps, or sits at
    /// ln(vocab) with zero gradient; a non-finite loss always stops the run. Key
    /// `stop_on_divergence`, flag `--stop-on-divergence`; default true.
    public var stopOnDivergence: Bool = true
    /// Start even when the memory estimate exceeds the available memory. Key `skip_memory_check`,
    /// flag `--skip-memory-check`; default false.
    public var skipMemoryCheck: Bool = false
    /// Seed for weight initialization, shuffling and dropout. Key `seed`, flag `--seed`; default
    /// 42. HF TrainingArguments: `seed`.
    public var seed: UInt64 = 42
    /// Prompts to generate from at each evaluation; the completions go to the log. Key
    /// `sample_prompts`, flag `--sample-prompts` (repeat it for several; commas do not split);
    /// default none.
    public var samplePrompts: [String] = []
    /// The most tokens each sample generation adds. Key `sample_max_new_tokens`, flag
    /// `--sample-max-new-tokens`, at least 1; default 64.
    public var sampleMaxNewTokens: Int = 64
    /// Metrics sinks: metrics.jsonl always; `tensorboard` adds event files in
    /// output_dir/tensorboard. Key `logging`, flag `--logging`; default [jsonl]. HF
    /// TrainingArguments: `report_to`.
    public var logging: [LogSink] = [.jsonl]
    /// Data parallelism (under mpirun/srun): 0 keeps all AdamW states on every rank, 1 shards them
    /// across the ranks. Key `zero_stage`, flag `--zero-stage`, 0 or 1; default 0. DeepSpeed:
    /// `zero_optimization.stage`.
    public var zeroStage: Int = 0
    /// Data parallelism: seconds a rank waits for the others in a collective before the job ends
    /// with an error naming the step; 0: forever. Key `collective_timeout`, flag
    /// `--collective-timeout`; default 1800. HF TrainingArguments: `ddp_timeout`.
    public var collectiveTimeout: Double = 1800
    /// Data parallelism: megabytes of gradients per all-reduce bucket; buckets start while the
    /// backward pass runs. Key `ddp_bucket_cap_mb`, flag `--ddp-bucket-cap-mb`, above 0; default 25
    /// (PyTorch DDP's). HF TrainingArguments: `ddp_bucket_cap_mb`.
    public var ddpBucketCapMB: Double = 25
    /// The data part (format, fields, masks, packing, truncation...), read from the same flat
    /// object; see ``DataConfig`` for its keys.
    public var dataConfig = DataConfig()

    /// The defaults: every property at its initial value (`model` and `data` empty, to be set).
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
