// The data pipeline's entry point: a dataset file and a config in, tokenized examples with
// loss masks and the reports out. `sftctl data` and the trainer call this; batching
// (`BatchPlan`) takes its output.
import Foundation
import SFTKernels

/// Whether the `end` of a data span `[begin, end]` belongs to it.
public enum SpanEnd: String, CaseIterable, Sendable, ConfigChoice {
    /// Fast-LLM's convention (the default).
    case inclusive
    /// `end` is the first character after the span (Python slice convention).
    case exclusive
}

/// The data part of a run's configuration (read from the run's flat config object: see
/// FinetuneConfigKeys.swift; defaults as below).
public struct DataConfig: Equatable, Sendable {
    /// The dataset format; nil (`auto` in a config) detects it from the records.
    /// Key `format`, flag `--format`.
    public var format: DatasetFormat?
    /// Key renames, canonical name → key in the file (e.g. {"instruction": "question"}).
    /// Key `fields`, flag `--fields`.
    public var fields: [String: String]
    /// Fail on the first bad record instead of skipping it.
    /// Key `strict`, flag `--strict`.
    public var strict: Bool
    /// Read only this many records (the first ones, or a random subset with `subsetSeed`).
    /// Key `limit`, flag `--limit`.
    public var limit: Int?
    /// With `limit`: choose the records at random with this seed instead of taking the first.
    /// Key `subset_seed`, flag `--subset-seed`.
    public var subsetSeed: UInt64?
    /// Which tokens train; nil picks per format.
    /// Key `mask_policy`, flag `--mask-policy`. TRL: `assistant_only_loss` / `completion_only_loss`.
    public var maskPolicy: MaskPolicy?
    /// Train end-of-turn markers / EOS with each trained turn (default true).
    /// Key `train_end_of_turn`, flag `--train-end-of-turn`.
    public var trainEndOfTurn: Bool
    /// Longest training sequence (default 2048).
    /// Key `max_seq_length` (alias `max_length`), flag `--max-seq-length`. TRL: `max_length` (formerly `max_seq_length`).
    public var maxSeqLength: Int
    /// Pack examples into rows of `maxSeqLength` (default true).
    /// Key `packing`, flag `--packing`. TRL: `packing`.
    public var packing: Bool
    /// Without packing: concatenate a micro-batch's examples into one row instead of padding
    /// (default false).
    /// Key `padding_free`, flag `--padding-free`. TRL: `padding_free`.
    public var paddingFree: Bool
    /// Packed rows: let documents attend across each other (default false).
    /// Key `cross_document_attention`, flag `--cross-document-attention`.
    public var crossDocumentAttention: Bool
    /// What happens to examples over `maxSeqLength` (default truncate).
    /// Key `truncation`, flag `--truncation`.
    public var truncation: TruncationPolicy
    /// A prompt with `{field}` placeholders for instruction and prompt/completion records
    /// (replaces the Alpaca prompt and the chat template for them; see PromptTemplate.swift).
    /// Key `prompt_template`, flag `--prompt-template`.
    public var promptTemplate: String?
    /// Whether the `end` of a data span `[begin, end]` belongs to it (default inclusive).
    /// Key `span_end`, flag `--span-end`.
    public var spanEnd: SpanEnd
    /// A JSON file with a list of tool schemas, passed to the chat template for every
    /// conversation that has no `tools` of its own.
    /// Key `tools`, flag `--tools`.
    public var tools: String?
    /// Check the prepared data (DataDoctor) and report the findings before training (default true).
    /// Key `doctor`, flag `--doctor`.
    public var doctor: Bool

    /// A config from its fields; each argument sets the property of the same name, and the defaults
    /// are the run defaults. Values are checked when the parts are made (`datasetOptions()`,
    /// `formatOptions(keepText:)`, `batchingOptions(...)`).
    public init(format: DatasetFormat? = nil, fields: [String: String] = [:], strict: Bool = false, limit: Int? = nil,
                subsetSeed: UInt64? = nil, maskPolicy: MaskPolicy? = nil, trainEndOfTurn: Bool = true,
                maxSeqLength: Int = 2048, packing: Bool = true, paddingFree: Bool = false,
                crossDocumentAttention: Bool = false, truncation: TruncationPolicy = .truncate, promptTemplate: String? = nil,
                spanEnd: SpanEnd = .inclusive, tools: String? = nil, doctor: Bool = true) {
        self.format = format
        self.fields = fields
        self.strict = strict
        self.limit = limit
        self.subsetSeed = subsetSeed
        self.maskPolicy = maskPolicy
        self.trainEndOfTurn = trainEndOfTurn
        self.maxSeqLength = maxSeqLength
        self.packing = packing
        self.paddingFree = paddingFree
        self.crossDocumentAttention = crossDocumentAttention
        self.truncation = truncation
        self.promptTemplate = promptTemplate
        self.spanEnd = spanEnd
        self.tools = tools
        self.doctor = doctor
    }

    /// The dataset-reading part, validated.
    public func datasetOptions() throws -> DatasetOptions {
        var selection = RecordSelection.all
        if let n = limit {
            guard n >= 0 else { throw SFTError.config(field: "limit", message: "must not be negative") }
            selection = subsetSeed.map { .sample(n, seed: $0) } ?? .first(n)
        }
        var toolSchemas: JSONValue?
        if let path = tools {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw SFTError.config(field: "tools", message: "cannot read \(path) (a JSON file with a list of tool schemas)")
            }
            let t = try JSONValue(parsing: data, path: path)
            guard case .array = t else { throw SFTError.config(field: "tools", message: "\(path) does not hold a JSON list") }
            toolSchemas = t
        }
        return DatasetOptions(format: format, fields: FieldMapping(fields), strict: strict, selection: selection,
                              spanEndInclusive: spanEnd == .inclusive, tools: toolSchemas)
    }

    /// The formatting part, validated.
    public func formatOptions(keepText: Bool = false) throws -> FormatOptions {
        return FormatOptions(maskPolicy: maskPolicy, trainEndOfTurn: trainEndOfTurn, keepText: keepText,
                             promptTemplate: try promptTemplate.map(PromptTemplate.init))
    }

    /// Batching options from this config and the trainer's settings.
    public func batchingOptions(microBatchSize: Int = 1, gradientAccumulation: Int = 1, epochs: Int = 1,
                                seed: UInt64 = 42, shuffle: Bool = true, padId: Int32 = 0) throws -> BatchingOptions {
        if crossDocumentAttention && !packing {
            throw SFTError.config(field: "cross_document_attention", message: "only applies with packing")
        }
        return BatchingOptions(maxSeqLength: maxSeqLength, layout: packing ? .packed : (paddingFree ? .paddingFree : .padded),
                               crossDocumentAttention: crossDocumentAttention, truncation: truncation,
                               microBatchSize: microBatchSize, gradientAccumulation: gradientAccumulation,
                               epochs: epochs, shuffle: shuffle, seed: seed, padId: padId)
    }
}

/// Examples that loaded but could not be formatted (a template that rejects a system message,
/// say), with their locations.
public struct FormattingReport: Sendable, CustomStringConvertible {
    /// Examples formatted and tokenized.
    public var formatted: Int
    /// Examples that could not be formatted, with where they are and why.
    public var skipped: [SkippedRecord]
    /// Tokens over all formatted examples, and of those, trained ones.
    public var tokens: Int, trainedTokens: Int

    public var description: String {
        var s = "formatted \(formatted) examples: \(tokens) tokens, \(trainedTokens) trained"
        if !skipped.isEmpty {
            s += ", \(skipped.count) could not be formatted"
            for r in skipped.prefix(5) { s += "\n  e.g. \(r)" }
        }
        return s
    }
}

/// A dataset ready for batching.
public struct PreparedDataset: Sendable {
    /// The tokenized examples with their loss masks, in file order.
    public var examples: [TokenizedExample]
    /// What loading found: the format, records read and skipped.
    public var datasetReport: DatasetReport
    /// What formatting found.
    public var formattingReport: FormattingReport
    /// The data doctor's findings, when asked for.
    public var doctorReport: DoctorReport?
}

/// Loads, formats and masks a dataset file.
///
/// - Parameters:
///   - url: the dataset file (JSON, JSON Lines or CSV).
///   - config: format, field mapping, masks, truncation and packing settings.
///   - tokenizer: the model's tokenizer.
///   - renderer: the chat template; nil uses the built-in formats (Alpaca prompt, prompt +
///     completion, Guanaco-style turns).
///   - keepTextFor: keep rendered text and offsets in the first N examples (to show
///     samples); the rest drop them, which matters on large datasets.
///   - doctor: run the DataDoctor over every example as it is formatted (the file is read
///     once).
///   - padId: the id batching pads with (for the doctor's report).
/// - Throws: loading errors (see `Dataset.load`), config errors, and — strict — the first
///   example that cannot be formatted, naming file and line.
public func prepareDataset(_ url: URL, config: DataConfig = DataConfig(), tokenizer: any TextTokenizer,
                           renderer: (any ChatRenderer)?, keepTextFor: Int = 0, doctor: Bool = false,
                           padId: Int32? = nil) throws -> PreparedDataset {
    let dataset = try Dataset.load(url, options: try config.datasetOptions())
    let formatter = ExampleFormatter(tokenizer: tokenizer, renderer: renderer, options: try config.formatOptions(keepText: false))
    var shown = formatter
    shown.options.keepText = true
    let checker = doctor ? DataDoctor(formatter: formatter, maxSeqLength: config.maxSeqLength,
                                      truncation: try config.batchingOptions().truncation, padId: padId) : nil
    var examples: [TokenizedExample] = []
    examples.reserveCapacity(dataset.examples.count)
    var skipped: [SkippedRecord] = []
    var tokens = 0, trained = 0
    for ex in dataset.examples {
        do {
            var t = try (examples.count < keepTextFor || checker != nil ? shown : formatter).format(ex)
            if let checker {
                checker.inspect(ex, t)
                if examples.count >= keepTextFor { t.formatted = nil }
            }
            tokens += t.ids.count
            trained += t.trained.filter { $0 }.count
            examples.append(t)
        } catch {
            if config.strict { throw SFTError.data(path: url.path, line: ex.source.line, message: "record \(ex.source.index): \(error)") }
            skipped.append(SkippedRecord(location: ex.source, reason: "\(error)"))
        }
    }
    let report = FormattingReport(formatted: examples.count, skipped: skipped, tokens: tokens, trainedTokens: trained)
    return PreparedDataset(examples: examples, datasetReport: dataset.report, formattingReport: report, doctorReport: checker?.report)
}
