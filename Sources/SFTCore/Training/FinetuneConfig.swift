// The configuration of a finetuning run: one flat JSON object with TRL/HF-Trainer-style keys,
// which `sftctl finetune` reads from a file and overrides with flags of the same names.
// `FinetuneConfig.fields` documents every key once; `--help` prints it.

import Foundation

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
    public var method: String = "lora"
    public var template: String? = nil
    public var device: String = "cpu"
    public var threads: Int? = nil
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
    public var quantize: String? = nil
    public var doubleQuant: Bool = true
    public var quantBlockSize: Int = 64
    public var learningRate: Double = 2e-4
    public var numTrainEpochs: Int = 1
    public var maxSteps: Int = -1
    public var perDeviceTrainBatchSize: Int = 1
    public var gradientAccumulationSteps: Int = 1
    public var lrSchedulerType: String = "linear"
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
    public var seed: UInt64 = 42
    public var samplePrompts: [String] = []
    public var sampleMaxNewTokens: Int = 64
    /// Where metrics go: metrics.jsonl always; "tensorboard" adds event files in output/tensorboard.
    public var logging: [LogSink] = [.jsonl]
    /// Data parallelism (under mpirun/srun): 1 shards AdamW's moments across the ranks.
    public var zeroStage: Int = 0
    /// Seconds a rank waits for the others in a collective before the job is ended (0: forever).
    public var collectiveTimeout: Double = 1800
    /// The data part (format, masks, packing...), read from the same flat object.
    public var dataConfig = DataConfig()

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case model, data, evalData = "eval_data", evalSplit = "eval_split", outputDir = "output_dir", method, template
        case device, threads, loraR = "lora_r", loraAlpha = "lora_alpha", loraDropout = "lora_dropout"
        case loraTargetModules = "lora_target_modules", useRSLoRA = "use_rslora", modulesToSave = "modules_to_save"
        case initLoRAWeights = "init_lora_weights", rankPattern = "rank_pattern", alphaPattern = "alpha_pattern"
        case useDoRA = "use_dora", loraPlusLRRatio = "loraplus_lr_ratio", loraPlusLREmbedding = "loraplus_lr_embedding"
        case neftuneNoiseAlpha = "neftune_noise_alpha"
        case freeze, quantize, doubleQuant = "double_quant", quantBlockSize = "quant_block_size", learningRate = "learning_rate", numTrainEpochs = "num_train_epochs", maxSteps = "max_steps"
        case perDeviceTrainBatchSize = "per_device_train_batch_size"
        case gradientAccumulationSteps = "gradient_accumulation_steps", lrSchedulerType = "lr_scheduler_type"
        case warmupRatio = "warmup_ratio", warmupSteps = "warmup_steps", minLRRatio = "min_lr_ratio"
        case weightDecay = "weight_decay", adamBeta1 = "adam_beta1", adamBeta2 = "adam_beta2", adamEpsilon = "adam_epsilon"
        case maxGradNorm = "max_grad_norm", gradientCheckpointing = "gradient_checkpointing", loggingSteps = "logging_steps"
        case evalSteps = "eval_steps", earlyStoppingPatience = "early_stopping_patience", saveSteps = "save_steps"
        case saveEachEpoch = "save_each_epoch", saveTotalLimit = "save_total_limit"
        case overwriteOutputDir = "overwrite_output_dir", stopOnDivergence = "stop_on_divergence"
        case resumeFromCheckpoint = "resume_from_checkpoint", seed, samplePrompts = "sample_prompts"
        case sampleMaxNewTokens = "sample_max_new_tokens", logging
        case zeroStage = "zero_stage", collectiveTimeout = "collective_timeout"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = FinetuneConfig()
        func v<T: Decodable>(_ k: CodingKeys, _ def: T) throws -> T { try c.decodeIfPresent(T.self, forKey: k) ?? def }
        model = try v(.model, d.model); data = try v(.data, d.data)
        evalData = try c.decodeIfPresent(String.self, forKey: .evalData); evalSplit = try v(.evalSplit, d.evalSplit)
        outputDir = try v(.outputDir, d.outputDir); method = try v(.method, d.method)
        template = try c.decodeIfPresent(String.self, forKey: .template); device = try v(.device, d.device)
        threads = try c.decodeIfPresent(Int.self, forKey: .threads)
        loraR = try v(.loraR, d.loraR); loraAlpha = try v(.loraAlpha, d.loraAlpha); loraDropout = try v(.loraDropout, d.loraDropout)
        if let s = try? c.decode(String.self, forKey: .loraTargetModules) { loraTargetModules = [s] }
        else { loraTargetModules = try v(.loraTargetModules, d.loraTargetModules) }
        useRSLoRA = try v(.useRSLoRA, d.useRSLoRA); modulesToSave = try v(.modulesToSave, d.modulesToSave)
        initLoRAWeights = try v(.initLoRAWeights, d.initLoRAWeights)
        rankPattern = try v(.rankPattern, d.rankPattern); alphaPattern = try v(.alphaPattern, d.alphaPattern)
        useDoRA = try v(.useDoRA, d.useDoRA)
        loraPlusLRRatio = try c.decodeIfPresent(Double.self, forKey: .loraPlusLRRatio)
        loraPlusLREmbedding = try c.decodeIfPresent(Double.self, forKey: .loraPlusLREmbedding)
        neftuneNoiseAlpha = try c.decodeIfPresent(Double.self, forKey: .neftuneNoiseAlpha)
        freeze = try v(.freeze, d.freeze)
        quantize = try c.decodeIfPresent(String.self, forKey: .quantize)
        doubleQuant = try v(.doubleQuant, d.doubleQuant); quantBlockSize = try v(.quantBlockSize, d.quantBlockSize)
        learningRate = try v(.learningRate, d.learningRate)
        numTrainEpochs = try v(.numTrainEpochs, d.numTrainEpochs); maxSteps = try v(.maxSteps, d.maxSteps)
        perDeviceTrainBatchSize = try v(.perDeviceTrainBatchSize, d.perDeviceTrainBatchSize)
        gradientAccumulationSteps = try v(.gradientAccumulationSteps, d.gradientAccumulationSteps)
        lrSchedulerType = try v(.lrSchedulerType, d.lrSchedulerType); warmupRatio = try v(.warmupRatio, d.warmupRatio)
        warmupSteps = try v(.warmupSteps, d.warmupSteps); minLRRatio = try v(.minLRRatio, d.minLRRatio)
        weightDecay = try v(.weightDecay, d.weightDecay); adamBeta1 = try v(.adamBeta1, d.adamBeta1)
        adamBeta2 = try v(.adamBeta2, d.adamBeta2); adamEpsilon = try v(.adamEpsilon, d.adamEpsilon)
        maxGradNorm = try v(.maxGradNorm, d.maxGradNorm); gradientCheckpointing = try v(.gradientCheckpointing, d.gradientCheckpointing)
        loggingSteps = try v(.loggingSteps, d.loggingSteps)
        evalSteps = try c.decodeIfPresent(Int.self, forKey: .evalSteps)
        earlyStoppingPatience = try c.decodeIfPresent(Int.self, forKey: .earlyStoppingPatience)
        saveSteps = try c.decodeIfPresent(Int.self, forKey: .saveSteps); saveEachEpoch = try v(.saveEachEpoch, d.saveEachEpoch)
        saveTotalLimit = try c.decodeIfPresent(Int.self, forKey: .saveTotalLimit)
        resumeFromCheckpoint = try c.decodeIfPresent(String.self, forKey: .resumeFromCheckpoint)
        overwriteOutputDir = try v(.overwriteOutputDir, d.overwriteOutputDir); stopOnDivergence = try v(.stopOnDivergence, d.stopOnDivergence)
        seed = try v(.seed, d.seed); samplePrompts = try v(.samplePrompts, d.samplePrompts)
        sampleMaxNewTokens = try v(.sampleMaxNewTokens, d.sampleMaxNewTokens)
        logging = try Self.sinks(c, d.logging)
        zeroStage = try v(.zeroStage, d.zeroStage); collectiveTimeout = try v(.collectiveTimeout, d.collectiveTimeout)
        dataConfig = try DataConfig(from: decoder)
    }

    /// `logging`: a list (or one name, or a comma-separated string from the command line) of
    /// "jsonl" and "tensorboard"; an unknown name is an error listing the known ones.
    static func sinks(_ c: KeyedDecodingContainer<CodingKeys>, _ def: [LogSink]) throws -> [LogSink] {
        let names: [String]
        if let one = try? c.decode(String.self, forKey: .logging) {
            names = one.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        } else if let list = try c.decodeIfPresent([String].self, forKey: .logging) {
            names = list
        } else {
            return def
        }
        return try names.map { n in
            guard let s = LogSink(rawValue: n) else {
                throw SFTError.config(field: "logging", message: "unknown sink \"\(n)\" (known: \(LogSink.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            return s
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(model, forKey: .model); try c.encode(data, forKey: .data)
        try c.encodeIfPresent(evalData, forKey: .evalData); try c.encode(evalSplit, forKey: .evalSplit)
        try c.encode(outputDir, forKey: .outputDir); try c.encode(method, forKey: .method)
        try c.encodeIfPresent(template, forKey: .template); try c.encode(device, forKey: .device)
        try c.encodeIfPresent(threads, forKey: .threads); try c.encode(loraR, forKey: .loraR)
        try c.encode(loraAlpha, forKey: .loraAlpha); try c.encode(loraDropout, forKey: .loraDropout)
        try c.encode(loraTargetModules, forKey: .loraTargetModules); try c.encode(useRSLoRA, forKey: .useRSLoRA)
        try c.encode(modulesToSave, forKey: .modulesToSave); try c.encode(freeze, forKey: .freeze)
        try c.encode(initLoRAWeights, forKey: .initLoRAWeights); try c.encode(rankPattern, forKey: .rankPattern)
        try c.encode(alphaPattern, forKey: .alphaPattern); try c.encode(useDoRA, forKey: .useDoRA)
        try c.encodeIfPresent(loraPlusLRRatio, forKey: .loraPlusLRRatio)
        try c.encodeIfPresent(loraPlusLREmbedding, forKey: .loraPlusLREmbedding)
        try c.encodeIfPresent(neftuneNoiseAlpha, forKey: .neftuneNoiseAlpha)
        try c.encodeIfPresent(quantize, forKey: .quantize); try c.encode(doubleQuant, forKey: .doubleQuant)
        try c.encode(quantBlockSize, forKey: .quantBlockSize)
        try c.encode(learningRate, forKey: .learningRate); try c.encode(numTrainEpochs, forKey: .numTrainEpochs)
        try c.encode(maxSteps, forKey: .maxSteps); try c.encode(perDeviceTrainBatchSize, forKey: .perDeviceTrainBatchSize)
        try c.encode(gradientAccumulationSteps, forKey: .gradientAccumulationSteps)
        try c.encode(lrSchedulerType, forKey: .lrSchedulerType); try c.encode(warmupRatio, forKey: .warmupRatio)
        try c.encode(warmupSteps, forKey: .warmupSteps); try c.encode(minLRRatio, forKey: .minLRRatio)
        try c.encode(weightDecay, forKey: .weightDecay); try c.encode(adamBeta1, forKey: .adamBeta1)
        try c.encode(adamBeta2, forKey: .adamBeta2); try c.encode(adamEpsilon, forKey: .adamEpsilon)
        try c.encode(maxGradNorm, forKey: .maxGradNorm); try c.encode(gradientCheckpointing, forKey: .gradientCheckpointing)
        try c.encode(loggingSteps, forKey: .loggingSteps); try c.encodeIfPresent(evalSteps, forKey: .evalSteps)
        try c.encodeIfPresent(earlyStoppingPatience, forKey: .earlyStoppingPatience)
        try c.encodeIfPresent(saveSteps, forKey: .saveSteps); try c.encode(saveEachEpoch, forKey: .saveEachEpoch)
        try c.encodeIfPresent(saveTotalLimit, forKey: .saveTotalLimit)
        try c.encodeIfPresent(resumeFromCheckpoint, forKey: .resumeFromCheckpoint); try c.encode(seed, forKey: .seed)
        try c.encode(overwriteOutputDir, forKey: .overwriteOutputDir); try c.encode(stopOnDivergence, forKey: .stopOnDivergence)
        try c.encode(samplePrompts, forKey: .samplePrompts); try c.encode(sampleMaxNewTokens, forKey: .sampleMaxNewTokens)
        try c.encode(logging, forKey: .logging)
        try c.encode(zeroStage, forKey: .zeroStage); try c.encode(collectiveTimeout, forKey: .collectiveTimeout)
        try dataConfig.encode(to: encoder)
    }

    /// Every key with its meaning and default, for `--help` and the docs.
    public static let fields: [(key: String, help: String)] = [
        ("model", "GGUF file or HF model folder (required)"),
        ("data", "training data: .json (array), .jsonl or .csv (required)"),
        ("eval_data", "validation file (default: none)"),
        ("eval_split", "fraction of the training data held out for validation (default 0)"),
        ("output_dir", "run folder: adapter/model, checkpoints, metrics.jsonl, loss.svg (default runs/sft)"),
        ("method", "lora | qlora | full (default lora); qlora = LoRA on a 4-bit base"),
        ("template", "chat template: a built-in name or a .jinja file (default: the model's own)"),
        ("device", "cpu (default), cuda or cuda:N; under mpirun/srun, cuda means one GPU per rank (the rank's index on its node)"),
        ("threads", "CPU threads (default: all cores)"),
        ("lora_r", "LoRA rank (default 16)"),
        ("lora_alpha", "LoRA alpha; scaling = alpha/r (default 32)"),
        ("lora_dropout", "dropout on the LoRA input (default 0.05)"),
        ("lora_target_modules", "Linear layer names or all-linear (default all-linear)"),
        ("use_rslora", "scale by alpha/sqrt(r) (default false)"),
        ("init_lora_weights", "true (Kaiming A, zero B) | false | gaussian | pissa | pissa_niter_K | olora (PiSSA/OLoRA adapters are saved converted for the original base)"),
        ("rank_pattern", "per-module ranks by module-name regex (PEFT rules), e.g. {\"q_proj\": 8}"),
        ("alpha_pattern", "per-module alphas, as rank_pattern"),
        ("use_dora", "DoRA: trained magnitude per output row (default false)"),
        ("loraplus_lr_ratio", "LoRA+: lora_B learns at this multiple of learning_rate"),
        ("loraplus_lr_embedding", "LoRA+: learning rate of LoRA on embedding layers (sft adapts Linear layers only: no effect)"),
        ("neftune_noise_alpha", "NEFTune: uniform noise alpha/sqrt(L*d) on input embeddings while training"),
        ("modules_to_save", "modules trained fully and saved with the adapter, e.g. [\"lm_head\"]"),
        ("freeze", "full finetuning: parameter name substrings to keep frozen"),
        ("quantize", "4-bit base: nf4 | fp4 (default nf4 with method qlora)"),
        ("double_quant", "quantize the 4-bit scales again, 8-bit (default true)"),
        ("quant_block_size", "values per 4-bit scale (default 64)"),
        ("learning_rate", "peak learning rate (default 2e-4)"),
        ("num_train_epochs", "epochs (default 1)"),
        ("max_steps", "stop after N optimizer steps; -1 = all epochs (default -1)"),
        ("per_device_train_batch_size", "rows per micro-batch (default 1)"),
        ("gradient_accumulation_steps", "micro-batches per optimizer step (default 1)"),
        ("lr_scheduler_type", "constant | constant_with_warmup | cosine | linear (default linear)"),
        ("warmup_ratio", "warmup as a fraction of steps (default 0)"),
        ("warmup_steps", "warmup steps; overrides warmup_ratio when > 0"),
        ("min_lr_ratio", "cosine floor as a fraction of the peak (default 0)"),
        ("weight_decay", "AdamW decoupled weight decay, not on norms/biases (default 0)"),
        ("adam_beta1", "default 0.9"), ("adam_beta2", "default 0.999"), ("adam_epsilon", "default 1e-8"),
        ("max_grad_norm", "clip gradients to this global norm; 0 = off (default 1)"),
        ("gradient_checkpointing", "recompute each decoder layer in backward (default false)"),
        ("logging_steps", "log every N steps (default 1)"),
        ("eval_steps", "evaluate every N steps (default: at the end)"),
        ("early_stopping_patience", "stop after N evaluations without improvement"),
        ("save_steps", "checkpoint every N steps"), ("save_each_epoch", "checkpoint at each epoch end"),
        ("save_total_limit", "keep only the last N checkpoints"),
        ("resume_from_checkpoint", "a checkpoint folder, or \"latest\" in output_dir"),
        ("overwrite_output_dir", "start fresh in an output_dir holding another run's checkpoints, deleting them (default false)"),
        ("stop_on_divergence", "stop when the loss stays above 4x its running minimum for 20 steps, or sits at ln(vocab) with zero gradient (default true); non-finite losses always stop"),
        ("seed", "seed for initialization, shuffling and dropout (default 42)"),
        ("sample_prompts", "prompts generated from at each evaluation, written to the log"),
        ("sample_max_new_tokens", "length of sample generations (default 64)"),
        ("logging", "metrics sinks: jsonl (always) and tensorboard (event files in output_dir/tensorboard)"),
        ("zero_stage", "under mpirun/srun: 0 = every rank keeps all AdamW states, 1 = states sharded across ranks (default 0)"),
        ("collective_timeout", "under mpirun/srun: seconds a rank waits for the others before the job ends with an error naming the step; 0 = forever (default 1800)"),
        ("format", "dataset format: auto | alpaca | sharegpt | messages | dolly | completion | guanaco | text"),
        ("fields", "field renames, e.g. {\"instruction\": \"question\"}"),
        ("strict", "fail on the first bad record instead of skipping it (default false)"),
        ("limit", "read only N records"), ("subset_seed", "with limit: a random subset with this seed"),
        ("mask_policy", "assistant | last_turn | completion | all (default per format)"),
        ("train_end_of_turn", "train end-of-turn/EOS tokens (default true)"),
        ("max_seq_length", "longest training row (default 2048)"),
        ("packing", "pack examples into rows (default true)"),
        ("padding_free", "without packing: concatenate a micro-batch into one row (default false)"),
        ("cross_document_attention", "packed rows attend across documents (default false)"),
        ("truncation", "truncate | drop | split over-long examples (default truncate)"),
        ("prompt_template", "prompt with {field} placeholders for instruction / prompt-completion records, e.g. the Alpaca or reversed-Dolly prompt"),
        ("span_end", "inclusive | exclusive: whether a data span [begin, end] includes end (default inclusive, Fast-LLM)"),
        ("tools", "JSON file with tool schemas for conversations without their own"),
        ("doctor", "check the data before training and print the findings (default true)"),
    ]

    /// Reads a config from a flat JSON object, rejecting unknown keys (keys starting with "_"
    /// are comments).
    public static func from(json raw: [String: Any], source: String = "config") throws -> FinetuneConfig {
        let object = raw.filter { !$0.key.hasPrefix("_") }
        let known = Set(fields.map(\.key))
        if let bad = object.keys.sorted().first(where: { !known.contains($0) }) {
            throw SFTError.config(field: bad, message: "unknown key in \(source) (see sftctl finetune --help)")
        }
        do {
            let data = try JSONSerialization.data(withJSONObject: object)
            return try JSONDecoder().decode(FinetuneConfig.self, from: data)
        } catch let e as DecodingError {
            switch e {
            case .typeMismatch(_, let ctx), .valueNotFound(_, let ctx), .dataCorrupted(let ctx), .keyNotFound(_, let ctx):
                let key = ctx.codingPath.map(\.stringValue).joined(separator: ".")
                throw SFTError.config(field: key, message: "wrong type in \(source): \(ctx.debugDescription)")
            @unknown default:
                throw SFTError.config(field: "?", message: "\(e)")
            }
        }
    }

    /// Throws for a LoRA-only setting given with method full (it would change nothing).
    public func validateLoRAOnlyKeys() throws {
        guard method == "full" else { return }
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

    /// The 4-bit base, for method qlora (or any method with `quantize` set).
    public func quantization() throws -> QuantizationConfig? {
        guard method == "qlora" || quantize != nil else { return nil }
        let name = quantize ?? "nf4"
        guard let t = QuantType(rawValue: name) else {
            throw SFTError.config(field: "quantize", message: "'\(name)' is not nf4 or fp4")
        }
        let q = QuantizationConfig(type: t, blockSize: quantBlockSize, doubleQuant: doubleQuant)
        try q.validate()
        return q
    }

    /// The trainer part.
    public func trainer() throws -> TrainerConfig {
        var t = TrainerConfig()
        t.learningRate = learningRate
        guard let kind = LRSchedule.Kind(rawValue: lrSchedulerType) else {
            throw SFTError.config(field: "lr_scheduler_type", message: "'\(lrSchedulerType)' is not one of constant, constant_with_warmup, cosine, linear")
        }
        t.schedule = kind
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
