// From tokenized examples to training batches: truncation of over-long examples, packing into
// rows (best-fit decreasing), micro-batches, optimizer steps, epochs and a resumable cursor.
//
// Shape letters: B rows in a micro-batch, T tokens per row.
//
// Targets are next-token targets shifted inside each document:
//   target[t] = ids[t+1]  if t+1 is in the same document and token t+1 is trained,
//   target[t] = -100      otherwise (untrained next token, last token of a document, padding).
// So no target ever crosses a document boundary, whatever the attention layout, and the loss on
// a packed row equals the sum of the documents' unpacked losses. `trainedTokens` counts the
// targets that are not -100: the trainer divides a step's summed loss by the sum of its
// micro-batches' `trainedTokens` (exact mean over the step, however the step is cut up).
import Foundation
import SFTKernels

/// What to do with an example longer than `maxSeqLength`.
public enum TruncationPolicy: String, CaseIterable, Sendable, Codable {
    /// Keep the first `maxSeqLength` tokens.
    case truncate
    /// Leave the example out.
    case drop
    /// Cut it into pieces of at most `maxSeqLength` tokens, each its own document (a piece's
    /// first token has no target: context does not carry across the cut).
    case split
}

/// How documents are laid out in a micro-batch.
public enum BatchLayout: String, CaseIterable, Sendable, Codable {
    /// Documents packed into rows of `maxSeqLength` tokens (best-fit decreasing); B rows per
    /// micro-batch, T = the longest row.
    case packed
    /// No packing: the micro-batch's examples concatenated into one row (B = 1), no padding.
    case paddingFree = "padding_free"
    /// No packing: one example per row, right-padded to the longest (pad id, target -100).
    case padded
}

/// Batching settings.
public struct BatchingOptions: Equatable, Sendable {
    /// Longest document (and packed row) in tokens.
    public var maxSeqLength: Int
    /// Packed rows, padding-free rows or padded rows (default packed).
    public var layout: BatchLayout
    /// Packed rows only: let documents in a row attend to each other (one document id per row,
    /// positions running on across documents). Targets still stop at document ends.
    public var crossDocumentAttention: Bool
    /// What happens to examples longer than `maxSeqLength` (default truncate).
    public var truncation: TruncationPolicy
    /// Rows (packed) or examples (otherwise) per micro-batch.
    public var microBatchSize: Int
    /// Micro-batches per optimizer step.
    public var gradientAccumulation: Int
    /// Passes over the data (default 1).
    public var epochs: Int
    /// Shuffle the rows / examples each epoch, by `seed` and the epoch number.
    public var shuffle: Bool
    /// The shuffle seed (default 42); each epoch's order comes from it and the epoch number.
    public var seed: UInt64
    /// Id written in padding slots (never trained: padding is masked by position, not by id).
    public var padId: Int32

    /// Options from their fields; each argument sets the property of the same name. `BatchPlan`
    /// checks them.
    public init(maxSeqLength: Int = 2048, layout: BatchLayout = .packed, crossDocumentAttention: Bool = false,
                truncation: TruncationPolicy = .truncate, microBatchSize: Int = 1, gradientAccumulation: Int = 1,
                epochs: Int = 1, shuffle: Bool = true, seed: UInt64 = 42, padId: Int32 = 0) {
        self.maxSeqLength = maxSeqLength
        self.layout = layout
        self.crossDocumentAttention = crossDocumentAttention
        self.truncation = truncation
        self.microBatchSize = microBatchSize
        self.gradientAccumulation = gradientAccumulation
        self.epochs = epochs
        self.shuffle = shuffle
        self.seed = seed
        self.padId = padId
    }
}

/// What truncation and packing did.
public struct PackingReport: Equatable, Sendable, CustomStringConvertible {
    /// The `maxSeqLength` the plan was made with (the row length when packed).
    public var maxSeqLength: Int
    /// The layout the plan was made with.
    public var layout: BatchLayout
    /// Examples given.
    public var examples: Int
    /// Documents placed (examples, or pieces of split examples).
    public var documents: Int
    /// Tokens placed, over one epoch.
    public var tokens: Int
    /// Targets that are not -100, over one epoch.
    public var trainedTokens: Int
    /// Packed rows, or examples when not packing.
    public var rows: Int
    /// Longer than `maxSeqLength` and cut to it; `truncatedTokens` were cut off.
    public var truncated = 0, truncatedTokens = 0
    /// Longer than `maxSeqLength` and left out, with their tokens.
    public var dropped = 0, droppedTokens = 0
    /// Longer than `maxSeqLength` and split, into `splitPieces` documents.
    public var split = 0, splitPieces = 0
    /// Documents left out because no token of theirs can be trained (e.g. the answer was cut
    /// off by truncation) — they would only cost time.
    public var untrained = 0

    /// Packed: tokens / (rows × maxSeqLength); otherwise nil.
    public var efficiency: Double? {
        guard layout == .packed, rows > 0 else { return nil }
        return Double(tokens) / Double(rows * maxSeqLength)
    }

    public var description: String {
        var s = "\(examples) examples → \(documents) documents, \(tokens) tokens (\(trainedTokens) trained)"
        if let e = efficiency {
            s += ", packed into \(rows) rows of \(maxSeqLength) (efficiency \(Int((e * 1000).rounded()) / 10)%)"
        } else {
            s += ", \(layout.rawValue), max \(maxSeqLength) tokens"
        }
        s += "\n  over max length: \(truncated) truncated (\(truncatedTokens) tokens cut), \(dropped) dropped (\(droppedTokens) tokens), \(split) split into \(splitPieces) pieces"
        if untrained > 0 { s += "\n  \(untrained) documents without any trained token left out" }
        return s
    }
}

/// One document's place in a batch.
public struct BatchDocument: Equatable, Sendable {
    /// Row and first column in the batch; `count` tokens.
    public var row: Int, start: Int, count: Int
    /// Index of the example in the list given to `BatchPlan`, and the first token of the
    /// example this document starts at (non-zero for the later pieces of a split example).
    public var example: Int, exampleOffset: Int
}

/// A micro-batch, row-major (B, T).
public struct TrainingBatch: Equatable, Sendable {
    /// Rows in this micro-batch.
    public var B: Int
    /// Tokens per row: the longest row (padded layout: the longest example), at most
    /// `maxSeqLength`.
    public var T: Int
    /// Token ids, B*T.
    public var ids: [Int32]
    /// Next-token targets, B*T: the next token of the same document when it is trained, else -100.
    public var targets: [Int32]
    /// Position ids, B*T: restart at 0 for each document (continuous per row with
    /// cross-document attention); 0 in padding.
    public var positions: [Int32]
    /// Document ids, B*T, numbered from 0 within each row; tokens attend only to earlier tokens
    /// with the same id. -1 in padding.
    public var docIds: [Int32]
    /// Targets that are not -100.
    public var trainedTokens: Int
    /// Where each document sits.
    public var documents: [BatchDocument]

    /// The value in `targets` of a token without a target.
    public static let ignoreIndex: Int32 = -100
}

/// Where the data stream stands: the next micro-batch `index` within `epoch`. Saved with a
/// checkpoint, it resumes the exact data order.
public struct DataCursor: Equatable, Hashable, Sendable, Codable {
    /// 0-based epoch.
    public var epoch: Int
    /// 0-based micro-batch within the epoch.
    public var index: Int

    /// The cursor at micro-batch `index` of `epoch`.
    public init(epoch: Int = 0, index: Int = 0) {
        self.epoch = epoch
        self.index = index
    }

    /// The first micro-batch of the first epoch.
    public static let start = DataCursor()
}

/// The micro-batches of one optimizer step.
public struct OptimizerStep: Sendable {
    /// The step's micro-batches, in order (fewer than `gradientAccumulation` only at an epoch's
    /// end).
    public var batches: [TrainingBatch]
    /// The cursor this step started at, and the one after it.
    public var cursor: DataCursor, next: DataCursor
    /// 0-based step number over the whole run.
    public var step: Int

    /// The divisor of the step's summed token loss: all trained tokens of all its micro-batches.
    public var trainedTokens: Int { batches.reduce(0) { $0 + $1.trainedTokens } }
}

/// Documents laid out for training: truncation applied, rows packed, ready to cut into
/// micro-batches in a seeded order per epoch.
///
/// ```swift
/// let plan = try BatchPlan(examples: tokenized, options: BatchingOptions(maxSeqLength: 512))
/// var loader = DataLoader(plan: plan)
/// while let step = loader.nextStep() { /* loss = sum over step.batches / step.trainedTokens */ }
/// ```
public struct BatchPlan: Sendable {
    struct Piece: Sendable { var example: Int, start: Int, count: Int }

    /// The options the plan was built with.
    public let options: BatchingOptions
    /// What truncation and packing did.
    public let report: PackingReport
    let examples: [TokenizedExample]
    /// The shuffled units: one packed row, or one example.
    let units: [[Piece]]

    /// Truncates (or drops, or splits) over-long examples, leaves out documents with no trained
    /// token, and packs the rest into rows (best-fit decreasing) when the layout is packed.
    /// - Throws: `SFTError.config` naming the option when `maxSeqLength` is below 2, `microBatchSize` or
    ///   `gradientAccumulation` below 1, or `epochs` negative.
    public init(examples: [TokenizedExample], options: BatchingOptions) throws {
        guard options.maxSeqLength >= 2 else { throw SFTError.config(field: "max_seq_length", message: "must be at least 2, got \(options.maxSeqLength)") }
        guard options.microBatchSize >= 1 else { throw SFTError.config(field: "micro_batch_size", message: "must be at least 1") }
        guard options.gradientAccumulation >= 1 else { throw SFTError.config(field: "gradient_accumulation_steps", message: "must be at least 1") }
        guard options.epochs >= 0 else { throw SFTError.config(field: "epochs", message: "must not be negative") }
        let T = options.maxSeqLength
        var report = PackingReport(maxSeqLength: T, layout: options.layout, examples: examples.count,
                                   documents: 0, tokens: 0, trainedTokens: 0, rows: 0)
        var pieces: [Piece] = []
        pieces.reserveCapacity(examples.count)
        for (i, ex) in examples.enumerated() {
            let n = ex.ids.count
            var cut: [Piece]
            if n <= T {
                cut = [Piece(example: i, start: 0, count: n)]
            } else {
                switch options.truncation {
                case .truncate:
                    report.truncated += 1
                    report.truncatedTokens += n - T
                    cut = [Piece(example: i, start: 0, count: T)]
                case .drop:
                    report.dropped += 1
                    report.droppedTokens += n
                    cut = []
                case .split:
                    cut = stride(from: 0, to: n, by: T).map { Piece(example: i, start: $0, count: min(T, n - $0)) }
                    report.split += 1
                    report.splitPieces += cut.count
                }
            }
            for p in cut {
                let targets = p.count < 2 ? 0 : ex.trained[(p.start + 1)..<(p.start + p.count)].filter { $0 }.count
                if targets == 0 { report.untrained += 1; continue }
                report.documents += 1
                report.tokens += p.count
                report.trainedTokens += targets
                pieces.append(p)
            }
        }
        if options.layout == .packed {
            units = Self.bestFitDecreasing(pieces, capacity: T)
        } else {
            units = pieces.map { [$0] }
        }
        report.rows = units.count
        self.options = options
        self.report = report
        self.examples = examples
    }

    /// Best-fit decreasing bin packing: longest first, each into the open row with the least
    /// room that still fits it, else a new row. Among rows with equal room the one that reached
    /// it last is taken (rows with equal room are interchangeable for the packing's quality);
    /// equal lengths keep example order. Deterministic, O(n log T).
    static func bestFitDecreasing(_ pieces: [Piece], capacity: Int) -> [[Piece]] {
        let order = pieces.indices.sorted { pieces[$0].count != pieces[$1].count ? pieces[$0].count > pieces[$1].count : $0 < $1 }
        var rows: [[Piece]] = []
        var byRoom = [[Int]](repeating: [], count: capacity + 1)  // room left -> rows
        var tree = RoomTree(size: capacity + 1)
        for k in order {
            let p = pieces[k]
            if let room = tree.firstNonEmpty(atLeast: p.count) {
                let r = byRoom[room].removeLast()
                tree.add(room, -1)
                rows[r].append(p)
                let left = room - p.count
                byRoom[left].append(r)
                tree.add(left, 1)
            } else {
                rows.append([p])
                let left = capacity - p.count
                byRoom[left].append(rows.count - 1)
                tree.add(left, 1)
            }
        }
        return rows
    }

    /// Counts of rows per room left, with a query for the smallest room ≥ n that has a row.
    struct RoomTree {
        var size: Int
        var counts: [Int]  // segment tree, leaves at [size ..< 2*size) after rounding up to a power of 2
        init(size: Int) {
            var s = 1
            while s < size { s *= 2 }
            self.size = s
            counts = [Int](repeating: 0, count: 2 * s)
        }
        mutating func add(_ i: Int, _ d: Int) {
            var n = i + size
            while n >= 1 { counts[n] += d; n /= 2 }
        }
        func firstNonEmpty(atLeast lo: Int) -> Int? {
            // Descend from the root, skipping subtrees that end before `lo` or hold no row.
            func find(_ node: Int, _ l: Int, _ r: Int) -> Int? {
                if r <= lo || counts[node] == 0 { return nil }
                if r - l == 1 { return l }
                let m = (l + r) / 2
                return find(2 * node, l, m) ?? find(2 * node + 1, m, r)
            }
            return find(1, 0, size)
        }
    }

    /// Micro-batches in one epoch (the last may hold fewer units).
    public var microBatchesPerEpoch: Int { (units.count + options.microBatchSize - 1) / options.microBatchSize }
    /// Optimizer steps in one epoch: the last step of an epoch may have fewer micro-batches.
    public var stepsPerEpoch: Int { (microBatchesPerEpoch + options.gradientAccumulation - 1) / options.gradientAccumulation }
    /// Optimizer steps over all epochs.
    public var totalSteps: Int { stepsPerEpoch * options.epochs }

    /// The order of units in `epoch`.
    public func order(epoch: Int) -> [Int] {
        options.shuffle ? DataShuffle.permutation(count: units.count, seed: DataShuffle.epochSeed(options.seed, epoch: epoch))
                        : Array(units.indices)
    }

    /// Micro-batch `index` of `epoch` (computes the epoch's order; `DataLoader` caches it).
    public func microBatch(epoch: Int, index: Int) -> TrainingBatch {
        microBatch(index: index, order: order(epoch: epoch))
    }

    func microBatch(index: Int, order: [Int]) -> TrainingBatch {
        let m = options.microBatchSize
        let chosen = order[(index * m)..<min(order.count, (index + 1) * m)].map { units[$0] }
        let rows = options.layout == .paddingFree ? [chosen.flatMap { $0 }] : chosen
        return assemble(rows)
    }

    /// Lays rows of documents into a (B, T) batch; T is the longest row.
    func assemble(_ rows: [[Piece]]) -> TrainingBatch {
        let B = rows.count
        let T = rows.map { $0.reduce(0) { $0 + $1.count } }.max() ?? 0
        var ids = [Int32](repeating: options.padId, count: B * T)
        var targets = [Int32](repeating: TrainingBatch.ignoreIndex, count: B * T)
        var positions = [Int32](repeating: 0, count: B * T)
        var docIds = [Int32](repeating: -1, count: B * T)
        var documents: [BatchDocument] = []
        var trainedTokens = 0
        let cross = options.crossDocumentAttention && options.layout == .packed
        for (r, row) in rows.enumerated() {
            var col = 0
            for (d, p) in row.enumerated() {
                let ex = examples[p.example]
                documents.append(BatchDocument(row: r, start: col, count: p.count, example: p.example, exampleOffset: p.start))
                for j in 0..<p.count {
                    let t = r * T + col + j
                    ids[t] = ex.ids[p.start + j]
                    positions[t] = Int32(cross ? col + j : j)
                    docIds[t] = Int32(cross ? 0 : d)
                    if j + 1 < p.count && ex.trained[p.start + j + 1] {
                        targets[t] = ex.ids[p.start + j + 1]
                        trainedTokens += 1
                    }
                }
                col += p.count
            }
        }
        return TrainingBatch(B: B, T: T, ids: ids, targets: targets, positions: positions, docIds: docIds,
                             trainedTokens: trainedTokens, documents: documents)
    }

    /// A digest of the laid-out data and the options that shape batches. A checkpoint stores
    /// it; resuming with a different value means the data or batching changed.
    public var fingerprint: String {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325  // FNV-1a 64
        func mix(_ v: UInt64) {
            var x = v
            for _ in 0..<8 { h = (h ^ (x & 0xFF)) &* 0x0000_0100_0000_01B3; x >>= 8 }
        }
        for u in units {
            mix(0xFFFF_FFFF)
            for p in u {
                let ex = examples[p.example]
                for j in p.start..<(p.start + p.count) { mix(UInt64(UInt32(bitPattern: ex.ids[j])) << 1 | (ex.trained[j] ? 1 : 0)) }
                mix(0xFFFF_FFFE)
            }
        }
        let o = options
        for v in [o.maxSeqLength, o.microBatchSize, o.gradientAccumulation, o.epochs, o.shuffle ? 1 : 0,
                  o.crossDocumentAttention ? 1 : 0, Int(o.padId)] { mix(UInt64(bitPattern: Int64(v))) }
        mix(o.seed)
        for s in [o.layout.rawValue, o.truncation.rawValue] { for b in s.utf8 { mix(UInt64(b)) } }
        return String(h, radix: 16)
    }
}

/// Walks a plan's optimizer steps, epoch by epoch, from a cursor; resumable.
public struct DataLoader: Sendable {
    /// The plan the loader walks.
    public let plan: BatchPlan
    /// The next micro-batch to hand out.
    public private(set) var cursor: DataCursor
    private var cachedEpoch: Int = -1
    private var cachedOrder: [Int] = []

    /// - Throws: `SFTError.config` when `cursor` is not at a step boundary inside the plan.
    public init(plan: BatchPlan, cursor: DataCursor = .start) throws {
        let mb = plan.microBatchesPerEpoch
        guard cursor.epoch >= 0, cursor.index >= 0, cursor.index <= mb,
              cursor.index % plan.options.gradientAccumulation == 0 || cursor.index == mb else {
            throw SFTError.config(field: "data_cursor", message: "cursor \(cursor) is not a step boundary of this data (\(mb) micro-batches per epoch)")
        }
        self.plan = plan
        self.cursor = cursor
    }

    /// The next optimizer step, or nil after the last epoch.
    public mutating func nextStep() -> OptimizerStep? {
        let mb = plan.microBatchesPerEpoch
        var c = cursor
        if c.index >= mb { c = DataCursor(epoch: c.epoch + 1, index: 0) }
        guard c.epoch < plan.options.epochs, mb > 0 else { return nil }
        if cachedEpoch != c.epoch {
            cachedOrder = plan.order(epoch: c.epoch)
            cachedEpoch = c.epoch
        }
        let end = min(mb, c.index + plan.options.gradientAccumulation)
        let batches = (c.index..<end).map { plan.microBatch(index: $0, order: cachedOrder) }
        let step = c.epoch * plan.stepsPerEpoch + c.index / plan.options.gradientAccumulation
        let next = DataCursor(epoch: c.epoch, index: end)
        cursor = next
        return OptimizerStep(batches: batches, cursor: c, next: next, step: step)
    }
}
