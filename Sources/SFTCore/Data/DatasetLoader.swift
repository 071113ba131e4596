// Loading a dataset file: read records (RecordReader), map fields, detect or apply the format,
// convert each record to an SFTExample, and skip-and-count (or, strict, reject) bad records.
import Foundation

/// How to read a dataset file.
public struct DatasetOptions: Equatable, Sendable {
    /// The record layout; nil detects it from the records' keys.
    public var format: DatasetFormat?
    /// Key renames applied before detection and conversion.
    public var fields: FieldMapping
    /// Fail on the first bad record (or a cut-off file) instead of skipping and counting.
    public var strict: Bool
    /// Which records to read: all, the first N, or a seeded random subset of N.
    public var selection: RecordSelection

    public init(format: DatasetFormat? = nil, fields: FieldMapping = FieldMapping(), strict: Bool = false,
                selection: RecordSelection = .all) {
        self.format = format
        self.fields = fields
        self.strict = strict
        self.selection = selection
    }
}

/// A loaded dataset: its examples in file order and the report of what was skipped.
///
/// ```swift
/// let ds = try Dataset.load(URL(fileURLWithPath: "data.jsonl"),
///                           options: DatasetOptions(selection: .first(1000)))
/// print(ds.report)
/// ```
public struct Dataset: Sendable {
    public var examples: [SFTExample]
    public var report: DatasetReport

    public init(examples: [SFTExample], report: DatasetReport) {
        self.examples = examples
        self.report = report
    }

    /// Reads `url` (JSON array, JSON Lines, or `.csv`).
    /// - Throws: `SFTError.io` when unreadable, `SFTError.format` when not one of the file
    ///   kinds, `SFTError.data(path:line:message:)` when the format cannot be detected, or — with
    ///   `strict` — for the first bad record or a cut-off file.
    public static func load(_ url: URL, options: DatasetOptions = DatasetOptions()) throws -> Dataset {
        let path = url.path
        let file = try RecordReader.read(url, selection: options.selection)
        if options.strict, let t = file.truncated {
            throw SFTError.data(path: path, line: file.records.last.map { $0.location.line } ?? 1, message: t)
        }
        let objects = file.records.map { r in r.object.map { options.fields.apply($0) } }
        let format: DatasetFormat
        if let f = options.format {
            format = f
        } else {
            let sample = objects.lazy.compactMap { $0 }.prefix(64)
            format = try DatasetFormat.detect(Array(sample), path: path, firstLine: file.records.first?.location.line ?? 1)
        }
        var examples: [SFTExample] = []
        examples.reserveCapacity(file.records.count)
        var skipped: [SkippedRecord] = []
        var droppedLeading = 0
        for (record, object) in zip(file.records, objects) {
            let outcome: Result<SFTContent, RecordError>
            var dropped = false
            if let o = object {
                outcome = format.content(of: o, mapping: options.fields, droppedLeadingAssistant: &dropped)
            } else {
                outcome = .failure(RecordError(record.error ?? "invalid record"))
            }
            switch outcome {
            case .success(let c):
                if dropped { droppedLeading += 1 }
                examples.append(SFTExample(content: c, source: record.location))
            case .failure(let e):
                if options.strict {
                    throw SFTError.data(path: path, line: record.location.line,
                                        message: "record \(record.location.index): \(e.message)")
                }
                skipped.append(SkippedRecord(location: record.location, reason: e.message))
            }
        }
        let report = DatasetReport(path: path, fileFormat: file.kind, format: format, records: file.records.count,
                                   examples: examples.count, skipped: skipped, leadingAssistantTurnsDropped: droppedLeading,
                                   truncated: file.truncated)
        return Dataset(examples: examples, report: report)
    }
}
