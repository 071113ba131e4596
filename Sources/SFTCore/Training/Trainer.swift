// The training loop: optimizer steps over a DataLoader, the exact token-mean loss per step,
// gradient clipping, AdamW with a schedule, periodic evaluation with early stopping, JSON Lines
// metrics, and checkpoints that resume bit-for-bit (see Checkpoint.swift).
//
// Exact loss: every micro-batch's summed token loss is divided by the trained-token count of
// the whole optimizer step, so the step's loss and gradients equal those of one unpacked,
// unaccumulated batch of the same tokens. With several ranks (DataParallel.swift) each runs its
// share of the step's micro-batches and the gradients are summed once per step.

import Foundation
import SFTKernels

/// The optimizer, schedule, logging, evaluation and checkpoint settings of a `Trainer`
/// (`FinetuneConfig.trainer()` derives them from a run's configuration).
public struct TrainerConfig: Codable, Equatable, Sendable {
    /// Peak learning rate (`learning_rate`); default 2e-4.
    public var learningRate: Double = 2e-4
    /// Schedule after warmup (`lr_scheduler_type`); default linear.
    public var schedule: LRSchedule.Kind = .linear
    /// Warmup as a fraction of the total steps (`warmup_ratio`); default 0.
    public var warmupRatio: Double = 0
    /// Warmup steps; overrides `warmupRatio` when above 0 (`warmup_steps`).
    public var warmupSteps: Int = 0
    /// Floor of the cosine schedule, as a fraction of the peak.
    public var minLRRatio: Double = 0
    /// AdamW's betas, epsilon and weight decay.
    public var adamw = AdamWConfig()
    /// Clip gradients to this global L2 norm; 0: no clipping (`max_grad_norm`); default 1.
    public var maxGradNorm: Double = 1
    /// Stop after this many optimizer steps (nil: run every epoch of the data plan).
    public var maxSteps: Int? = nil
    /// Recompute each decoder layer in the backward pass instead of keeping its activations
    /// (`gradient_checkpointing`).
    public var gradientCheckpointing: Bool = false
    /// Log metrics every N optimizer steps (`logging_steps`); default 1.
    public var loggingSteps: Int = 1
    /// Evaluate every N steps (nil: only at the end, when eval data exists).
    public var evalSteps: Int? = nil
    /// Stop when eval loss has not improved for this many evaluations (nil: never).
    public var earlyStoppingPatience: Int? = nil
    /// Save a checkpoint every N steps (nil: never during the run).
    public var saveSteps: Int? = nil
    /// Also checkpoint at the end of each epoch (`save_each_epoch`).
    public var saveEachEpoch: Bool = false
    /// Keep at most this many checkpoints (oldest deleted first).
    public var saveTotalLimit: Int? = nil
    /// Seed of the dropout and NEFTune noise stream (`seed`); default 42. The data order has its
    /// own seed, in `BatchingOptions`.
    public var seed: UInt64 = 42
    /// Stop when the loss runs away: above `Divergence.factor` × its running minimum for
    /// `Divergence.patience` steps in a row, or at ln(vocab) with zero gradient as long.
    /// Non-finite losses and gradient norms stop the run whatever this says.
    public var stopOnDivergence: Bool = true
    /// LoRA+ (Hayou et al. 2024): lora_B learns at this multiple of the learning rate.
    public var loraPlusLRRatio: Double? = nil
    /// NEFTune: uniform noise on the input embeddings while training (Embedding.neftuneNoiseAlpha).
    public var neftuneNoiseAlpha: Double? = nil

    /// The defaults above (those of `FinetuneConfig`).
    public init() {}
}

/// What the trainer reports while it runs.
public enum TrainerEvent {
    /// A logged optimizer step: its metrics, and the steps the run will take in all.
    case step(StepMetrics, totalSteps: Int)
    /// An evaluation after `step` optimizer steps: the mean validation loss (nats per trained
    /// token).
    case eval(step: Int, loss: Double)
    /// A checkpoint folder was written.
    case checkpoint(URL)
    /// A line for the user (early stopping, resumption, warnings).
    case message(String)
}

/// How a `Trainer.train()` run ended.
public struct TrainSummary: Sendable {
    /// Optimizer steps done in all (a resumed run counts the earlier ones).
    public var steps: Int
    /// The last step's training loss (nil when no step ran).
    public var finalLoss: Double?
    /// The lowest validation loss seen (nil without evaluation).
    public var bestEvalLoss: Double?
    /// Whether early stopping ended the run.
    public var stoppedEarly: Bool
    /// Trained tokens over the run.
    public var trainedTokens: Int
    /// Wall-clock seconds of training (a resumed run counts its earlier time too).
    public var seconds: Double
    /// The backend's peak allocated memory in bytes.
    public var peakMemoryBytes: Int
}

/// Runs optimizer steps over a data plan: exact token-level loss over accumulated micro-batches,
/// clipping, AdamW and the learning-rate schedule, with evaluation, logs, checkpoints and exact
/// resumption. `Finetune.run` builds one; use it directly to train a model built in code.
public final class Trainer {
    /// The model being trained.
    public let model: CausalLM
    /// The trainer's settings.
    public let config: TrainerConfig
    /// The trainable parameters by name (adapters for LoRA; unfrozen weights for full finetuning).
    public let parameters: [(String, Parameter)]
    /// The optimizer over `parameters`.
    public let optimizer: AdamW
    /// The ranks this trainer runs with (one process: a single-process group).
    public let parallel: DataParallel
    /// The training data stream; its cursor is where the next step starts (saved in checkpoints).
    public internal(set) var loader: DataLoader
    /// The validation micro-batches (empty: no evaluation).
    public let evalBatches: [TrainingBatch]
    /// The learning-rate schedule over the run's total steps.
    public let schedule: LRSchedule
    /// The run folder: metrics, checkpoints.
    public let outputDirectory: URL
    /// Identifies the data and settings a checkpoint belongs to (resume refuses a mismatch).
    public let fingerprint: [String: String]
    /// Resume a checkpoint written in another precision (its "precision" fingerprint entry).
    public let allowPrecisionChange: Bool
    /// Sees every event; returning `.stop` ends the run at this step boundary (after the
    /// step's checkpoint and evaluation, before the next step).
    public var onEvent: ((TrainerEvent) -> RunControl)?
    /// When set, the run also writes TensorBoard event files (into `output/tensorboard`),
    /// starting with this text (the run's settings) as the hyperparameters summary.
    public var tensorBoardHyperparameters: String?
    /// Called after each checkpoint is written, to add files (an adapter folder) to it.
    public var onSave: ((URL) throws -> Void)?

    var globalStep = 0
    var bestEval: Double? = nil
    var evalsWithoutImprovement = 0
    var trainedTokens = 0
    var elapsedBefore: Double = 0
    /// The step of the last checkpoint written (or restored) by this run.
    public internal(set) var lastCheckpointStep: Int? = nil
    /// Stops the run at the next step boundary when raised (from any thread or a signal
    /// handler: `StopFlag` is an atomic). Several trainers may share one.
    public var stopFlag = StopFlag()
    /// The dropout/NEFTune random stream (seed `config.seed`; a checkpoint restores it).
    public internal(set) var random: RandomStream
    /// Whether an event handler asked to stop.
    var stopFromEvent = false
    var stopRequested: Bool { stopFromEvent || stopFlag.isRaised }
    /// The stop decision every rank agreed on at the last step (any rank's request).
    var stopAgreed = false

    /// - Parameters:
    ///   - model: the model, with its trainable parameters already chosen (LoRA applied, or
    ///     unfrozen for full finetuning).
    ///   - config: optimizer, schedule, logging, evaluation and checkpoint settings.
    ///   - loader: the data plan's optimizer steps, in order.
    ///   - evalBatches: the batches `evaluate()` averages over (empty: no evaluation).
    ///   - outputDirectory: the run folder (metrics, checkpoints, trainer_state.json).
    ///   - fingerprint: what identifies the run's model and data, checked on resume.
    ///   - collective: the ranks of a data-parallel job; `loader`'s plan then holds every rank's
    ///     micro-batches (accumulation × ranks per step) and each rank runs its share.
    ///   - zeroStage: 1 shards AdamW's moments across the ranks (ZeRO stage 1).
    ///   - bucketBytes: gradient bytes per all-reduce bucket (`ddp_bucket_cap_mb`); buckets
    ///     start while the backward runs.
    ///   - precision: the matmul precision (`Module.setPrecision`, applied here to the model);
    ///     checkpoints record it, and resuming in another one is refused unless
    ///     `allowPrecisionChange`.
    ///   - allowPrecisionChange: resume a checkpoint written in the other precision.
    public init(model: CausalLM, config: TrainerConfig, loader: DataLoader, evalBatches: [TrainingBatch],
                outputDirectory: URL, fingerprint: [String: String] = [:],
                collective: any Collective = SingleProcessCollective(), zeroStage: Int = 0,
                bucketBytes: Int = 25 << 20, precision: Precision = .f32, allowPrecisionChange: Bool = false) throws {
        self.model = model
        self.config = config
        self.loader = loader
        self.evalBatches = evalBatches
        self.outputDirectory = outputDirectory
        random = RandomStream(seed: config.seed)
        parameters = model.trainableParameters
        guard !parameters.isEmpty else {
            throw SFTError.config(field: "method", message: "nothing to train: every parameter is frozen")
        }
        let parallel = try DataParallel(collective: collective, zeroStage: zeroStage, parameters: parameters,
                                        bucketBytes: bucketBytes)
        self.parallel = parallel
        var multipliers: [String: Double] = [:]
        if let ratio = config.loraPlusLRRatio {
            for (name, _) in parameters where name.contains(".lora_B.") { multipliers[name] = ratio }
            guard !multipliers.isEmpty else {
                throw SFTError.config(field: "loraplus_lr_ratio", message: "the model has no trained LoRA B matrices (method full?)")
            }
        }
        optimizer = try AdamW(parameters: parameters, config: config.adamw, lrMultipliers: multipliers, keepsState: parallel.owns)
        if let alpha = config.neftuneNoiseAlpha {
            guard let embedding = model.namedModules().lazy.compactMap({ $0.1 as? Embedding }).first else {
                throw SFTError.config(field: "neftune_noise_alpha", message: "the model has no input embedding")
            }
            embedding.neftuneNoiseAlpha = Float(alpha)
        }
        let total = config.maxSteps.map { min($0, loader.plan.totalSteps) } ?? loader.plan.totalSteps
        let warmup = config.warmupSteps > 0 ? config.warmupSteps : Int((config.warmupRatio * Double(total)).rounded(.up))
        schedule = LRSchedule(kind: config.schedule, peak: config.learningRate, warmupSteps: warmup,
                              totalSteps: total, minRatio: config.minLRRatio)
        try model.setPrecision(precision)
        self.allowPrecisionChange = allowPrecisionChange
        var fp = fingerprint
        fp["precision"] = precision.rawValue
        fp["data"] = loader.plan.fingerprint
        fp["trainer"] = Trainer.describe(config)
        self.fingerprint = fp
    }

    /// Optimizer steps the run takes in all: every epoch of the plan, or `maxSteps` when smaller.
    public var totalSteps: Int { schedule.totalSteps }

    static func describe(_ c: TrainerConfig) -> String {
        var c = c
        // Fields that may change between a run and its resumption without changing its math.
        c.loggingSteps = 0; c.saveSteps = nil; c.saveTotalLimit = nil; c.evalSteps = nil; c.maxSteps = nil
        c.earlyStoppingPatience = nil; c.saveEachEpoch = false; c.stopOnDivergence = true
        let e = JSONEncoder()
        e.outputFormatting = .sortedKeys
        return (try? e.encode(c)).flatMap { String(data: $0, encoding: .utf8) } ?? ""
    }

    func tensors(_ b: TrainingBatch) throws -> (ModelInput, Tensor) {
        let be = model.lmHeadWeight.value.backend
        let n = b.B * b.T
        let input = ModelInput(ids: try Tensor(ints: b.ids, shape: [n], on: be),
                               positions: try Tensor(ints: b.positions, shape: [n], on: be),
                               docIds: try Tensor(ints: b.docIds, shape: [n], on: be), B: b.B, T: b.T)
        return (input, try Tensor(ints: b.targets, shape: [n], on: be))
    }

    /// One optimizer step: forward/backward over every micro-batch, clip, update.
    /// Returns the step's loss (mean over its trained tokens) and the gradient norm.
    public func trainStep(_ step: OptimizerStep) throws -> (loss: Double, gradNorm: Double) {
        model.zeroGrad()
        let normalizer = Float(max(1, step.trainedTokens))
        var loss = 0.0
        let firstMicroBatch = step.cursor.epoch * loader.plan.microBatchesPerEpoch + step.cursor.index
        let mine = parallel.myMicroBatches(step.batches.count).filter { step.batches[$0].trainedTokens > 0 }
        try Autograd.training(random) {
            for i in mine {
                random.offset = DataParallel.dropoutOffset(globalMicroBatch: firstMicroBatch + i)
                let (input, targets) = try tensors(step.batches[i])
                let (l, _) = try model.loss(input, targets: targets, normalizer: normalizer,
                                            checkpointing: config.gradientCheckpointing)
                let value = Double(try l.item())
                guard value.isFinite else {
                    throw SFTError.diverged(step: step.step + 1, microBatch: i, message: "the loss is \(value); no update was applied")
                }
                try parallel.backward(l, last: i == mine.last)
                loss += value
            }
        }
        let stop = stopRequested
        (loss, stopAgreed) = try parallel.atStep(step.step + 1, "summing gradients") {
            try parallel.reduceStep(parameters: parameters, loss: loss, stop: stop)
        }
        let norm = try clipGradients(parameters, maxNorm: config.maxGradNorm)
        guard norm.isFinite else {
            throw SFTError.diverged(step: step.step + 1, microBatch: nil, message: "the gradient norm is \(norm); no update was applied")
        }
        try optimizer.update(lr: schedule.lr(at: step.step))
        try parallel.atStep(step.step + 1, "sharing updated parameters") { try parallel.shareUpdatedParameters(parameters) }
        return (loss, norm)
    }

    /// trainer_state.json in the run folder (as HF Trainer writes it): progress, best eval
    /// loss and the log history.
    func writeRunState(log: RunLog, elapsed: Double) throws {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        let history = try log.history.map { try JSONSerialization.jsonObject(with: try e.encode($0)) }
        let state: [String: Any] = [
            "global_step": globalStep, "max_steps": totalSteps, "best_eval_loss": bestEval ?? NSNull(),
            "trained_tokens": trainedTokens, "elapsed_seconds": elapsed,
            "epoch": Double(loader.cursor.epoch) + Double(loader.cursor.index) / Double(max(1, loader.plan.microBatchesPerEpoch)),
            "log_history": history,
        ]
        try writeSynced(try JSONSerialization.data(withJSONObject: state, options: [.prettyPrinted, .sortedKeys]),
                        to: outputDirectory.appendingPathComponent("trainer_state.json"))
    }

    /// Mean next-token loss over the eval batches (all their trained tokens), the batches
    /// shared out over the ranks.
    public func evaluate() throws -> Double? {
        guard !evalBatches.isEmpty else { return nil }
        let local = try Autograd.withNoGrad {
            var sum = 0.0, count = 0
            for i in parallel.myMicroBatches(evalBatches.count) where evalBatches[i].trainedTokens > 0 {
                let (input, targets) = try tensors(evalBatches[i])
                let (l, n) = try model.loss(input, targets: targets, normalizer: 1)
                sum += Double(try l.item())
                count += n
            }
            return [sum, Double(count)]
        }
        let total = try parallel.atStep(globalStep, "summing the eval loss") { try parallel.collective.allReduceSum(local) }
        return total[1] > 0 ? total[0] / total[1] : nil
    }

    /// Reports to `onEvent` on rank 0 only; a `.stop` answer stops the run at the next step
    /// boundary (on every rank: the ranks agree on stopping at each step).
    func emit(_ e: TrainerEvent) {
        if parallel.isWriter, onEvent?(e) == .stop { stopFromEvent = true }
    }

    /// Runs until the data plan, `maxSteps`, early stopping, an event handler's `.stop` or
    /// `stopFlag` ends it.
    /// With `resumeFrom`, restores that checkpoint first.
    public func train(resumeFrom checkpoint: URL? = nil) throws -> TrainSummary {
        if let checkpoint { try restore(from: checkpoint) }
        try parallel.checkSameRun(fingerprint)
        let log = parallel.isWriter ? try RunLog(directory: outputDirectory, keepExisting: checkpoint != nil,
                                                 tensorBoard: tensorBoardHyperparameters, resumedAt: checkpoint != nil ? globalStep : nil) : nil
        if checkpoint != nil { try log?.truncate(after: globalStep) }
        let be = model.lmHeadWeight.value.backend
        let start = Date()
        var lastLoss: Double? = nil
        var stoppedEarly = false
        var windowTokens = 0, windowTrained = 0
        var windowStart = Date()
        let stepsPerEpoch = max(1, loader.plan.stepsPerEpoch)
        var divergence = Divergence(vocabSize: model.vocabSize)
        while globalStep < totalSteps, !(parallel.size > 1 ? stopAgreed : stopRequested), let step = loader.nextStep() {
            let (loss, norm) = try trainStep(step)
            if config.stopOnDivergence, let why = divergence.observe(loss: loss, gradNorm: norm) {
                throw SFTError.diverged(step: step.step + 1, microBatch: nil, message: why + " (stop_on_divergence: false to go on)")
            }
            globalStep = step.step + 1
            trainedTokens += step.trainedTokens
            windowTokens += step.batches.reduce(0) { $0 + $1.B * $1.T }
            windowTrained += step.trainedTokens
            lastLoss = loss
            let epoch = Double(step.next.epoch) + Double(step.next.index) / Double(max(1, loader.plan.microBatchesPerEpoch))
            if globalStep % max(1, config.loggingSteps) == 0 || globalStep == totalSteps {
                let dt = Date().timeIntervalSince(windowStart)
                let m = StepMetrics(step: globalStep, epoch: epoch, loss: loss, lr: schedule.lr(at: step.step),
                                    gradNorm: norm, tokensPerSecond: dt > 0 ? Double(windowTokens) / dt : nil,
                                    trainedTokens: trainedTokens,
                                    trainedTokenShare: windowTokens > 0 ? Double(windowTrained) / Double(windowTokens) : nil,
                                    elapsedSeconds: elapsedBefore + Date().timeIntervalSince(start),
                                    peakMemoryBytes: be.memoryStats.peakBytes)
                try log?.append(m)
                emit(.step(m, totalSteps: totalSteps))
                windowTokens = 0; windowTrained = 0
                windowStart = Date()
            }
            let atEnd = globalStep == totalSteps
            if let every = config.evalSteps, globalStep % every == 0 || atEnd, let e = try evaluate() {
                try log?.append(StepMetrics(step: globalStep, epoch: epoch, evalLoss: e,
                                           elapsedSeconds: elapsedBefore + Date().timeIntervalSince(start)))
                emit(.eval(step: globalStep, loss: e))
                if bestEval.map({ e < $0 }) ?? true { bestEval = e; evalsWithoutImprovement = 0 } else { evalsWithoutImprovement += 1 }
                if let p = config.earlyStoppingPatience, evalsWithoutImprovement >= p {
                    emit(.message("early stopping: eval loss has not improved for \(p) evaluations"))
                    stoppedEarly = true
                }
            }
            let epochEnd = globalStep % stepsPerEpoch == 0
            if (config.saveSteps.map { globalStep % $0 == 0 } ?? false) || (config.saveEachEpoch && epochEnd) {
                let url = try saveCheckpoint(elapsed: elapsedBefore + Date().timeIntervalSince(start))
                emit(.checkpoint(url))
            }
            if stoppedEarly { break }
        }
        if config.evalSteps == nil, !evalBatches.isEmpty, let e = try evaluate() {
            try log?.append(StepMetrics(step: globalStep, epoch: Double(loader.cursor.epoch), evalLoss: e,
                                       elapsedSeconds: elapsedBefore + Date().timeIntervalSince(start)))
            emit(.eval(step: globalStep, loss: e))
            bestEval = min(bestEval ?? e, e)
        }
        if let log { try writeRunState(log: log, elapsed: elapsedBefore + Date().timeIntervalSince(start)) }
        return TrainSummary(steps: globalStep, finalLoss: lastLoss, bestEvalLoss: bestEval, stoppedEarly: stoppedEarly,
                            trainedTokens: trainedTokens, seconds: elapsedBefore + Date().timeIntervalSince(start),
                            peakMemoryBytes: be.memoryStats.peakBytes)
    }
}

/// The runaway-loss watch of `TrainerConfig.stopOnDivergence`.
struct Divergence {
    public static let factor = 4.0
    public static let patience = 20
    let lnVocab: Double
    var runningMin = Double.infinity
    var above = 0, stuck = 0

    public init(vocabSize: Int) { lnVocab = Foundation.log(Double(max(2, vocabSize))) }

    /// Takes one step's loss and gradient norm; returns why the run diverged, or nil.
    public mutating func observe(loss: Double, gradNorm: Double) -> String? {
        runningMin = min(runningMin, loss)
        above = loss > Self.factor * runningMin ? above + 1 : 0
        stuck = abs(loss - lnVocab) < 0.01 * lnVocab && gradNorm == 0 ? stuck + 1 : 0
        if above >= Self.patience {
            return "the loss (\(loss)) has stayed above \(Self.factor)× its minimum (\(runningMin)) for \(above) steps"
        }
        if stuck >= Self.patience {
            return "the loss has sat at ln(vocab) = \(lnVocab) with a zero gradient for \(stuck) steps (the model predicts nothing)"
        }
        return nil
    }
}
