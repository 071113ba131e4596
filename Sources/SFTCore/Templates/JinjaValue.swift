// Run-time values of the Jinja interpreter, modelled on the Python objects jinja2 templates see
// (str, int, float, bool, None, list, tuple, dict, jinja2's Undefined and Namespace), and the
// provenance-carrying string `TString` that lets rendering report which output bytes came from
// which message.
//
// Strings are UTF-8 byte arrays, not Swift `String`s: Python compares strings by code point
// (no Unicode canonical equivalence), UTF-8 byte order is code point order, and the rendered
// output and its spans are measured in UTF-8 bytes anyway.
import Foundation
import SFTKernels

/// A span of a string's bytes that came from message `source` (an index into `messages`).
struct SpanTrack: Equatable {
    var lo: Int
    var hi: Int
    var source: Int
}

/// A string plus the provenance of its bytes: `tracks` are sorted, non-overlapping byte ranges
/// that came from message content. Bytes outside every track came from the template. A
/// zero-length track marks where an empty (or fully trimmed) message content was used.
struct TString {
    var bytes: [UInt8]
    var tracks: [SpanTrack]

    init(bytes: [UInt8], tracks: [SpanTrack] = []) {
        self.bytes = bytes
        self.tracks = tracks
    }

    init(_ s: String) {
        bytes = Array(s.utf8)
        tracks = []
    }

    /// A string that entirely came from message `source`.
    init(_ s: String, source: Int) {
        bytes = Array(s.utf8)
        tracks = [SpanTrack(lo: 0, hi: bytes.count, source: source)]
    }

    static let empty = TString(bytes: [])

    var string: String { String(decoding: bytes, as: UTF8.self) }
    var count: Int { bytes.count }
    var isEmpty: Bool { bytes.isEmpty }

    /// Appends `other`, shifting its tracks and joining touching tracks of the same message.
    mutating func append(_ other: TString) {
        let shift = bytes.count
        bytes.append(contentsOf: other.bytes)
        for var t in other.tracks {
            t.lo += shift
            t.hi += shift
            if let last = tracks.last, last.source == t.source, last.hi == t.lo {
                tracks[tracks.count - 1].hi = t.hi
            } else {
                tracks.append(t)
            }
        }
    }

    mutating func append(bytes more: [UInt8]) { bytes.append(contentsOf: more) }
    mutating func append(_ s: String) { bytes.append(contentsOf: s.utf8) }

    static func + (a: TString, b: TString) -> TString {
        var r = a
        r.append(b)
        return r
    }

    /// The bytes `lo..<hi` with their provenance. A track that covers an empty result keeps a
    /// zero-length marker, so trimming an all-blank message still records where it went.
    func slice(_ lo: Int, _ hi: Int) -> TString {
        if lo == 0 && hi == bytes.count { return self }
        var r = TString(bytes: Array(bytes[lo..<hi]))
        for t in tracks {
            let a = max(t.lo, lo), b = min(t.hi, hi)
            if a < b || (a == b && (lo == hi || t.lo == t.hi) && t.lo <= hi && t.hi >= lo) {
                r.tracks.append(SpanTrack(lo: a - lo, hi: b - lo, source: t.source))
            }
        }
        return r
    }

    /// The source of the byte at `i`, if it came from a message.
    func source(at i: Int) -> Int? {
        for t in tracks where t.lo <= i && i < t.hi { return t.source }
        return nil
    }

    /// Byte offsets where each Unicode scalar starts, plus the end offset.
    func scalarOffsets() -> [Int] {
        var offs: [Int] = []
        offs.reserveCapacity(bytes.count + 1)
        for (i, b) in bytes.enumerated() where b & 0xC0 != 0x80 { offs.append(i) }
        offs.append(bytes.count)
        return offs
    }

    var scalarCount: Int {
        var n = 0
        for b in bytes where b & 0xC0 != 0x80 { n += 1 }
        return n
    }

    var isASCII: Bool { bytes.allSatisfy { $0 < 0x80 } }

    /// Rebuilds the string scalar by scalar through `transform` (case mapping), giving every
    /// output piece the provenance of the scalar it came from.
    func mapScalars(_ transform: (Int, Unicode.Scalar) -> String) -> TString {
        var r = TString.empty
        var k = 0
        for (i, sc) in string.unicodeScalars.enumerated() {
            let width = UTF8.width(sc)
            let piece = transform(i, sc)
            if let src = source(at: k) {
                r.append(TString(piece, source: src))
            } else {
                r.append(piece)
            }
            k += width
        }
        return r
    }
}

/// Python's `str.isspace()` set (also what `\s` matches in Python regular expressions).
func isPythonWhitespace(_ v: UInt32) -> Bool {
    switch v {
    case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
        return true
    default:
        return false
    }
}

/// jinja2's Undefined: what a missing variable, attribute or item evaluates to. Printing it
/// gives "", iterating it gives nothing; most other uses raise an error with `hint`.
struct UndefinedInfo {
    var hint: String
    /// Set for attributes the sandbox refuses (mutating list/dict methods).
    var unsafe: Bool = false
}

enum SequenceKind {
    case list, tuple, dictKeys, dictValues, dictItems
}

/// How much a value holds, counted with sharing: a list that contains the same 1 MB string
/// twice counts 2 MB, so a value doubled 60 times (cheap in memory) counts 2^60 and is refused
/// before anything walks it. `elements` counts list/dict entries, `bytes` string bytes;
/// both saturate at Int.max.
struct ValueSize {
    var elements = 0
    var bytes = 0

    mutating func add(_ o: ValueSize) {
        elements = ValueSize.saturating(elements, o.elements)
        bytes = ValueSize.saturating(bytes, o.bytes)
    }

    static func saturating(_ a: Int, _ b: Int) -> Int {
        let (r, o) = a.addingReportingOverflow(b)
        return o ? Int.max : r
    }

    /// The size of a container of `values` (each entry counts one element).
    static func of(_ values: [JValue], entries: Int) -> ValueSize {
        var s = ValueSize(elements: entries, bytes: 0)
        for v in values { s.add(v.size) }
        return s
    }
}

/// An immutable Python list or tuple (the sandbox forbids mutating lists). `depth` bounds the
/// nesting so recursive algorithms (repr, equality, tojson) cannot overflow the stack; `size`
/// bounds the work they do.
final class ListBox {
    let items: [JValue]
    let kind: SequenceKind
    let depth: Int
    let size: ValueSize

    init(_ items: [JValue], kind: SequenceKind = .list) {
        self.items = items
        self.kind = kind
        var d = 0
        for v in items { d = max(d, v.depth) }
        self.depth = d + 1
        self.size = ValueSize.of(items, entries: items.count)
    }
}

/// A hashable image of a Python dict key: True == 1 == 1.0 as in Python.
enum JHashKey: Hashable {
    case none
    case int(Int)
    case double(Double)
    case string([UInt8])
    case tuple([JHashKey])
}

/// An immutable Python dict, keeping insertion order.
final class DictBox {
    let keys: [JValue]
    let values: [JValue]
    let depth: Int
    let size: ValueSize
    private var index: [JHashKey: Int]?

    init(keys: [JValue], values: [JValue]) {
        self.keys = keys
        self.values = values
        var d = 0
        for v in values { d = max(d, v.depth) }
        self.depth = d + 1
        var s = ValueSize.of(values, entries: keys.count)
        s.add(ValueSize.of(keys, entries: 0))
        self.size = s
    }

    /// Builds a dict from pairs; a repeated key keeps its first position and its last value.
    static func from(pairs: [(JValue, JValue)]) throws -> DictBox {
        var keys: [JValue] = []
        var values: [JValue] = []
        var seen: [JHashKey: Int] = [:]
        for (k, v) in pairs {
            guard let h = k.hashKey else { throw ValueError.message("unhashable type: '\(k.typeName)'") }
            if let i = seen[h] { values[i] = v } else { seen[h] = keys.count; keys.append(k); values.append(v) }
        }
        return DictBox(keys: keys, values: values)
    }

    var count: Int { keys.count }

    func lookup(_ key: JValue) -> JValue? {
        guard let h = key.hashKey else { return nil }
        if keys.count <= 8 {
            for (i, k) in keys.enumerated() where k.hashKey == h { return values[i] }
            return nil
        }
        if index == nil {
            var ix: [JHashKey: Int] = [:]
            for (i, k) in keys.enumerated() { if let hk = k.hashKey, ix[hk] == nil { ix[hk] = i } }
            index = ix
        }
        return index![h].map { values[$0] }
    }

    func lookup(_ key: String) -> JValue? { lookup(.string(TString(key))) }
}

/// jinja2's `namespace()`: the one mutable object templates have, changed by `{% set ns.x = ... %}`.
/// `depth` is the deepest nesting ever stored in it (it never shrinks), so chains of namespaces
/// stay shallow enough to print and free without deep recursion; a namespace that contains
/// itself is a cycle, which printing cuts by depth.
final class NamespaceBox {
    var names: [String] = []
    var values: [String: JValue] = [:]
    private(set) var depth = 1
    /// One element per attribute plus each value's size when it was stored (a namespace
    /// changed after being stored elsewhere is counted as it was then).
    private(set) var size = ValueSize(elements: 1, bytes: 0)
    private var sizes: [String: ValueSize] = [:]

    func set(_ name: String, _ v: JValue) {
        if values[name] == nil { names.append(name) }
        values[name] = v
        depth = max(depth, ValueSize.saturating(v.depth, 1))
        let new = v.size
        if let old = sizes[name], size.elements != Int.max, size.bytes != Int.max {
            size.elements -= old.elements
            size.bytes -= old.bytes
        } else {
            size.elements = ValueSize.saturating(size.elements, 1)
        }
        sizes[name] = new
        size.add(new)
    }
}

/// A generator (what `map`, `select`, `selectattr`, `items` ... return in jinja2): always truthy,
/// has no length, and is exhausted after one pass.
final class IteratorBox {
    private var items: [JValue]?
    let depth: Int
    let size: ValueSize

    init(_ items: [JValue]) {
        self.items = items
        var d = 0
        for v in items { d = max(d, v.depth) }
        self.depth = d + 1
        self.size = ValueSize.of(items, entries: items.count)
    }

    /// The remaining items; the generator is empty afterwards.
    func consume() -> [JValue] {
        defer { items = [] }
        return items ?? []
    }
}

/// The `loop` variable of a for loop.
final class LoopBox {
    let items: [JValue]
    var index0 = 0
    let depth0: Int
    var lastChanged: [JValue]?
    /// Set for `{% for ... recursive %}`: renders the loop body over a new iterable.
    var recurse: ((JValue) throws -> TString)?

    init(items: [JValue], depth0: Int) {
        self.items = items
        self.depth0 = depth0
    }
}

/// A user-defined macro (or the `caller` of a call block).
final class Macro {
    let name: String
    let params: [String]
    let defaults: [JExpr?]
    let body: [JStmt]
    let closure: JScope
    let catchVarargs: Bool
    let catchKwargs: Bool
    let acceptsCaller: Bool

    init(name: String, params: [String], defaults: [JExpr?], body: [JStmt], closure: JScope,
         catchVarargs: Bool, catchKwargs: Bool, acceptsCaller: Bool) {
        self.name = name
        self.params = params
        self.defaults = defaults
        self.body = body
        self.closure = closure
        self.catchVarargs = catchVarargs
        self.catchKwargs = catchKwargs
        self.acceptsCaller = acceptsCaller
    }
}

enum CallableKind {
    case macro(Macro)
    /// A global function (`range`, `namespace`, `raise_exception`, ...).
    case builtin(String)
    /// A method bound to its receiver (`text.strip`, `message.get`, `loop.cycle`).
    case method(JValue, String)
}

final class CallableBox {
    let kind: CallableKind
    init(_ kind: CallableKind) { self.kind = kind }
}

/// A Jinja run-time value.
enum JValue {
    case undefined(UndefinedInfo)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(TString)
    case list(ListBox)
    case dict(DictBox)
    case namespace(NamespaceBox)
    case iterator(IteratorBox)
    case loop(LoopBox)
    case callable(CallableBox)

    static func str(_ s: String) -> JValue { .string(TString(s)) }
    static func undefined(_ hint: String) -> JValue { .undefined(UndefinedInfo(hint: hint)) }
    static func list(_ items: [JValue]) -> JValue { .list(ListBox(items)) }
    static func tuple(_ items: [JValue]) -> JValue { .list(ListBox(items, kind: .tuple)) }

    var depth: Int {
        switch self {
        case .list(let l): return l.depth
        case .dict(let d): return d.depth
        case .iterator(let i): return i.depth
        case .namespace(let n): return n.depth
        default: return 0
        }
    }

    /// What this value holds, counted with sharing.
    var size: ValueSize {
        switch self {
        case .string(let s): return ValueSize(elements: 0, bytes: s.count)
        case .list(let l): return l.size
        case .dict(let d): return d.size
        case .iterator(let i): return i.size
        case .loop(let l): return ValueSize(elements: l.items.count, bytes: 0)
        case .namespace(let n): return n.size
        default: return ValueSize(elements: 1, bytes: 0)
        }
    }

    /// The work of reading this value: its size with string bytes weighted 1/64 (bytes are
    /// copied and compared in bulk). `deep` false counts only the top level (a list's items,
    /// a string's bytes), for operations that do not look inside the items.
    func cost(deep: Bool) -> Int {
        if !deep {
            switch self {
            case .list(let l): return 1 + l.items.count
            case .dict(let d): return 1 + d.count
            case .string(let s): return 1 + s.count / 64
            default: return 1
            }
        }
        let s = size
        return ValueSize.saturating(ValueSize.saturating(1, s.elements), s.bytes / 64)
    }

    var isUndefined: Bool { if case .undefined = self { return true }; return false }
    var isNone: Bool { if case .none = self { return true }; return false }

    /// Python's type name, for error messages.
    var typeName: String {
        switch self {
        case .undefined: return "Undefined"
        case .none: return "NoneType"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float"
        case .string: return "str"
        case .list(let l):
            switch l.kind {
            case .list: return "list"
            case .tuple: return "tuple"
            case .dictKeys: return "dict_keys"
            case .dictValues: return "dict_values"
            case .dictItems: return "dict_items"
            }
        case .dict: return "dict"
        case .namespace: return "Namespace"
        case .iterator: return "generator"
        case .loop: return "LoopContext"
        case .callable(let c):
            switch c.kind {
            case .macro: return "Macro"
            case .builtin: return "function"
            case .method: return "builtin_function_or_method"
            }
        }
    }

    var hashKey: JHashKey? {
        switch self {
        case .none: return JHashKey.none
        case .bool(let b): return .int(b ? 1 : 0)
        case .int(let i): return .int(i)
        case .double(let d):
            if d == d.rounded(), abs(d) < 9.2e18 { return .int(Int(d)) }
            return .double(d)
        case .string(let s): return .string(s.bytes)
        case .list(let l) where l.kind == .tuple:
            var parts: [JHashKey] = []
            for v in l.items { guard let h = v.hashKey else { return nil }; parts.append(h) }
            return .tuple(parts)
        default: return nil
        }
    }

    /// Python truthiness.
    var truthy: Bool {
        switch self {
        case .undefined, .none: return false
        case .bool(let b): return b
        case .int(let i): return i != 0
        case .double(let d): return d != 0
        case .string(let s): return !s.isEmpty
        case .list(let l): return !l.items.isEmpty
        case .dict(let d): return d.count > 0
        case .namespace, .iterator, .loop, .callable: return true
        }
    }
}

/// Errors raised while evaluating, before the interpreter attaches a template position.
enum ValueError: Error {
    case message(String)
    /// `raise_exception(...)` from the template.
    case raised(String)

    /// The error with a template position attached.
    func located(at offset: Int) -> Error {
        switch self {
        case .message(let m): return TemplateError(offset: offset, message: m)
        case .raised(let m): return RaisedException(offset: offset, message: m)
        }
    }
}

// MARK: - JSON bridging

extension JValue {
    /// A value from JSON; strings are untracked unless `source` is given.
    init(json: JSONValue) {
        switch json {
        case .null: self = .none
        case .bool(let b): self = .bool(b)
        case .int(let i): self = .int(i)
        case .double(let d): self = .double(d)
        case .string(let s): self = .str(s)
        case .array(let a): self = .list(ListBox(a.map { JValue(json: $0) }))
        case .object(let o):
            self = .dict(DictBox(keys: o.map { .str($0.0) }, values: o.map { JValue(json: $0.1) }))
        }
    }

    /// Like `init(json:)`, with every string value (not dict keys) attributed to message
    /// `source` — an assistant's tool calls, so the spans of its turn cover them.
    init(json: JSONValue, source: Int) {
        switch json {
        case .string(let s): self = .string(TString(s, source: source))
        case .array(let a): self = .list(ListBox(a.map { JValue(json: $0, source: source) }))
        case .object(let o):
            self = .dict(DictBox(keys: o.map { .str($0.0) }, values: o.map { JValue(json: $0.1, source: source) }))
        default: self = JValue(json: json)
        }
    }

    /// The one message every string inside this value came from, if there is exactly one
    /// (`tojson` output is attributed to it); nil when none or several.
    func singleSource(depth: Int = 0) -> Int? {
        var found: Int?
        var mixed = false
        func visit(_ v: JValue, _ d: Int) {
            if mixed || d > 64 { mixed = true; return }
            switch v {
            case .string(let t):
                for tr in t.tracks {
                    if found == nil { found = tr.source } else if found != tr.source { mixed = true }
                }
                if t.tracks.isEmpty && !t.isEmpty { mixed = true }
            case .list(let l): for x in l.items { visit(x, d + 1) }
            case .dict(let dict): for x in dict.values { visit(x, d + 1) }
            default: break
            }
        }
        visit(self, depth)
        return mixed ? nil : found
    }

    /// The JSON image of this value for `tojson`, as Python's json.dumps sees it: tuples and
    /// generators become arrays; dict keys that are numbers, booleans or None become strings.
    func toJSON() throws -> JSONValue {
        switch self {
        case .none: return .null
        case .bool(let b): return .bool(b)
        case .int(let i): return .int(i)
        case .double(let d): return .double(d)
        case .string(let s): return .string(s.string)
        case .list(let l): return .array(try l.items.map { try $0.toJSON() })
        case .iterator(let it): return .array(try it.consume().map { try $0.toJSON() })
        case .dict(let d):
            var pairs: [(String, JSONValue)] = []
            for (k, v) in zip(d.keys, d.values) {
                let key: String
                switch k {
                case .string(let s): key = s.string
                case .int(let i): key = String(i)
                case .double(let x): key = JSONValue.pythonFloatRepr(x, json: true)
                case .bool(let b): key = b ? "true" : "false"
                case .none: key = "null"
                default: throw ValueError.message("keys must be str, int, float, bool or None, not \(k.typeName)")
                }
                pairs.append((key, try v.toJSON()))
            }
            return .object(pairs)
        default:
            throw ValueError.message("Object of type \(typeName) is not JSON serializable")
        }
    }
}
