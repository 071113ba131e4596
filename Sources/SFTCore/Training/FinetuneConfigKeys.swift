// The one table of finetune config keys. Each key is declared once, here: its name, HF/TRL/PEFT
// aliases, the property it sets (whose type says how it reads and writes, ConfigValue.swift),
// its allowed range, and its help text. Reading config.json, `--KEY VALUE` flags, writing the
// run's config.json, range checks and `sftctl finetune --help` all come from this table; the
// defaults are the property initial values in FinetuneConfig.swift.
//
// Adding a key: a property in FinetuneConfig (or DataConfig) and one line below.

import Foundation
import SFTKernels

/// One config key.
public struct ConfigKey {
    /// The key as written in config.json and as a flag (`--name` or `--na-me`).
    public let name: String
    /// Other accepted spellings (the HF / TRL / PEFT names where they differ).
    public let aliases: [String]
    /// One line for `sftctl finetune --help`: what the key does.
    public let help: String
    /// The value's shape for `--help`: "integer", "one of: a | b", "list of text".
    public let kind: String
    /// The default as `--help` shows it (nil: none).
    public let defaultText: String?
    /// List keys: flags may repeat and a plain word is one element (or several, comma-separated,
    /// for lists of names).
    public let isList: Bool
    /// A flag word is a comma-separated list (lists of names).
    let splitsCommas: Bool
    /// A string in the file is a comma-separated list too (otherwise it is one element: a
    /// PEFT target_modules string may be a regex).
    let splitsFileStrings: Bool
    let read: (inout FinetuneConfig, JSONValue) throws -> Void
    let write: (FinetuneConfig) -> JSONValue
    let flagJSON: (String) -> JSONValue
    let check: (FinetuneConfig) throws -> Void

    /// - Parameters:
    ///   - range: the allowed values of a number (or of each number of a map).
    ///   - auto: a word that means "not set" (the property's nil).
    ///   - defaultText: shown instead of the default value when that reads better.
    init<V: ConfigValue>(_ name: String, _ path: WritableKeyPath<FinetuneConfig, V>, aliases: [String] = [],
                         range: ConfigRange? = nil, auto: String? = nil, commas: Bool = true, fileCommas: Bool = false,
                         defaultText: String? = nil, _ help: String) {
        self.name = name
        self.aliases = aliases
        self.help = help
        self.isList = V.isConfigList
        self.splitsCommas = V.isConfigList && commas
        self.splitsFileStrings = V.isConfigList && fileCommas
        var kind = V.configKind
        if let auto { kind = "\(auto) | " + kind }
        if let range { kind += " in " + range.description }
        self.kind = kind
        let d = FinetuneConfig()[keyPath: path].configJSON
        switch d {
        case _ where defaultText != nil: self.defaultText = defaultText
        case .null, .string(""): self.defaultText = auto
        case .double(let x): self.defaultText = x != 0 && abs(x) < 1e-3 ? "\(x)" : ConfigRange.text(x)
        default: self.defaultText = d.stringValue ?? d.serialized()
        }
        read = { config, j in
            let isAuto = auto != nil && j.stringValue?.lowercased() == auto
            config[keyPath: path] = try V(configJSON: isAuto ? .null : j)
        }
        write = { $0[keyPath: path].configJSON }
        flagJSON = { V.configJSON(flag: $0) }
        check = { config in
            guard let range else { return }
            for (label, v) in config[keyPath: path].configNumbers where !range.contains(v) {
                throw SFTError.config(field: name + label, message: range.refusal(v))
            }
        }
    }
}

/// An interval of allowed numbers.
public struct ConfigRange: CustomStringConvertible {
    /// The interval's ends (`upper` ∞ when unbounded).
    public var lower: Double, upper: Double = .infinity
    /// Whether each end is excluded (default: lower included, upper excluded).
    public var lowerOpen = false, upperOpen = true

    static func atLeast(_ x: Double) -> ConfigRange { ConfigRange(lower: x) }
    static func above(_ x: Double) -> ConfigRange { ConfigRange(lower: x, lowerOpen: true) }
    /// [lo, hi] with `open` ends as asked.
    static func between(_ lo: Double, _ hi: Double, lowerOpen: Bool = false, upperOpen: Bool = false) -> ConfigRange {
        ConfigRange(lower: lo, upper: hi, lowerOpen: lowerOpen, upperOpen: upperOpen)
    }

    func contains(_ v: Double) -> Bool {
        (lowerOpen ? v > lower : v >= lower) && (upperOpen ? v < upper : v <= upper)
    }
    static func text(_ x: Double) -> String {
        x == .infinity ? "∞" : x.rounded() == x && abs(x) < 1e15 ? String(Int(x)) : "\(x)"
    }
    public var description: String {
        "\(lowerOpen ? "(" : "[")\(Self.text(lower)), \(Self.text(upper))\(upperOpen ? ")" : "]")"
    }
    func refusal(_ v: Double) -> String {
        if upper == .infinity && !lowerOpen { return "must be at least \(Self.text(lower)), got \(Self.text(v))" }
        return "\(Self.text(v)) is outside \(description)"
    }
}

extension FinetuneConfig {
    /// Every key, in `--help` order.
    public static var keys: [ConfigKey] {
        let positive = ConfigRange.above(0), unit = ConfigRange.between(0, 1, upperOpen: true)
        return [
        ConfigKey("model", \.model, "GGUF file or HF model folder (required)"),
        ConfigKey("data", \.data, "training data: .json (array), .jsonl or .csv (required)"),
        ConfigKey("eval_data", \.evalData, "validation file"),
        ConfigKey("eval_split", \.evalSplit, range: unit, "fraction of the training data held out for validation"),
        ConfigKey("output_dir", \.outputDir, "run folder: adapter/ or model/, checkpoints, metrics.jsonl, loss.svg"),
        ConfigKey("method", \.method, "qlora = LoRA on a 4-bit base; full trains the weights themselves"),
        ConfigKey("template", \.template, defaultText: "the model's own", "chat template: a built-in name or a .jinja file"),
        ConfigKey("device", \.device, "cpu, cuda or cuda:N; under mpirun/srun, cuda means one GPU per rank (the rank's index on its node)"),
        ConfigKey("threads", \.threads, range: .atLeast(1), defaultText: "all cores", "CPU threads"),
        ConfigKey("precision", \.precision, "matmul precision: f32, or bf16 (frozen base weights stored bf16, bf16 products with f32 accumulation; masters, adapters and AdamW states f32)"),
        ConfigKey("allow_precision_change", \.allowPrecisionChange, "resume a checkpoint written in the other precision"),
        ConfigKey("lora_r", \.loraR, aliases: ["r"], range: .atLeast(1), "LoRA rank"),
        ConfigKey("lora_alpha", \.loraAlpha, range: positive, "LoRA alpha; scaling = alpha/r"),
        ConfigKey("lora_dropout", \.loraDropout, range: unit, "dropout on the LoRA input"),
        ConfigKey("lora_target_modules", \.loraTargetModules, aliases: ["target_modules"], "Linear layer names or all-linear"),
        ConfigKey("use_rslora", \.useRSLoRA, "scale by alpha/sqrt(r)"),
        ConfigKey("init_lora_weights", \.initLoRAWeights, "true: Kaiming A, zero B; false: both random (PiSSA/OLoRA adapters are saved converted for the original base)"),
        ConfigKey("rank_pattern", \.rankPattern, range: .atLeast(1), "per-module ranks by module-name regex (PEFT rules), e.g. {\"q_proj\": 8}"),
        ConfigKey("alpha_pattern", \.alphaPattern, range: positive, "per-module alphas, as rank_pattern"),
        ConfigKey("use_dora", \.useDoRA, "DoRA: trained magnitude per output row"),
        ConfigKey("loraplus_lr_ratio", \.loraPlusLRRatio, range: positive, "LoRA+: lora_B learns at this multiple of learning_rate"),
        ConfigKey("loraplus_lr_embedding", \.loraPlusLREmbedding, range: positive, "LoRA+: learning rate of LoRA on embedding layers (sft adapts Linear layers only: no effect)"),
        ConfigKey("neftune_noise_alpha", \.neftuneNoiseAlpha, range: .atLeast(0), "NEFTune: uniform noise alpha/sqrt(L*d) on input embeddings while training"),
        ConfigKey("modules_to_save", \.modulesToSave, "modules trained fully and saved with the adapter, e.g. [\"lm_head\"]"),
        ConfigKey("freeze", \.freeze, "full finetuning: parameter name substrings to keep frozen"),
        ConfigKey("quantize", \.quantize, defaultText: "nf4 with method qlora", "the 4-bit base's number format"),
        ConfigKey("double_quant", \.doubleQuant, "quantize the 4-bit scales again, 8-bit"),
        ConfigKey("quant_block_size", \.quantBlockSize, "values per 4-bit scale: a power of two in [16, 4096]"),
        ConfigKey("learning_rate", \.learningRate, range: positive, "peak learning rate"),
        ConfigKey("num_train_epochs", \.numTrainEpochs, range: .atLeast(0), "epochs"),
        ConfigKey("max_steps", \.maxSteps, "stop after N optimizer steps; -1 = all epochs"),
        ConfigKey("per_device_train_batch_size", \.perDeviceTrainBatchSize, range: .atLeast(1), "rows per micro-batch"),
        ConfigKey("gradient_accumulation_steps", \.gradientAccumulationSteps, range: .atLeast(1), "micro-batches per optimizer step"),
        ConfigKey("lr_scheduler_type", \.lrSchedulerType, "learning-rate schedule after warmup"),
        ConfigKey("warmup_ratio", \.warmupRatio, range: .between(0, 1), "warmup as a fraction of steps"),
        ConfigKey("warmup_steps", \.warmupSteps, range: .atLeast(0), "warmup steps; overrides warmup_ratio when > 0"),
        ConfigKey("min_lr_ratio", \.minLRRatio, range: .between(0, 1), "cosine floor as a fraction of the peak"),
        ConfigKey("weight_decay", \.weightDecay, range: .atLeast(0), "AdamW decoupled weight decay, not on norms/biases"),
        ConfigKey("adam_beta1", \.adamBeta1, range: unit, "AdamW beta1"),
        ConfigKey("adam_beta2", \.adamBeta2, range: unit, "AdamW beta2"),
        ConfigKey("adam_epsilon", \.adamEpsilon, range: .between(0, 1, lowerOpen: true), "AdamW epsilon"),
        ConfigKey("max_grad_norm", \.maxGradNorm, range: .atLeast(0), "clip gradients to this global norm; 0 = off"),
        ConfigKey("gradient_checkpointing", \.gradientCheckpointing, "recompute each decoder layer in backward"),
        ConfigKey("logging_steps", \.loggingSteps, range: .atLeast(1), "log every N steps"),
        ConfigKey("eval_steps", \.evalSteps, range: .atLeast(1), defaultText: "at the end", "evaluate every N steps"),
        ConfigKey("early_stopping_patience", \.earlyStoppingPatience, range: .atLeast(1), "stop after N evaluations without improvement"),
        ConfigKey("save_steps", \.saveSteps, range: .atLeast(1), "checkpoint every N steps"),
        ConfigKey("save_each_epoch", \.saveEachEpoch, "checkpoint at each epoch end"),
        ConfigKey("save_total_limit", \.saveTotalLimit, range: .atLeast(1), "keep only the last N checkpoints"),
        ConfigKey("resume_from_checkpoint", \.resumeFromCheckpoint, "a checkpoint folder, or \"latest\" in output_dir"),
        ConfigKey("overwrite_output_dir", \.overwriteOutputDir, "start fresh in an output_dir holding another run's checkpoints, deleting them"),
        ConfigKey("stop_on_divergence", \.stopOnDivergence, "stop when the loss stays above 4x its running minimum for 20 steps, or sits at ln(vocab) with zero gradient; non-finite losses always stop"),
        ConfigKey("skip_memory_check", \.skipMemoryCheck, "start even when the memory estimate exceeds the available memory"),
        ConfigKey("seed", \.seed, "seed for initialization, shuffling and dropout"),
        ConfigKey("sample_prompts", \.samplePrompts, commas: false, "prompts generated from at each evaluation, written to the log (repeat the flag for several)"),
        ConfigKey("sample_max_new_tokens", \.sampleMaxNewTokens, range: .atLeast(1), "length of sample generations"),
        ConfigKey("logging", \.logging, fileCommas: true, "metrics sinks: jsonl (always) and tensorboard (event files in output_dir/tensorboard)"),
        ConfigKey("zero_stage", \.zeroStage, range: .between(0, 1), "under mpirun/srun: 0 = every rank keeps all AdamW states, 1 = states sharded across ranks"),
        ConfigKey("collective_timeout", \.collectiveTimeout, range: .atLeast(0), "under mpirun/srun: seconds a rank waits for the others before the job ends with an error naming the step; 0 = forever"),
        ConfigKey("ddp_bucket_cap_mb", \.ddpBucketCapMB, range: positive, "under mpirun/srun: megabytes of gradients per all-reduce bucket; buckets start while the backward runs"),
        // The data part (DataConfig), read from the same flat object.
        ConfigKey("format", \.dataConfig.format, auto: "auto", "dataset format"),
        ConfigKey("fields", \.dataConfig.fields, "field renames, e.g. {\"instruction\": \"question\"}"),
        ConfigKey("strict", \.dataConfig.strict, "fail on the first bad record instead of skipping it"),
        ConfigKey("limit", \.dataConfig.limit, range: .atLeast(0), "read only N records"),
        ConfigKey("subset_seed", \.dataConfig.subsetSeed, "with limit: a random subset with this seed"),
        ConfigKey("mask_policy", \.dataConfig.maskPolicy, defaultText: "per format", "which tokens train"),
        ConfigKey("train_end_of_turn", \.dataConfig.trainEndOfTurn, "train end-of-turn/EOS tokens"),
        ConfigKey("max_seq_length", \.dataConfig.maxSeqLength, aliases: ["max_length"], range: .atLeast(1), "longest training row"),
        ConfigKey("packing", \.dataConfig.packing, "pack examples into rows"),
        ConfigKey("padding_free", \.dataConfig.paddingFree, "without packing: concatenate a micro-batch into one row"),
        ConfigKey("cross_document_attention", \.dataConfig.crossDocumentAttention, "packed rows attend across documents"),
        ConfigKey("truncation", \.dataConfig.truncation, "what happens to over-long examples"),
        ConfigKey("prompt_template", \.dataConfig.promptTemplate, "prompt with {field} placeholders for instruction / prompt-completion records, e.g. the Alpaca or reversed-Dolly prompt"),
        ConfigKey("span_end", \.dataConfig.spanEnd, "whether a data span [begin, end] includes end (inclusive: Fast-LLM's convention)"),
        ConfigKey("tools", \.dataConfig.tools, "JSON file with tool schemas for conversations without their own"),
        ConfigKey("doctor", \.dataConfig.doctor, "check the data before training and print the findings"),
        ]
    }

    /// The key named `name` (or one of its aliases; `-` and `_` are the same).
    public static func key(named name: String) -> ConfigKey? {
        let n = name.replacingOccurrences(of: "-", with: "_")
        return keys.first { $0.name == n || $0.aliases.contains(n) }
    }

    /// `--help`'s list of keys: name, help, allowed values and default.
    public static var keysHelp: String {
        var s = ""
        for k in keys {
            s += "  " + k.name.padding(toLength: 29, withPad: " ", startingAt: 0) + " " + k.help + "\n"
            var detail = k.kind
            if let d = k.defaultText { detail += "; default \(d)" }
            if !k.aliases.isEmpty { detail += "; also \(k.aliases.joined(separator: ", "))" }
            s += String(repeating: " ", count: 34) + "(" + detail + ")\n"
        }
        return s
    }

    static func unknownKey(_ name: String, in source: String) -> SFTError {
        let names = keys.flatMap { [$0.name] + $0.aliases }
        let n = name.replacingOccurrences(of: "-", with: "_")
        let nearest = names.min { editDistance(n, $0) < editDistance(n, $1) }
        let hint = nearest.map { editDistance(n, $0) <= max(2, $0.count / 3) ? "; did you mean \($0)?" : "" } ?? ""
        return SFTError.config(field: name, message: "unknown key in \(source)\(hint) (see sftctl finetune --help)")
    }

    /// Reads a config from a flat JSON object, rejecting unknown keys (keys starting with "_"
    /// are comments) and a key given twice under two spellings.
    public static func from(json: JSONValue, source: String = "config") throws -> FinetuneConfig {
        try from(json: json, flags: [], source: source)
    }

    /// Reads a config file's bytes (a JSON object).
    public static func from(jsonData: Data, source: String = "config") throws -> FinetuneConfig {
        try from(json: try JSONValue(parsing: jsonData, path: source), source: source)
    }

    /// Reads `json` and then the flags over it: `(name, words)` with the name as typed after
    /// `--` (underscores or hyphens, or an alias) and every word given for it. A scalar key takes
    /// the last word; a list key takes every word, each a JSON list or one element (names:
    /// comma-separated). Errors name the key, with the nearest known key for an unknown one.
    public static func from(json: JSONValue, flags: [(name: String, words: [String])], source: String = "config") throws -> FinetuneConfig {
        guard let pairs = json.objectValue else {
            throw SFTError.config(field: "", message: "\(source) is not a JSON object")
        }
        let table = keys
        var index: [String: Int] = [:]
        for (i, k) in table.enumerated() { for n in [k.name] + k.aliases { index[n] = i } }
        var values: [Int: (spelled: String, value: JSONValue, from: String)] = [:]
        for (name, value) in pairs where !name.hasPrefix("_") {
            guard let i = index[name] else { throw unknownKey(name, in: source) }
            if let earlier = values[i] {
                throw SFTError.config(field: table[i].name, message: "given twice in \(source), as \(earlier.spelled) and \(name)")
            }
            values[i] = (name, value, source)
        }
        for (flag, words) in flags where !words.isEmpty {
            guard let i = index[flag.replacingOccurrences(of: "-", with: "_")] else { throw unknownKey(flag, in: "flags") }
            let k = table[i]
            var value: JSONValue
            if k.isList {
                var items: [JSONValue] = []
                for w in words {
                    switch k.flagJSON(w) {
                    case .array(let a): items += a
                    case .string(let s) where k.splitsCommas:
                        items += s.split(separator: ",").map { .string($0.trimmingCharacters(in: .whitespaces)) }
                    case let other: items.append(other)
                    }
                }
                value = .array(items)
            } else {
                value = k.flagJSON(words.last!)
            }
            values[i] = ("--" + flag, value, "flags")
        }
        var config = FinetuneConfig()
        for (i, v) in values.sorted(by: { $0.key < $1.key }) {
            let k = table[i]
            var value = v.value
            if k.splitsFileStrings, case .string(let s) = value {
                value = .array(s.split(separator: ",").map { .string($0.trimmingCharacters(in: .whitespaces)) })
            }
            do { try k.read(&config, value) } catch let e as ConfigValueError {
                throw SFTError.config(field: k.name, message: "\(e) (in \(v.from))")
            }
        }
        return config
    }

    /// The config as one flat JSON object (what config.json holds); unset optionals are left out.
    public func json() -> JSONValue {
        .object(Self.keys.compactMap { k in
            let v = k.write(self)
            return v.isNull ? nil : (k.name, v)
        })
    }

    /// The config as `sftctl finetune` flags (`--name value` pairs; list keys as JSON lists).
    public func flags() -> [String] {
        Self.keys.flatMap { k -> [String] in
            let v = k.write(self)
            if v.isNull { return [] }
            return ["--" + k.name, v.stringValue ?? v.serialized()]
        }
    }

    /// Throws when a number is outside its key's range, naming the key, the value and the range.
    func checkRanges() throws {
        for k in Self.keys { try k.check(self) }
    }
}

/// Levenshtein distance, for "did you mean".
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
    var row = Array(0...b.count)
    for i in 1...a.count {
        var diagonal = row[0]
        row[0] = i
        for j in 1...b.count {
            let up = row[j]
            row[j] = min(row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1))
            diagonal = up
        }
    }
    return row[b.count]
}
