// `Finetune.run`: the whole finetuning job behind `sftctl finetune`, as a library call.
// Loads the model with its tokenizer and template, attaches LoRA (or unfreezes for full
// finetuning), prepares and packs the data, trains with checkpoints and logs, and writes the
// result: a PEFT adapter folder (LoRA) or the trained weights (full). Started by mpirun/srun,
// each process is one rank of a data-parallel job (DataParallel.swift): rank 0 holds the run
// folder and writes every file.

import Foundation
import SFTKernels

/// An event handler's answer: go on, or stop the run at this step boundary (the result is
/// then written from the last step, as when `max_steps` is reached).
public enum RunControl: Sendable {
    /// Go on training.
    case `continue`
    /// Stop after this step: the result is written as when `max_steps` is reached.
    case stop
}

/// What a finished (or stopped) run leaves: its summary, where the result was written, and the
/// data reports.
public struct FinetuneResult {
    /// Steps, final and best eval loss, tokens, time and peak memory.
    public var summary: TrainSummary
    /// The adapter folder (LoRA) or weights file (full finetuning).
    public var output: URL
    /// The run folder (`output_dir`): metrics, checkpoints, config.json.
    public var runDirectory: URL
    /// Records read and skipped (with why).
    public var datasetReport: DatasetReport
    /// Examples formatted, tokens and trained tokens.
    public var formattingReport: FormattingReport
    /// Rows, steps and padding of the batch plan.
    public var packingReport: PackingReport
}

/// The whole finetuning job behind `sftctl finetune`, as one call.
///
/// ```swift
/// var config = FinetuneConfig()
/// config.model = "model.gguf"
/// config.data = "train.jsonl"
/// let result = try Finetune.run(config) { event in
///     if case .step(let metrics, let total) = event { print(metrics.step, total, metrics.loss ?? .nan) }
///     return .continue
/// }
/// ```
public enum Finetune {
    /// Runs the job `config` describes. `onEvent` sees progress and answers `.continue` or
    /// `.stop` (stops after the current step; the result is still written). `stop`: a flag
    /// another thread or a signal handler may raise to stop the same way.
    /// `collective`: the job's ranks (default: MPI when started by mpirun/srun, else this
    /// process alone); only rank 0 reports to `onEvent`.
    public static func run(_ config: FinetuneConfig, stop: StopFlag = StopFlag(),
                           collective: (any Collective)? = nil,
                           onEvent events: ((TrainerEvent) -> RunControl)? = nil) throws -> FinetuneResult {
        guard !config.model.isEmpty else { throw SFTError.config(field: "model", message: "required") }
        guard !config.data.isEmpty else { throw SFTError.config(field: "data", message: "required") }
        try config.validate()
        guard config.collectiveTimeout >= 0 else { throw SFTError.config(field: "collective_timeout", message: "must be >= 0 seconds (0: wait forever)") }
        let world = try collective ?? worldCollective(timeout: config.collectiveTimeout)
        world.timeout = config.collectiveTimeout
        let report: ((TrainerEvent) -> RunControl)? = world.rank == 0 ? events : nil
        let onEvent: ((TrainerEvent) -> Void)? = report.map { r in { _ = r($0) } }
        let device = config.device.device(localRank: world.size > 1 ? launchedLocalRank() : nil)   // one GPU per rank
        if let t = config.threads { setCPUThreads(t) }
        let backend = try SFTKernels.backend(for: device)
        // On GPUs, NCCL sums the gradients in device memory when it loads.
        let (group, deviceNote) = try deviceCollective(world, for: backend)
        if group.size > 1 {
            onEvent?(.message("data parallel: \(group.summary), zero_stage \(config.zeroStage); global batch = \(config.perDeviceTrainBatchSize) × \(config.gradientAccumulationSteps) × \(group.size) rows"))
            if let deviceNote { onEvent?(.message("data parallel: \(deviceNote)")) }
        }
        let quantization = try config.quantization()
        if quantization != nil && config.method == .full {
            throw SFTError.config(field: "quantize", message: "a 4-bit base cannot be fully finetuned; use method qlora")
        }
        // Before loading: a model (and run) that cannot fit is refused before its weights allocate.
        if !config.skipMemoryCheck,
           let before = try FinetuneMemoryCheck.estimate(beforeLoading: URL(fileURLWithPath: config.model), quantization: quantization,
                                                         config: config, ranks: group.size) {
            try FinetuneMemoryCheck.check(before, available: FinetuneMemoryCheck.available(on: backend),
                                          device: "\(config.device)", config: config, loaded: false)
        }
        // bf16: the Linears that stay frozen load straight into bf16 (no f32 copy of the model).
        let lm = try LanguageModel.load(URL(fileURLWithPath: config.model), on: backend, template: config.template,
                                        quantization: quantization,
                                        bf16Linears: config.precision == .bf16 ? { config.loadsBF16(linear: $0) } : nil)
        let model = lm.model
        // Before LoRA, data and training allocate: refuse a run that cannot fit.
        if let estimate = try FinetuneMemoryCheck.estimate(model: model, quantization: quantization, config: config, ranks: group.size) {
            onEvent?(.message("memory estimate: \(estimate)"))
            if !config.skipMemoryCheck {
                try FinetuneMemoryCheck.check(estimate, available: FinetuneMemoryCheck.available(on: backend),
                                              device: "\(config.device)", config: config)
            }
        }
        switch config.method {
        case .lora, .qlora:
            try model.applyLoRA(config.lora, seed: config.seed)
            if config.loraPlusLREmbedding != nil {
                onEvent?(.message("loraplus_lr_embedding: sft adapts Linear layers only, so there is no embedding LoRA for it to apply to"))
            }
        case .full:
            try config.validateLoRAOnlyKeys()
            model.setTrainable(true)
            for (name, p) in model.namedParameters() where config.freeze.contains(where: { name.contains($0) }) {
                p.trainable = false
            }
        }
        onEvent?(.message("model: \(model.modelType), \(model.parameterCount()) parameters, \(model.parameterCount(trainableOnly: true)) trainable (\(config.method))"))

        // Data, checked by the data doctor in the same pass (its warnings open the run).
        let renderer = lm.chatTemplate.map { TemplateRenderer(template: $0, tokenizer: lm.tokenizer) }
        let padId = lm.tokenizer.padTokenId ?? lm.tokenizer.eosTokenId ?? 0
        let prepared = try prepareDataset(URL(fileURLWithPath: config.data), config: config.dataConfig,
                                          tokenizer: lm.tokenizer, renderer: renderer, doctor: config.dataConfig.doctor, padId: padId)
        if let d = prepared.doctorReport { onEvent?(.message(d.description)) }
        var train = prepared.examples
        var evalExamples: [TokenizedExample] = []
        if let e = config.evalData {
            evalExamples = try prepareDataset(URL(fileURLWithPath: e), config: config.dataConfig, tokenizer: lm.tokenizer,
                                              renderer: renderer).examples
        } else if config.evalSplit > 0 {
            guard config.evalSplit < 1 else { throw SFTError.config(field: "eval_split", message: "must be below 1") }
            let order = DataShuffle.permutation(count: train.count, seed: config.seed ^ 0xE7A1)
            let nEval = max(1, Int(Double(train.count) * config.evalSplit))
            let evalSet = Set(order.prefix(nEval))
            evalExamples = order.prefix(nEval).sorted().map { train[$0] }
            train = train.indices.filter { !evalSet.contains($0) }.map { train[$0] }
        }
        guard !train.isEmpty else {
            throw SFTError.data(path: config.data, line: 0, message: "no usable training examples (\(prepared.datasetReport))")
        }
        let options = try config.dataConfig.batchingOptions(microBatchSize: config.perDeviceTrainBatchSize,
                                                            gradientAccumulation: config.gradientAccumulationSteps * group.size,
                                                            epochs: config.numTrainEpochs, seed: config.seed, padId: padId)
        let plan = try BatchPlan(examples: train, options: options)
        guard plan.totalSteps > 0 else {
            throw SFTError.data(path: config.data, line: 0, message: "no training steps: \(plan.report)")
        }
        var evalBatches: [TrainingBatch] = []
        if !evalExamples.isEmpty {
            var eo = options
            eo.epochs = 1; eo.shuffle = false; eo.gradientAccumulation = 1
            let ep = try BatchPlan(examples: evalExamples, options: eo)
            evalBatches = (0..<ep.microBatchesPerEpoch).map { ep.microBatch(epoch: 0, index: $0) }
        }
        onEvent?(.message("data: \(prepared.datasetReport.examples) examples (\(prepared.datasetReport.skipped.count) skipped), \(train.count) train / \(evalExamples.count) eval; \(plan.report)"))

        // Trainer. The run (rank 0) holds its folder's lock until it returns.
        let out = URL(fileURLWithPath: config.outputDir)
        let lock = group.rank == 0 ? try RunFolderLock(folder: out) : nil
        defer { lock?.release() }
        let earlier = group.rank == 0 ? Trainer.checkpoints(in: out) : []
        if !earlier.isEmpty && config.resumeFromCheckpoint == nil {
            guard config.overwriteOutputDir else {
                throw SFTError.config(field: "output_dir", message: "\(out.path) holds checkpoints of an earlier run (\(earlier.map(\.lastPathComponent).joined(separator: ", "))); resume it with resume_from_checkpoint, or set overwrite_output_dir to start over")
            }
            for c in earlier { try FileManager.default.removeItem(at: c) }
            onEvent?(.message("overwrite_output_dir: deleted \(earlier.count) earlier checkpoints in \(out.path)"))
        }
        let fingerprint = ["model": config.model, "method": config.method.rawValue,
                           "lora": config.method == .full ? "-" : "\(config.lora)", "data_file": config.data,
                           "quantization": quantization.map { "\($0)" } ?? "-"]
        let trainer = try Trainer(model: model, config: try config.trainer(), loader: try DataLoader(plan: plan),
                                  evalBatches: evalBatches, outputDirectory: out, fingerprint: fingerprint,
                                  collective: group, zeroStage: config.zeroStage,
                                  bucketBytes: max(1, Int(config.ddpBucketCapMB * 1_048_576)),
                                  precision: config.precision, allowPrecisionChange: config.allowPrecisionChange)
        trainer.stopFlag = stop
        if config.logging.contains(.tensorboard) {
            let settings = JSONEncoder()
            settings.outputFormatting = [.prettyPrinted, .sortedKeys]
            let text = String(decoding: try settings.encode(config), as: UTF8.self)
            trainer.tensorBoardHyperparameters = "```json\n" + text + "\n```"
        }
        trainer.onSave = { dir in try saveResult(lm: lm, config: config, into: dir) }
        let samples = SampleWriter(lm: lm, config: config, directory: out)
        trainer.onEvent = { e in
            let answer = report?(e) ?? .continue
            if case .eval(let step, _) = e { samples.write(step: step) }
            return answer
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        if group.rank == 0 { try writeSynced(try encoder.encode(config), to: out.appendingPathComponent("config.json")) }

        // Rank 0 picks the checkpoint (after its folder checks above) and tells the others.
        var resume: URL? = nil
        if let r = config.resumeFromCheckpoint {
            if r == "latest" {
                resume = Trainer.checkpoints(in: out).last
                if resume == nil { onEvent?(.message("no checkpoint in \(out.path) yet: starting fresh")) }
            } else {
                resume = URL(fileURLWithPath: r)
            }
        }
        if group.size > 1 {
            let path = try trainer.parallel.atStep(0, "sharing the checkpoint to resume") { try group.broadcast(resume?.path ?? "") }
            resume = path.isEmpty ? nil : URL(fileURLWithPath: path)
        }
        let summary = try trainer.train(resumeFrom: resume)
        if group.size > 1 {
            let b = trainer.parallel.buckets
            onEvent?(.message("data parallel: \(b.startedEarly) of \(b.startedTotal) gradient all-reduces (\(b.buckets.count) buckets per step) started during the backward"))
        }
        // The final weights go into a checkpoint first (unless the last step has one), so a
        // failed final save never loses the run; then the output replaces any earlier one whole.
        if trainer.lastCheckpointStep != summary.steps {
            let ck = try trainer.saveCheckpoint(elapsed: summary.seconds)
            onEvent?(.checkpoint(ck))
        }
        let dest = out.appendingPathComponent(config.method == .full ? "model" : "adapter")
        if group.rank == 0 { try writeFolderAtomically(dest) { try saveResult(lm: lm, config: config, into: $0) } }
        return FinetuneResult(summary: summary, output: dest, runDirectory: out, datasetReport: prepared.datasetReport,
                              formattingReport: prepared.formattingReport, packingReport: plan.report)
    }

    /// Writes the adapter (LoRA) or the trained weights (full) into `dir`.
    static func saveResult(lm: LanguageModel, config: FinetuneConfig, into dir: URL) throws {
        if config.method != .full {
            try PEFTAdapter.save(lm.model, config: config.lora, baseModel: config.model, to: dir)
        } else {
            try HFExport.saveModel(lm, to: dir)
        }
    }
}

/// Generates from the configured sample prompts at evaluation time into samples.jsonl.
final class SampleWriter {
    let lm: LanguageModel
    let config: FinetuneConfig
    let url: URL

    init(lm: LanguageModel, config: FinetuneConfig, directory: URL) {
        self.lm = lm; self.config = config
        url = directory.appendingPathComponent("samples.jsonl")
    }

    func write(step: Int) {
        guard !config.samplePrompts.isEmpty else { return }
        var lines = ""
        for prompt in config.samplePrompts {
            guard let ids = try? (lm.chatTemplate != nil ? lm.chatPrompt([ChatMessage(role: "user", content: prompt)]) : lm.encodePrompt(prompt)),
                  let r = try? lm.generator.generate(prompt: ids, config: GenerationConfig(maxNewTokens: config.sampleMaxNewTokens)) else { continue }
            let o: [String: Any] = ["step": step, "prompt": prompt, "completion": r.text]
            if let d = try? JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]), let s = String(data: d, encoding: .utf8) {
                lines += s + "\n"
            }
        }
        if let h = FileHandle(forWritingAtPath: url.path) ?? {
            _ = FileManager.default.createFile(atPath: url.path, contents: nil); return FileHandle(forWritingAtPath: url.path)
        }() {
            h.seekToEndOfFile(); h.write(Data(lines.utf8)); try? h.close()
        }
    }
}
