// Loading a dataset file: read records (RecordReader), map fields, detect or apply the format,
// convert each record to an SFTExample, and skip-and-count (or, strict, reject) bad records.
import Foundation
import SFTKernels

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
    /// Whether a data span `[begin, end]` includes `end` (Fast-LLM's convention, the default).
    public var spanEndInclusive: Bool
    /// Tool schemas for every conversation that has none of its own.
    public var tools: JSONValue?

    /// Options from their fields; each argument sets the property of the same name (defaults:
    /// detect the format, no renames, skip bad records, read all records, inclusive span ends, no
    /// tools).
    public init(format: DatasetFormat? = nil, fields: FieldMapping = FieldMapping(), strict: Bool = false,
                selection: RecordSelection = .all, spanEndInclusive: Bool = true, tools: JSONValue? = nil) {
        self.format = format
        self.fields = fields
        self.strict = strict
        self.selection = selection
        self.spanEndInclusive = spanEndInclusive
        self.tools = tools
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
    /// The examples, in file order (bad records left out).
    public var examples: [SFTExample]
    /// What loading found: format, counts and the skipped records.
    public var report: DatasetReport

    /// A dataset from examples already in memory (tests, generated data).
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
            throw SFTError.data(path: path, line: file.count > 0 ? file.record(file.count - 1).location.line : 1, message: t)
        }
        let format: DatasetFormat
        if let f = options.format {
            format = f
        } else {
            // Detect from the first objects (parsed twice: cheap, and nothing is held).
            var sample: [[String: RecordValue]] = []
            var i = 0
            while i < file.count, sample.count < 64 {
                if let o = file.record(i).object { sample.append(options.fields.applyLeniently(o)) }
                i += 1
            }
            if sample.isEmpty, file.count > 0 {
                let first = file.record(0)
                throw SFTError.data(path: path, line: first.location.line,
                                    message: "no record in the first \(i) is a JSON object (first: \(first.error ?? "?")); "
                                        + "expected a JSON array of objects, JSON Lines (one object per line) or CSV with a header")
            }
            format = try DatasetFormat.detect(sample, path: path, firstLine: file.count > 0 ? file.record(0).location.line : 1)
        }
        var examples: [SFTExample] = []
        examples.reserveCapacity(file.count)
        var skipped: [SkippedRecord] = []
        var droppedLeading = 0
        var invalidUTF8 = 0
        var invalidUTF8Lines: [Int] = []
        for i in 0..<file.count {
            let record = file.record(i)
            if record.invalidUTF8 {
                if options.strict {
                    throw SFTError.data(path: path, line: record.location.line,
                                        message: "record \(record.location.index): invalid UTF-8 (without --strict the bad bytes read as U+FFFD, with a warning)")
                }
                invalidUTF8 += 1
                if invalidUTF8Lines.count < DatasetReport.invalidUTF8LinesShown { invalidUTF8Lines.append(record.location.line) }
            }
            var outcome: Result<SFTContent, RecordError>
            var dropped = false
            if let o = record.object {
                do {
                    outcome = format.content(of: try options.fields.apply(o), mapping: options.fields, droppedLeadingAssistant: &dropped)
                } catch {
                    outcome = .failure(error as? RecordError ?? RecordError("\(error)"))
                }
            } else {
                outcome = .failure(RecordError(record.error ?? "invalid record"))
            }
            var example: SFTExample?
            if case .success(let c) = outcome, let o = record.object {
                do {
                    let mapped = try options.fields.apply(o)
                    let spans = try format.lossSpans(of: mapped, endInclusive: options.spanEndInclusive)
                    var content = c
                    var tools = format == .messages || format == .sharegpt ? options.tools : nil
                    if format == .messages || format == .sharegpt, Self.mentionsTools(mapped, format: format) {
                        // Key order matters to templates (tojson): read tools and tool calls again, ordered.
                        let ordered = try file.rawJSON(i).map { try JSONValue(parsing: $0, path: path) }
                        if let t = ordered?[options.fields.renames["tools"] ?? "tools"], !t.isNull { tools = t }
                        content = try format.withToolCalls(c, ordered: ordered, mapping: options.fields)
                    }
                    example = SFTExample(content: content, source: record.location, lossSpans: spans, tools: tools)
                } catch {
                    outcome = .failure(error as? RecordError ?? RecordError("\(error)"))
                }
            }
            switch outcome {
            case .success:
                if dropped { droppedLeading += 1 }
                examples.append(example!)
            case .failure(let e):
                if options.strict {
                    throw SFTError.data(path: path, line: record.location.line,
                                        message: "record \(record.location.index): \(e.message)")
                }
                skipped.append(SkippedRecord(location: record.location, reason: e.message))
            }
        }
        var report = DatasetReport(path: path, fileFormat: file.kind, format: format, records: file.count,
                                   examples: examples.count, skipped: skipped, leadingAssistantTurnsDropped: droppedLeading,
                                   truncated: file.truncated)
        report.invalidUTF8Records = invalidUTF8
        report.invalidUTF8Lines = invalidUTF8Lines
        return Dataset(examples: examples, report: report)
    }

    /// Whether a conversation record has tools or tool calls (then its JSON is read ordered).
    static func mentionsTools(_ o: [String: RecordValue], format: DatasetFormat) -> Bool {
        if o["tools"].map({ !$0.isNull }) ?? false { return true }
        guard case .array(let list)? = o[format == .sharegpt ? "conversations" : "messages"] else { return false }
        return list.contains { if case .object(let m) = $0 { return m["tool_calls"].map { !$0.isNull } ?? false }; return false }
    }
}
