// Reads a dataset file into raw records (string-keyed objects) with their locations:
// a JSON array (RFC 8259), JSON Lines (one object per line), or CSV (RFC 4180: header row,
// quoted fields with "" escapes and embedded newlines, CRLF or LF).
//
// JSON arrays are split into elements by a byte scanner before any parsing, so `first(n)` reads
// only the head of a large file, a sampled subset parses only the chosen elements, every record
// knows its line, and a file cut off in the middle (a partial download) still yields all its
// complete records, with the cut reported.
import Foundation
import SFTKernels

/// Which records of a file to read.
public enum RecordSelection: Equatable, Sendable {
    /// Every record of the file.
    case all
    /// The first `n` records of the file.
    case first(Int)
    /// `n` records chosen uniformly at random by `seed`, kept in file order.
    case sample(Int, seed: UInt64)
}

/// One record as found in the file: an object, or why it is not one.
struct RawRecord {
    var location: SourceLocation
    var object: [String: RecordValue]?
    var error: String?
    /// The record's bytes are not all valid UTF-8 (the bad bytes read as U+FFFD).
    var invalidUTF8 = false
}

/// The chosen records of a file. JSON records are parsed on demand (`record(i)`), so a large
/// file is never held as parsed objects all at once: each is parsed, converted and dropped.
struct RecordFile {
    var kind: String
    var truncated: String?
    /// The file's bytes (memory-mapped) and, per chosen JSON record, its byte range and location.
    var data = Data()
    var spans: [(range: Range<Int>, location: SourceLocation)] = []
    /// CSV records, parsed up front (rows are already split into fields).
    var parsed: [RawRecord] = []

    var count: Int { parsed.isEmpty ? spans.count : parsed.count }

    /// The record's JSON text (nil for CSV), for values whose key order matters (tool schemas).
    func rawJSON(_ i: Int) -> Data? {
        parsed.isEmpty ? data.subdata(in: spans[i].range) : nil
    }

    func record(_ i: Int) -> RawRecord {
        if !parsed.isEmpty { return parsed[i] }
        let (range, location) = spans[i]
        return data.withUnsafeBytes { raw in
            let bytes = raw.bindMemory(to: UInt8.self)
            let (object, error) = RecordReader.parseObject(bytes, range, line: location.line)
            return RawRecord(location: location, object: object, error: error,
                             invalidUTF8: !RecordReader.isValidUTF8(UnsafeBufferPointer(rebasing: bytes[range])))
        }
    }
}

enum RecordReader {
    /// Whether `bytes` are valid UTF-8 (ASCII runs are skipped without decoding).
    static func isValidUTF8(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        var i = 0
        while i < bytes.count, bytes[i] < 0x80 { i += 1 }
        if i == bytes.count { return true }
        return firstInvalidUTF8(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: bytes[i...]))) == nil
    }

    static func read(_ url: URL, selection: RecordSelection) throws -> RecordFile {
        let data: Data
        do {
            data = try Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw SFTError.io(path: url.path, message: "cannot read dataset: \(error.localizedDescription)")
        }
        var file = try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> RecordFile in
            let bytes = raw.bindMemory(to: UInt8.self)
            var start = 0
            if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { start = 3 }  // UTF-8 BOM
            var first = start
            while first < bytes.count, isSpace(bytes[first]) { first += 1 }
            let ext = url.pathExtension.lowercased()
            if ext == "csv" {
                return try readCSV(bytes, from: start, path: url.path, selection: selection)
            }
            guard first < bytes.count else { throw SFTError.format(path: url.path, offset: nil, message: "empty dataset file") }
            switch bytes[first] {
            case UInt8(ascii: "["): return try readJSONArray(bytes, from: first, path: url.path, selection: selection)
            case UInt8(ascii: "{"): return readJSONLines(bytes, from: start, selection: selection)
            default:
                throw SFTError.format(path: url.path, offset: first,
                                      message: "not a JSON array, JSON Lines or .csv file (first byte '\(Character(Unicode.Scalar(bytes[first])))')")
            }
        }
        if file.parsed.isEmpty { file.data = data }
        return file
    }

    @inline(__always) static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 }

    // MARK: JSON

    /// Parses one record; a failure names what is wrong and on which line of the file.
    static func parseObject(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, line: Int) -> (object: [String: RecordValue]?, error: String?) {
        do {
            guard case .object(let o) = try RecordJSONParser.parse(bytes, range) else { return (nil, "not a JSON object") }
            return (o, nil)
        } catch let e as RecordJSONError {
            var l = line
            for k in range.lowerBound..<min(e.offset, range.upperBound) where bytes[k] == 0x0A { l += 1 }
            return (nil, "invalid JSON: \(e.message) (line \(l))")
        } catch {
            return (nil, "invalid JSON: \(error)")
        }
    }

    /// Element byte ranges of a top-level JSON array, each with the line it starts on.
    static func readJSONArray(_ bytes: UnsafeBufferPointer<UInt8>, from open: Int, path: String,
                              selection: RecordSelection) throws -> RecordFile {
        var elements: [(range: Range<Int>, line: Int)] = []
        var truncated: String?
        var line = 1
        for k in 0..<open where bytes[k] == 0x0A { line += 1 }
        let n = bytes.count
        var i = open + 1
        let stopAfter: Int? = { if case .first(let k) = selection { return k }; return nil }()
        var closed = false
        scan: while i < n {
            if let k = stopAfter, elements.count >= k { closed = true; break }
            // Skip whitespace and the separating comma.
            while i < n, isSpace(bytes[i]) || bytes[i] == UInt8(ascii: ",") {
                if bytes[i] == 0x0A { line += 1 }
                i += 1
            }
            guard i < n else { break }
            if bytes[i] == UInt8(ascii: "]") { closed = true; break }
            let start = i, startLine = line
            var depth = 0, inString = false, escaped = false
            while i < n {
                let b = bytes[i]
                if b == 0x0A { line += 1 }
                if inString {
                    if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
                } else {
                    switch b {
                    case UInt8(ascii: "\""): inString = true
                    case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                    case UInt8(ascii: "}"), UInt8(ascii: "]"):
                        if depth == 0 {  // the array's own closing bracket ends the last element
                            elements.append((start..<i, startLine))
                            closed = true
                            break scan
                        }
                        depth -= 1
                    case UInt8(ascii: ","):
                        if depth == 0 {
                            elements.append((start..<i, startLine))
                            continue scan
                        }
                    default: break
                    }
                }
                i += 1
            }
            // End of file inside an element: a cut-off file. Its complete records still count.
            truncated = "file ends inside record \(elements.count) (line \(startLine)): the file is cut off; that record is ignored"
            break
        }
        if !closed && truncated == nil {
            truncated = "file ends before the closing ']' of the JSON array"
        }
        var chosen: [Int]
        switch selection {
        case .all, .first: chosen = Array(elements.indices)
        case .sample(let k, let seed): chosen = DataShuffle.sample(k, of: elements.count, seed: seed)
        }
        let spans = chosen.map { idx in (elements[idx].range, SourceLocation(line: elements[idx].line, index: idx)) }
        return RecordFile(kind: "JSON array", truncated: truncated, spans: spans)
    }

    static func readJSONLines(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int, selection: RecordSelection) -> RecordFile {
        var lines: [(range: Range<Int>, line: Int)] = []
        let stopAfter: Int? = { if case .first(let k) = selection { return k }; return nil }()
        var i = start, line = 1
        let n = bytes.count
        while i < n {
            if let k = stopAfter, lines.count >= k { break }
            var j = i
            while j < n, bytes[j] != 0x0A { j += 1 }
            var a = i, b = j
            while a < b, isSpace(bytes[a]) { a += 1 }
            while b > a, isSpace(bytes[b - 1]) { b -= 1 }
            if a < b { lines.append((a..<b, line)) }
            line += 1
            i = j + 1
        }
        let chosen: [Int]
        switch selection {
        case .all, .first: chosen = Array(lines.indices)
        case .sample(let k, let seed): chosen = DataShuffle.sample(k, of: lines.count, seed: seed)
        }
        let spans = chosen.map { idx in (lines[idx].range, SourceLocation(line: lines[idx].line, index: idx)) }
        return RecordFile(kind: "JSON Lines", truncated: nil, spans: spans)
    }

    // MARK: CSV

    /// RFC 4180 rows: fields split on commas outside quotes, `""` inside quotes is one quote,
    /// line breaks inside quotes belong to the field. Each row keeps the line it starts on.
    static func csvRows(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int, path: String,
                        maxRows: Int?) throws -> [(fields: [String], line: Int, invalidUTF8: Bool)] {
        var rows: [(fields: [String], line: Int, invalidUTF8: Bool)] = []
        var fields: [String] = []
        var field: [UInt8] = []
        var invalid = false
        var i = start, line = 1, rowLine = 1
        var inQuotes = false, quotedField = false
        let n = bytes.count
        func endField() {
            if !invalid { invalid = !field.withUnsafeBufferPointer(isValidUTF8) }
            fields.append(String(decoding: field, as: UTF8.self))
            field.removeAll(keepingCapacity: true)
            quotedField = false
        }
        func endRow() {
            endField()
            // A line with nothing on it is not a record (trailing newline, blank lines).
            if !(fields.count == 1 && fields[0].isEmpty) { rows.append((fields, rowLine, invalid)) }
            fields = []
            invalid = false
        }
        while i < n {
            if let m = maxRows, rows.count >= m { return rows }
            let b = bytes[i]
            if inQuotes {
                if b == UInt8(ascii: "\"") {
                    if i + 1 < n, bytes[i + 1] == UInt8(ascii: "\"") { field.append(b); i += 1 } else { inQuotes = false }
                } else {
                    if b == 0x0A { line += 1 }
                    field.append(b)
                }
            } else {
                switch b {
                case UInt8(ascii: "\""):
                    if field.isEmpty && !quotedField { inQuotes = true; quotedField = true } else {
                        throw SFTError.data(path: path, line: line, message: "CSV: stray quote inside an unquoted field")
                    }
                case UInt8(ascii: ","): endField()
                case 0x0D where i + 1 < n && bytes[i + 1] == 0x0A: break  // CR of CRLF
                case 0x0A:
                    endRow()
                    line += 1
                    rowLine = line
                default:
                    if quotedField {
                        throw SFTError.data(path: path, line: line, message: "CSV: text after a closing quote")
                    }
                    field.append(b)
                }
            }
            i += 1
        }
        if inQuotes { throw SFTError.data(path: path, line: rowLine, message: "CSV: quoted field not closed before end of file") }
        if !field.isEmpty || !fields.isEmpty || quotedField { endRow() }
        return rows
    }

    static func readCSV(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int, path: String, selection: RecordSelection) throws -> RecordFile {
        var maxRows: Int?
        if case .first(let k) = selection { maxRows = k + 1 }
        let rows = try csvRows(bytes, from: start, path: path, maxRows: maxRows)
        guard let header = rows.first else { throw SFTError.format(path: path, offset: nil, message: "empty CSV file (no header row)") }
        let keys = header.fields.map { $0.trimmingCharacters(in: .whitespaces) }
        let body = Array(rows.dropFirst())
        let chosen: [Int]
        switch selection {
        case .all, .first: chosen = Array(body.indices)
        case .sample(let k, let seed): chosen = DataShuffle.sample(k, of: body.count, seed: seed)
        }
        let records = chosen.map { idx -> RawRecord in
            let row = body[idx]
            let loc = SourceLocation(line: row.line, index: idx)
            guard row.fields.count == keys.count else {
                return RawRecord(location: loc, object: nil, error: "CSV row has \(row.fields.count) fields, header has \(keys.count)",
                                 invalidUTF8: row.invalidUTF8)
            }
            var object: [String: RecordValue] = [:]
            for (k, v) in zip(keys, row.fields) { object[k] = .string(v) }
            return RawRecord(location: loc, object: object, error: nil, invalidUTF8: row.invalidUTF8)
        }
        return RecordFile(kind: "CSV", truncated: nil, parsed: records)
    }
}
