// An order-preserving JSON value with its own parser and serializer (RFC 8259).
//
// Foundation's JSONSerialization loses object key order and the difference between 1 and 1.0;
// both matter here: chat templates print tool schemas with `tojson`, and the bytes must equal
// what Python's `json.dumps` gives for the same input (Python dicts keep insertion order, and
// Python keeps ints and floats apart). The parser follows Python's `json.loads` where the two
// can differ: duplicate keys keep the first position and the last value; NaN / Infinity are
// accepted; integers too large for Int become Double.
import Foundation
import SFTKernels

/// A JSON document, keeping object key order and whether a number was written as an integer.
///
/// ```swift
/// let v = try JSONValue(parsing: #"{"b": 1, "a": [true, 2.5, null]}"#)
/// v["a"]?[1]?.doubleValue        // 2.5
/// v.serialized()                 // {"b":1,"a":[true,2.5,null]}
/// ```
public enum JSONValue: Sendable {
    /// JSON `null`.
    case null
    /// `true` or `false`.
    case bool(Bool)
    /// A number written without fraction or exponent that fits in Int.
    case int(Int)
    /// Any other number.
    case double(Double)
    /// A string, unescaped.
    case string(String)
    /// An array, in order.
    case array([JSONValue])
    /// Key/value pairs in document order; keys are unique.
    case object([(String, JSONValue)])
}

// MARK: - Accessors

extension JSONValue {
    /// The value for `key` when this is an object (linear search: objects in chat data are small).
    public subscript(key: String) -> JSONValue? {
        guard case .object(let pairs) = self else { return nil }
        return pairs.first(where: { $0.0 == key })?.1
    }

    /// The element at `index` when this is an array and the index is in range.
    public subscript(index: Int) -> JSONValue? {
        guard case .array(let items) = self, items.indices.contains(index) else { return nil }
        return items[index]
    }

    /// The string when this is `.string`, else nil.
    public var stringValue: String? { if case .string(let s) = self { return s }; return nil }
    /// The Bool when this is `.bool`, else nil.
    public var boolValue: Bool? { if case .bool(let b) = self { return b }; return nil }
    /// The integer when this is `.int`, else nil (`.double(1.0)` gives nil; see `doubleValue`).
    public var intValue: Int? { if case .int(let i) = self { return i }; return nil }
    /// The number as Double (integers convert).
    public var doubleValue: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }
    /// The elements when this is `.array`, else nil.
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
    /// The key/value pairs, in document order, when this is `.object`, else nil.
    public var objectValue: [(String, JSONValue)]? { if case .object(let o) = self { return o }; return nil }
    /// Whether this is `.null`.
    public var isNull: Bool { if case .null = self { return true }; return false }
}

extension JSONValue: Equatable {
    /// Structural equality; object key order matters, and 1 and 1.0 differ.
    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case (.bool(let x), .bool(let y)): return x == y
        case (.int(let x), .int(let y)): return x == y
        case (.double(let x), .double(let y)): return x == y
        case (.string(let x), .string(let y)): return x == y
        case (.array(let x), .array(let y)): return x == y
        case (.object(let x), .object(let y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    /// Keeps the literal's order.
    public init(dictionaryLiteral elements: (String, JSONValue)...) { self = .object(elements) }
    public init(nilLiteral: ()) { self = .null }
    public typealias Key = String
    public typealias Value = JSONValue
}

// MARK: - Parsing

extension JSONValue {
    /// Parses a JSON document. Errors are `SFTError.format` naming `path` and the byte offset.
    public init(parsing data: Data, path: String = "<json>") throws {
        self = try data.withUnsafeBytes { raw in
            var p = JSONParser(bytes: raw.bindMemory(to: UInt8.self), path: path)
            return try p.parseDocument()
        }
    }

    /// Parses a JSON document held in a string.
    public init(parsing text: String, path: String = "<json>") throws {
        var text = text
        self = try text.withUTF8 { buf in
            var p = JSONParser(bytes: buf, path: path)
            return try p.parseDocument()
        }
    }
}

/// A recursive-descent parser over UTF-8 bytes, depth-limited so hostile input cannot
/// overflow the stack.
private struct JSONParser {
    let bytes: UnsafeBufferPointer<UInt8>
    let path: String
    var pos = 0
    var depth = 0
    static let maxDepth = 256

    init(bytes: UnsafeBufferPointer<UInt8>, path: String) {
        self.bytes = bytes
        self.path = path
    }

    func fail(_ message: String, at offset: Int? = nil) -> SFTError {
        .format(path: path, offset: offset ?? pos, message: message)
    }

    mutating func skipWhitespace() {
        while pos < bytes.count {
            switch bytes[pos] {
            case 0x20, 0x0A, 0x0D, 0x09: pos += 1
            default: return
            }
        }
    }

    mutating func parseDocument() throws -> JSONValue {
        // A UTF-8 byte order mark is tolerated, as Python's json.load(open(...)) does with utf-8-sig.
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { pos = 3 }
        skipWhitespace()
        let v = try parseValue()
        skipWhitespace()
        if pos != bytes.count { throw fail("extra data after the JSON value") }
        return v
    }

    mutating func parseValue() throws -> JSONValue {
        guard pos < bytes.count else { throw fail("unexpected end of input, expected a value") }
        switch bytes[pos] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectWord("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectWord("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectWord("null"); return .null
        case UInt8(ascii: "N"): try expectWord("NaN"); return .double(.nan)
        case UInt8(ascii: "I"): try expectWord("Infinity"); return .double(.infinity)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw fail("unexpected character '\(Unicode.Scalar(bytes[pos]))', expected a value")
        }
    }

    mutating func expectWord(_ word: StaticString) throws {
        let n = word.utf8CodeUnitCount
        let w = UnsafeBufferPointer(start: word.utf8Start, count: n)
        guard pos + n <= bytes.count, (0..<n).allSatisfy({ bytes[pos + $0] == w[$0] }) else {
            throw fail("invalid literal, expected '\(word)'")
        }
        pos += n
    }

    mutating func enter() throws {
        depth += 1
        if depth > Self.maxDepth { throw fail("nesting deeper than \(Self.maxDepth) levels") }
    }

    mutating func parseArray() throws -> JSONValue {
        try enter()
        defer { depth -= 1 }
        pos += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
        while true {
            skipWhitespace()
            items.append(try parseValue())
            skipWhitespace()
            guard pos < bytes.count else { throw fail("unexpected end of input in array") }
            if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
            if bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
            throw fail("expected ',' or ']' in array")
        }
    }

    mutating func parseObject() throws -> JSONValue {
        try enter()
        defer { depth -= 1 }
        pos += 1
        var pairs: [(String, JSONValue)] = []
        var index: [String: Int] = [:]  // built only for large objects, to keep duplicates O(1)
        skipWhitespace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(pairs) }
        while true {
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else {
                throw fail("expected a string key in object")
            }
            let key = try parseString()
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else { throw fail("expected ':' after object key") }
            pos += 1
            skipWhitespace()
            let value = try parseValue()
            // Python's dict keeps a duplicate key at its first position with the last value.
            var existing: Int?
            if pairs.count < 16 {
                existing = pairs.firstIndex(where: { $0.0 == key })
            } else {
                if index.isEmpty { for (i, p) in pairs.enumerated() { index[p.0] = i } }
                existing = index[key]
                if existing == nil { index[key] = pairs.count }
            }
            if let i = existing { pairs[i].1 = value } else { pairs.append((key, value)) }
            skipWhitespace()
            guard pos < bytes.count else { throw fail("unexpected end of input in object") }
            if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
            if bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(pairs) }
            throw fail("expected ',' or '}' in object")
        }
    }

    mutating func parseNumber() throws -> JSONValue {
        let start = pos
        if bytes[pos] == UInt8(ascii: "-") {
            pos += 1
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "I") { try expectWord("Infinity"); return .double(-.infinity) }
        }
        func digits() -> Int {
            let s = pos
            while pos < bytes.count, bytes[pos] >= 0x30, bytes[pos] <= 0x39 { pos += 1 }
            return pos - s
        }
        guard pos < bytes.count, bytes[pos] >= 0x30, bytes[pos] <= 0x39 else { throw fail("invalid number", at: start) }
        if bytes[pos] == UInt8(ascii: "0") { pos += 1 } else { _ = digits() }
        var isInteger = true
        if pos < bytes.count, bytes[pos] == UInt8(ascii: ".") {
            pos += 1
            isInteger = false
            if digits() == 0 { throw fail("invalid number: digits expected after '.'", at: start) }
        }
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "e") || bytes[pos] == UInt8(ascii: "E") {
            pos += 1
            isInteger = false
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "+") || bytes[pos] == UInt8(ascii: "-") { pos += 1 }
            if digits() == 0 { throw fail("invalid number: digits expected in exponent", at: start) }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<pos]), as: UTF8.self)
        if isInteger, let i = Int(text) { return .int(i) }
        guard let d = Double(text) else { throw fail("invalid number '\(text)'", at: start) }
        return .double(d)
    }

    /// Parses a string starting at the opening quote; invalid escapes are errors, lone
    /// surrogates become U+FFFD (Swift strings cannot hold them).
    mutating func parseString() throws -> String {
        let start = pos
        pos += 1
        // Fast path: no escapes.
        var i = pos
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "\"") {
                let s = String(decoding: UnsafeBufferPointer(rebasing: bytes[pos..<i]), as: UTF8.self)
                pos = i + 1
                return s
            }
            if c == UInt8(ascii: "\\") { break }
            if c < 0x20 { throw fail("control character in string", at: i) }
            i += 1
        }
        var out: [UInt8] = Array(bytes[pos..<i])
        pos = i
        while true {
            guard pos < bytes.count else { throw fail("unterminated string", at: start) }
            let c = bytes[pos]
            if c == UInt8(ascii: "\"") { pos += 1; break }
            if c < 0x20 { throw fail("control character in string") }
            if c != UInt8(ascii: "\\") { out.append(c); pos += 1; continue }
            pos += 1
            guard pos < bytes.count else { throw fail("unterminated string", at: start) }
            let e = bytes[pos]
            pos += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if scalar >= 0xD800, scalar < 0xDC00 {
                    // A high surrogate pairs with a following \uDC00-\uDFFF escape.
                    if pos + 1 < bytes.count, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") {
                        let save = pos
                        pos += 2
                        let low = try hex4()
                        if low >= 0xDC00, low < 0xE000 {
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            pos = save
                            scalar = 0xFFFD
                        }
                    } else {
                        scalar = 0xFFFD
                    }
                } else if scalar >= 0xDC00, scalar < 0xE000 {
                    scalar = 0xFFFD
                }
                out.append(contentsOf: String(Character(Unicode.Scalar(scalar)!)).utf8)
            default:
                throw fail("invalid escape '\\\(Unicode.Scalar(e))' in string", at: pos - 2)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    mutating func hex4() throws -> UInt32 {
        guard pos + 4 <= bytes.count else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[pos]
            let d: UInt8
            switch c {
            case 0x30...0x39: d = c - 0x30
            case 0x41...0x46: d = c - 0x41 + 10
            case 0x61...0x66: d = c - 0x61 + 10
            default: throw fail("invalid \\u escape")
            }
            v = v << 4 | UInt32(d)
            pos += 1
        }
        return v
    }
}

// MARK: - Serializing

extension JSONValue {
    /// How `serialized` lays out its text. `.compact` has no spaces; `.python` matches Python's
    /// `json.dumps` defaults (`", "` and `": "`, or `","` and `": "` when indenting).
    public struct Style: Sendable {
        /// The text repeated once per nesting level at the start of each line; nil writes
        /// everything on one line ("" still breaks lines, as Python's indent=0 does).
        public var indent: String?
        /// Written between array elements and between object pairs (Python's first `separators`
        /// item).
        public var itemSeparator: String
        /// Written between an object key and its value (Python's second `separators` item).
        public var keySeparator: String
        /// Write object keys in sorted order instead of document order (Python's sort_keys).
        public var sortKeys: Bool
        /// Escape every non-ASCII character as \uXXXX (Python's ensure_ascii).
        public var escapeNonASCII: Bool

        /// A layout with the given separators; the other settings default to Python's (no indent,
        /// keys in document order, non-ASCII written as is).
        public init(indent: String? = nil, itemSeparator: String, keySeparator: String, sortKeys: Bool = false,
                    escapeNonASCII: Bool = false) {
            self.indent = indent
            self.itemSeparator = itemSeparator
            self.keySeparator = keySeparator
            self.sortKeys = sortKeys
            self.escapeNonASCII = escapeNonASCII
        }

        /// No spaces and no line breaks: `{"a":[1,2]}`.
        public static let compact = Style(itemSeparator: ",", keySeparator: ":")

        /// Python's `json.dumps(x, ensure_ascii=False, indent=indent)`.
        public static func python(indent: Int? = nil) -> Style {
            Style(indent: indent.map { String(repeating: " ", count: max(0, $0)) },
                  itemSeparator: indent == nil ? ", " : ",", keySeparator: ": ")
        }
    }

    /// The JSON text of this value.
    public func serialized(_ style: Style = .compact) -> String {
        var out: [UInt8] = []
        write(into: &out, style: style, indentString: style.indent, level: 0)
        return String(decoding: out, as: UTF8.self)
    }

    func write(into out: inout [UInt8], style: Style, indentString: String?, level: Int) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .int(let i): out.append(contentsOf: String(i).utf8)
        case .double(let d): out.append(contentsOf: JSONValue.pythonFloatRepr(d, json: true).utf8)
        case .string(let s): JSONValue.writeEscaped(s, into: &out, asciiOnly: style.escapeNonASCII)
        case .array(let items):
            if items.isEmpty { out.append(contentsOf: "[]".utf8); return }
            out.append(UInt8(ascii: "["))
            for (k, item) in items.enumerated() {
                if k > 0 { out.append(contentsOf: style.itemSeparator.utf8) }
                JSONValue.newline(&out, indentString, level + 1)
                item.write(into: &out, style: style, indentString: indentString, level: level + 1)
            }
            JSONValue.newline(&out, indentString, level)
            out.append(UInt8(ascii: "]"))
        case .object(let pairs):
            if pairs.isEmpty { out.append(contentsOf: "{}".utf8); return }
            let ordered = style.sortKeys ? pairs.sorted { Array($0.0.unicodeScalars.map(\.value)).lexicographicallyPrecedes($1.0.unicodeScalars.map(\.value)) } : pairs
            out.append(UInt8(ascii: "{"))
            for (k, (key, value)) in ordered.enumerated() {
                if k > 0 { out.append(contentsOf: style.itemSeparator.utf8) }
                JSONValue.newline(&out, indentString, level + 1)
                JSONValue.writeEscaped(key, into: &out, asciiOnly: style.escapeNonASCII)
                out.append(contentsOf: style.keySeparator.utf8)
                value.write(into: &out, style: style, indentString: indentString, level: level + 1)
            }
            JSONValue.newline(&out, indentString, level)
            out.append(UInt8(ascii: "}"))
        }
    }

    private static func newline(_ out: inout [UInt8], _ indent: String?, _ level: Int) {
        guard let indent else { return }
        out.append(0x0A)
        for _ in 0..<level { out.append(contentsOf: indent.utf8) }
    }

    /// Writes `s` as a JSON string literal the way Python's json module does: `"` `\` and
    /// control characters escaped (\n \r \t \b \f by name, others as \u00XX), nothing else
    /// unless `asciiOnly`.
    static func writeEscaped(_ s: String, into out: inout [UInt8], asciiOnly: Bool) {
        out.append(0x22)
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        func u(_ v: UInt32) {
            out.append(contentsOf: [0x5C, UInt8(ascii: "u"), hex[Int(v >> 12 & 15)], hex[Int(v >> 8 & 15)],
                                    hex[Int(v >> 4 & 15)], hex[Int(v & 15)]])
        }
        if !asciiOnly {
            for b in s.utf8 {
                switch b {
                case 0x22: out.append(contentsOf: [0x5C, 0x22])
                case 0x5C: out.append(contentsOf: [0x5C, 0x5C])
                case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
                case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
                case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
                case 0x08: out.append(contentsOf: [0x5C, UInt8(ascii: "b")])
                case 0x0C: out.append(contentsOf: [0x5C, UInt8(ascii: "f")])
                case 0..<0x20: u(UInt32(b))
                default: out.append(b)
                }
            }
        } else {
            for sc in s.unicodeScalars {
                let v = sc.value
                switch v {
                case 0x22: out.append(contentsOf: [0x5C, 0x22])
                case 0x5C: out.append(contentsOf: [0x5C, 0x5C])
                case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
                case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
                case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
                case 0x08: out.append(contentsOf: [0x5C, UInt8(ascii: "b")])
                case 0x0C: out.append(contentsOf: [0x5C, UInt8(ascii: "f")])
                case 0x20..<0x7F: out.append(UInt8(v))
                case 0x10000...:
                    let w = v - 0x10000
                    u(0xD800 + (w >> 10)); u(0xDC00 + (w & 0x3FF))
                default: u(v)
                }
            }
        }
        out.append(0x22)
    }

    /// Python's `repr(float)`: the shortest digits that round-trip, in positional notation
    /// for exponents -4 ..< 16 and scientific (`1e+16`, `1e-05`) outside; integral values
    /// end in `.0`. With `json`, non-finite values are `NaN` / `Infinity` / `-Infinity` as in
    /// `json.dumps`; otherwise `nan` / `inf` / `-inf`.
    public static func pythonFloatRepr(_ d: Double, json: Bool = false) -> String {
        if d.isNaN { return json ? "NaN" : "nan" }
        if d.isInfinite { return d < 0 ? (json ? "-Infinity" : "-inf") : (json ? "Infinity" : "inf") }
        if d == 0 { return d.sign == .minus ? "-0.0" : "0.0" }
        // Swift's description gives the same shortest round-trip digits; only the layout differs.
        let desc = d.description  // e.g. "1e-05", "1.5e+20", "123.0", "5e-324"
        let negative = desc.hasPrefix("-")
        let body = negative ? String(desc.dropFirst()) : desc
        var mantissa = body
        var exp10 = 0
        if let e = body.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            mantissa = String(body[..<e])
            exp10 = Int(body[body.index(after: e)...]) ?? 0
        }
        // digits and decimal exponent: value = 0.d1d2d3... * 10^point
        var digits = ""
        var point = 0
        if let dot = mantissa.firstIndex(of: ".") {
            let intPart = String(mantissa[..<dot])
            let frac = String(mantissa[mantissa.index(after: dot)...])
            digits = intPart + frac
            point = intPart.count
        } else {
            digits = mantissa
            point = mantissa.count
        }
        // strip leading zeros (adjusting the point) and trailing zeros
        while digits.hasPrefix("0") && digits.count > 1 { digits.removeFirst(); point -= 1 }
        while digits.hasSuffix("0") && digits.count > 1 { digits.removeLast() }
        point += exp10
        let sci = point - 1  // exponent in d.ddd × 10^sci form
        var s: String
        if sci < -4 || sci >= 16 {
            s = String(digits.first!)
            if digits.count > 1 { s += "." + digits.dropFirst() }
            s += "e" + (sci < 0 ? "-" : "+") + (abs(sci) < 10 ? "0" : "") + String(abs(sci))
        } else if point <= 0 {
            s = "0." + String(repeating: "0", count: -point) + digits
        } else if point >= digits.count {
            s = digits + String(repeating: "0", count: point - digits.count) + ".0"
        } else {
            let i = digits.index(digits.startIndex, offsetBy: point)
            s = digits[..<i] + "." + digits[i...]
        }
        return negative ? "-" + s : s
    }
}

extension JSONValue: CustomStringConvertible {
    public var description: String { serialized() }
}

// MARK: - Codable (lossy: decoders do not keep key order; use init(parsing:) where order matters)

extension JSONValue: Codable {
    private struct CodingName: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { return nil }
    }

    public init(from decoder: Decoder) throws {
        if let c = try? decoder.container(keyedBy: CodingName.self) {
            self = .object(try c.allKeys.map { ($0.stringValue, try c.decode(JSONValue.self, forKey: $0)) })
            return
        }
        if var c = try? decoder.unkeyedContainer() {
            var items: [JSONValue] = []
            while !c.isAtEnd { items.append(try c.decode(JSONValue.self)) }
            self = .array(items)
            return
        }
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else { self = .string(try c.decode(String.self)) }
    }

    public func encode(to encoder: Encoder) throws {
        switch self {
        case .null: var c = encoder.singleValueContainer(); try c.encodeNil()
        case .bool(let b): var c = encoder.singleValueContainer(); try c.encode(b)
        case .int(let i): var c = encoder.singleValueContainer(); try c.encode(i)
        case .double(let d): var c = encoder.singleValueContainer(); try c.encode(d)
        case .string(let s): var c = encoder.singleValueContainer(); try c.encode(s)
        case .array(let a):
            var c = encoder.unkeyedContainer()
            for v in a { try c.encode(v) }
        case .object(let o):
            var c = encoder.container(keyedBy: CodingName.self)
            for (k, v) in o { try c.encode(v, forKey: CodingName(stringValue: k)) }
        }
    }
}

extension JSONValue {
    /// An object with `dictionary`'s pairs in sorted key order (reports built in code).
    static func sortedObject(_ dictionary: [String: JSONValue]) -> JSONValue {
        .object(dictionary.keys.sorted().map { ($0, dictionary[$0]!) })
    }
}

// MARK: - Foundation values (internal: the public API speaks JSONValue, not Any)

extension JSONValue {
    /// A JSON value from Swift values or JSONSerialization's objects (Bool, integers, floating
    /// point, String, arrays, string-keyed dictionaries, with sorted keys, NSNull); anything
    /// else becomes its description as a string.
    init(foundation value: Any) {
        // JSONSerialization's numbers (booleans included) are NSNumbers: let it write them.
        if type(of: value) is NSNumber.Type, let n = value as? NSNumber,
           let data = try? JSONSerialization.data(withJSONObject: n, options: .fragmentsAllowed),
           let v = try? JSONValue(parsing: data) {
            self = v
            return
        }
        switch value {
        case let b as Bool where type(of: value) == Bool.self: self = .bool(b)
        case let i as Int: self = .int(i)
        case let i as any BinaryInteger: self = Int(exactly: i).map { .int($0) } ?? .double(Double(i))
        case let d as Double: self = .double(d)
        case let f as Float: self = .double(Double(f))
        case let s as String: self = .string(s)
        case let a as [Any]: self = .array(a.map(JSONValue.init(foundation:)))
        case let o as [String: Any]: self = .object(o.keys.sorted().map { ($0, JSONValue(foundation: o[$0]!)) })
        case is NSNull: self = .null
        default: self = .string("\(value)")
        }
    }

    /// The value as Foundation objects (for JSONSerialization; sftctl prints through it).
    package var foundationValue: Any {
        switch self {
        case .null: return NSNull()
        case .bool(let b): return b
        case .int(let i): return i
        case .double(let d): return d
        case .string(let s): return s
        case .array(let a): return a.map(\.foundationValue)
        case .object(let o): return Dictionary(o.map { ($0.0, $0.1.foundationValue) }, uniquingKeysWith: { _, b in b })
        }
    }
}
