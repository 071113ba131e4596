// A training run's logs: metrics as JSON Lines (one object per logged step), the loss curve as
// an SVG picture (train and eval), rewritten as the run goes, and optionally TensorBoard event
// files (`logging: ["jsonl", "tensorboard"]`, TensorBoardWriter.swift).

import Foundation
import SFTKernels

/// One line of metrics.jsonl: a training log entry (loss, learning rate, gradient norm, speed) or
/// an evaluation entry (`eval_loss`). JSON keys are snake_case; nil fields are left out.
public struct StepMetrics: Codable, Equatable, Sendable {
    /// Optimizer steps done (1-based; the step this entry follows).
    public var step: Int
    /// Fractional epoch reached: whole epochs plus the share of the current one.
    public var epoch: Double
    /// The step's training loss: mean cross-entropy over its trained tokens, in nats (nil in eval
    /// entries).
    public var loss: Double?
    /// Mean validation loss over trained tokens, in nats (eval entries only).
    public var evalLoss: Double?
    /// The learning rate the step used.
    public var lr: Double?
    /// The global L2 norm of the gradients before clipping.
    public var gradNorm: Double?
    /// Tokens processed per second since the last log line (rows × row length, padding included).
    public var tokensPerSecond: Double?
    /// Trained tokens since the start of the run.
    public var trainedTokens: Int?
    /// Trained (loss-bearing) tokens over all tokens of the steps since the last log line.
    public var trainedTokenShare: Double?
    /// Wall-clock seconds of training so far (a resumed run counts its earlier time too).
    public var elapsedSeconds: Double
    /// The backend's peak allocated memory in bytes (`Backend.memoryStats.peakBytes`).
    public var peakMemoryBytes: Int?

    /// An entry; each argument sets the property of the same name.
    public init(step: Int, epoch: Double, loss: Double? = nil, evalLoss: Double? = nil, lr: Double? = nil,
                gradNorm: Double? = nil, tokensPerSecond: Double? = nil, trainedTokens: Int? = nil,
                trainedTokenShare: Double? = nil, elapsedSeconds: Double, peakMemoryBytes: Int? = nil) {
        self.step = step; self.epoch = epoch; self.loss = loss; self.evalLoss = evalLoss; self.lr = lr
        self.gradNorm = gradNorm; self.tokensPerSecond = tokensPerSecond; self.trainedTokens = trainedTokens
        self.trainedTokenShare = trainedTokenShare
        self.elapsedSeconds = elapsedSeconds; self.peakMemoryBytes = peakMemoryBytes
    }

    enum CodingKeys: String, CodingKey {
        case step, epoch, loss, evalLoss = "eval_loss", lr, gradNorm = "grad_norm"
        case tokensPerSecond = "tokens_per_second", trainedTokens = "trained_tokens"
        case trainedTokenShare = "trained_token_share"
        case elapsedSeconds = "elapsed_seconds", peakMemoryBytes = "peak_memory_bytes"
    }
}

/// Where a run's metrics go besides metrics.jsonl (always written: resume reads it).
public enum LogSink: String, Codable, CaseIterable, Sendable {
    /// `jsonl`: metrics.jsonl only (always on); `tensorboard`: also TensorBoard event files in
    /// output_dir/tensorboard, scalars under `train/` and `eval/`.
    case jsonl, tensorboard
}

/// Appends metrics to `metrics.jsonl` in the run folder and redraws `loss.svg`; with a
/// TensorBoard writer, also writes each entry as scalars under `train/` and `eval/`.
public final class RunLog {
    /// The run folder holding metrics.jsonl and loss.svg.
    public let directory: URL
    /// Every entry so far, those of the earlier run included when resumed.
    public private(set) var history: [StepMetrics] = []
    private let handle: FileHandle
    private let tensorBoard: TensorBoardWriter?

    /// `tensorBoard`: write event files into `directory/tensorboard`, starting with the
    /// hyperparameters as a text summary. `resumedAt`: the step a resumed run continues from.
    public init(directory: URL, keepExisting: Bool, tensorBoard hyperparameters: String? = nil, resumedAt: Int? = nil) throws {
        self.directory = directory
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let url = directory.appendingPathComponent("metrics.jsonl")
        if keepExisting, let data = FileManager.default.contents(atPath: url.path) {
            let decoder = JSONDecoder()
            history = data.split(separator: UInt8(ascii: "\n")).compactMap { try? decoder.decode(StepMetrics.self, from: Data($0)) }
        } else {
            _ = FileManager.default.createFile(atPath: url.path, contents: nil)
        }
        guard let h = FileHandle(forWritingAtPath: url.path) else {
            throw SFTError.io(path: url.path, message: "cannot open for writing")
        }
        handle = h
        handle.seekToEndOfFile()
        if let hyperparameters {
            let tb = try TensorBoardWriter(directory: directory.appendingPathComponent("tensorboard"), resumedAt: resumedAt)
            try tb.text("hyperparameters", hyperparameters, step: resumedAt ?? 0)
            tensorBoard = tb
        } else {
            tensorBoard = nil
        }
    }

    deinit { try? handle.close() }

    /// Drops entries after `step` (resuming from a checkpoint) and rewrites the file.
    public func truncate(after step: Int) throws {
        history.removeAll { $0.step > step }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        var data = Data()
        for m in history { data += try encoder.encode(m); data.append(UInt8(ascii: "\n")) }
        try handle.truncate(atOffset: 0)
        handle.write(data)
    }

    /// Appends `m` to metrics.jsonl (and to the TensorBoard events when on) and redraws loss.svg.
    /// - Throws: the TensorBoard writer's `SFTError.io`, or an encoding error.
    public func append(_ m: StepMetrics) throws {
        history.append(m)
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        var line = try encoder.encode(m)
        line.append(UInt8(ascii: "\n"))
        handle.write(line)
        if let tensorBoard {
            let train: [(String, Double?)] = [
                ("train/loss", m.loss), ("train/learning_rate", m.lr), ("train/grad_norm", m.gradNorm),
                ("train/tokens_per_second", m.tokensPerSecond), ("train/trained_token_share", m.trainedTokenShare),
                ("train/peak_memory_mib", m.peakMemoryBytes.map { Double($0) / 1_048_576 }), ("train/epoch", m.loss == nil ? nil : m.epoch),
                ("eval/loss", m.evalLoss)]
            try tensorBoard.scalars(train.compactMap { t, v in v.map { (t, $0) } }, step: m.step)
        }
        try? LossCurve.svg(history).write(to: directory.appendingPathComponent("loss.svg"), atomically: true, encoding: .utf8)
    }
}

/// Draws train and eval loss against step as a self-contained SVG.
enum LossCurve {
    public static func svg(_ history: [StepMetrics], width: Double = 640, height: Double = 360) -> String {
        let train = history.compactMap { m in m.loss.map { (Double(m.step), $0) } }
        let eval = history.compactMap { m in m.evalLoss.map { (Double(m.step), $0) } }
        let all = train + eval
        let left = 56.0, right = 16.0, top = 24.0, bottom = 40.0
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"11\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        guard let minX = all.map(\.0).min(), let maxX = all.map(\.0).max(),
              let minY = all.map(\.1).min(), let maxY = all.map(\.1).max() else {
            return s + "<text x=\"20\" y=\"30\">no data yet</text>\n</svg>\n"
        }
        let spanX = max(maxX - minX, 1), spanY = max(maxY - minY, 1e-6)
        func px(_ x: Double) -> Double { left + (x - minX) / spanX * (width - left - right) }
        func py(_ y: Double) -> Double { top + (1 - (y - minY) / spanY) * (height - top - bottom) }
        func fmt(_ v: Double) -> String { String((v * 1000).rounded() / 1000) }
        s += "<line x1=\"\(left)\" y1=\"\(height - bottom)\" x2=\"\(width - right)\" y2=\"\(height - bottom)\" stroke=\"#444\"/>\n"
        s += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(height - bottom)\" stroke=\"#444\"/>\n"
        for i in 0...4 {
            let y = minY + spanY * Double(i) / 4
            s += "<text x=\"4\" y=\"\(fmt(py(y) + 4))\">\(fmt(y))</text>\n"
            let x = minX + spanX * Double(i) / 4
            s += "<text x=\"\(fmt(px(x) - 8))\" y=\"\(height - bottom + 16)\">\(Int(x))</text>\n"
        }
        s += "<text x=\"\(width / 2 - 12)\" y=\"\(height - 6)\">step</text>\n"
        func poly(_ pts: [(Double, Double)], _ color: String) -> String {
            guard !pts.isEmpty else { return "" }
            let p = pts.map { "\(fmt(px($0.0))),\(fmt(py($0.1)))" }.joined(separator: " ")
            return "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.5\" points=\"\(p)\"/>\n"
        }
        s += poly(train, "#1f77b4") + poly(eval, "#d62728")
        s += "<text x=\"\(width - 120)\" y=\"16\" fill=\"#1f77b4\">train loss</text>\n"
        if !eval.isEmpty { s += "<text x=\"\(width - 56)\" y=\"16\" fill=\"#d62728\">eval loss</text>\n" }
        return s + "</svg>\n"
    }
}
