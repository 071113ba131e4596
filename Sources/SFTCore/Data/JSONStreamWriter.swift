// JSON written as it is produced (RFC 8259), handed to a sink in chunks of about 64 KiB: a
// report that holds a 20 MB sample text and its millions of token ids is written in linear time
// and bounded memory, where building it as Foundation objects and serializing them at once took
// minutes and gigabytes. Output matches what `sftctl` printed before: keys of dictionaries
// written through `value(_:)` sorted, "/" not escaped, no whitespace.
import Foundation

/// Compact JSON written as it is produced and handed to a sink in chunks of about 64 KiB, so a
/// report with megabytes of text and millions of ids takes linear time and bounded memory.
/// Containers open and close with `begin…`/`end…`; inside an object, call `key(_:)` before each
/// value. Call `flush()` at the end. Nesting is not checked: unbalanced calls write invalid JSON.
///
/// ```swift
/// let w = JSONStreamWriter.standardOutput()
/// w.beginObject(); try w.key("ids"); w.beginArray(); try w.int(1); try w.endArray(); try w.endObject()
/// try w.flush()   // {"ids":[1]}
/// ```
public final class JSONStreamWriter {
    private var buffer: [UInt8] = []
    private let sink: ([UInt8]) throws -> Void
    /// Per open container: whether nothing has been written into it yet.
    private var empty: [Bool] = []
    /// A key was just written: the value that follows takes no comma.
    private var afterKey = false
    static let chunk = 64 << 10

    /// `sink` receives the bytes in order, a chunk at a time.
    public init(sink: @escaping ([UInt8]) throws -> Void) {
        self.sink = sink
        buffer.reserveCapacity(Self.chunk + 1024)
    }

    /// A writer to standard output.
    public static func standardOutput() -> JSONStreamWriter {
        JSONStreamWriter { bytes in FileHandle.standardOutput.write(Data(bytes)) }
    }

    private func separate() {
        if afterKey { afterKey = false; return }
        guard let e = empty.last else { return }
        if !e { buffer.append(UInt8(ascii: ",")) }
        empty[empty.count - 1] = false
    }

    private func flushIfFull() throws {
        if buffer.count >= Self.chunk { try flush() }
    }

    /// Hands everything written so far to the sink.
    public func flush() throws {
        guard !buffer.isEmpty else { return }
        try sink(buffer)
        buffer.removeAll(keepingCapacity: true)
    }

    /// Opens an object (`{`), as the next value.
    public func beginObject() { separate(); buffer.append(UInt8(ascii: "{")); empty.append(true) }
    /// Closes the innermost open object (`}`). Throws what the sink throws when a chunk is handed
    /// on.
    public func endObject() throws { empty.removeLast(); buffer.append(UInt8(ascii: "}")); try flushIfFull() }
    /// Opens an array (`[`), as the next value.
    public func beginArray() { separate(); buffer.append(UInt8(ascii: "[")); empty.append(true) }
    /// Closes the innermost open array (`]`). Throws what the sink throws.
    public func endArray() throws { empty.removeLast(); buffer.append(UInt8(ascii: "]")); try flushIfFull() }

    /// Writes an object key (escaped) and its colon; the next call writes its value.
    public func key(_ k: String) throws {
        separate()
        try appendString(k)
        buffer.append(UInt8(ascii: ":"))
        afterKey = true
    }

    /// Writes a string, escaped as RFC 8259 requires ("/" is not escaped). Throws what the sink
    /// throws.
    public func string(_ s: String) throws { separate(); try appendString(s) }
    /// Writes an integer. Throws what the sink throws.
    public func int(_ i: Int) throws { separate(); buffer.append(contentsOf: String(i).utf8); try flushIfFull() }
    /// Writes `true` or `false`. Throws what the sink throws.
    public func bool(_ b: Bool) throws { separate(); buffer.append(contentsOf: (b ? "true" : "false").utf8); try flushIfFull() }
    /// Writes `null`. Throws what the sink throws.
    public func null() throws { separate(); buffer.append(contentsOf: "null".utf8); try flushIfFull() }
    /// A number; JSON has no NaN or infinity, so those are written as null.
    public func double(_ d: Double) throws {
        guard d.isFinite else { return try null() }
        separate()
        buffer.append(contentsOf: (d == d.rounded() && abs(d) < 1e15 ? String(Int(d)) : "\(d)").utf8)
        try flushIfFull()
    }

    /// Writes a JSON value (objects keep their key order).
    public func value(_ v: JSONValue) throws {
        switch v {
        case .null: try null()
        case .bool(let b): try bool(b)
        case .int(let i): try int(i)
        case .double(let d): try double(d)
        case .string(let s): try string(s)
        case .array(let a):
            beginArray()
            for x in a { try value(x) }
            try endArray()
        case .object(let o):
            beginObject()
            for (k, x) in o { try key(k); try value(x) }
            try endObject()
        }
    }

    /// Writes a value made of String, Bool, Int, Double, NSNull, arrays and string-keyed
    /// dictionaries (keys sorted). Anything else is written as its description, a string.
    func value(foundation v: Any) throws {
        switch v {
        case let s as String: try string(s)
        case let b as Bool where type(of: v) == Bool.self: try bool(b)
        case let i as Int: try int(i)
        case let d as Double: try double(d)
        case let f as Float: try double(Double(f))
        case is NSNull: try null()
        case let a as [Any]:
            beginArray()
            for x in a { try value(foundation: x) }
            try endArray()
        case let o as [String: Any]:
            beginObject()
            for k in o.keys.sorted() { try key(k); try value(foundation: o[k]!) }
            try endObject()
        case let n as NSNumber: try double(n.doubleValue)
        default: try string("\(v)")
        }
    }

    /// A quoted, escaped string, flushed as it grows (a 20 MB string never doubles in memory).
    private func appendString(_ s: String) throws {
        buffer.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): buffer.append(UInt8(ascii: "\\")); buffer.append(b)
            case UInt8(ascii: "\\"): buffer.append(UInt8(ascii: "\\")); buffer.append(b)
            case 0x0A: buffer.append(UInt8(ascii: "\\")); buffer.append(UInt8(ascii: "n"))
            case 0x0D: buffer.append(UInt8(ascii: "\\")); buffer.append(UInt8(ascii: "r"))
            case 0x09: buffer.append(UInt8(ascii: "\\")); buffer.append(UInt8(ascii: "t"))
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                buffer.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                                           hex[Int(b >> 4)], hex[Int(b & 15)]])
            default: buffer.append(b)
            }
            if buffer.count >= Self.chunk { try flush() }
        }
        buffer.append(UInt8(ascii: "\""))
    }
}
