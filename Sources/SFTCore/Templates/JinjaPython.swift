// Python semantics for Jinja values: str() and repr(), ==, ordering, `in`, arithmetic
// (int/float promotion, floor division and modulo with the divisor's sign, ** with negative
// exponents), indexing and slicing by code point, %-formatting, and the string algorithms
// behind str methods (strip, split, replace, ...). Everything that builds strings keeps the
// provenance tracks of the bytes it copies.
import Foundation
import SFTKernels

enum PyNum {
    case int(Int)
    case double(Double)

    var double: Double {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        }
    }
}

extension JValue {
    /// The number this value stands for (bools are ints, as in Python).
    var num: PyNum? {
        switch self {
        case .bool(let b): return .int(b ? 1 : 0)
        case .int(let i): return .int(i)
        case .double(let d): return .double(d)
        default: return nil
        }
    }

    /// An int argument (bools count).
    var intValue: Int? {
        switch self {
        case .bool(let b): return b ? 1 : 0
        case .int(let i): return i
        default: return nil
        }
    }

    var tstring: TString? { if case .string(let s) = self { return s }; return nil }
}

func undefinedError(_ info: UndefinedInfo) -> ValueError { .message(info.hint) }

enum Py {
    /// Most items a list built by the template (concatenation, repetition, split, iterating
    /// a string) may have; keeps memory bounded.
    static let maxListItems = 1_000_000

    // MARK: str / repr

    /// Python's `str(value)` as jinja2 prints it (Undefined prints as "").
    static func str(_ v: JValue) -> TString {
        switch v {
        case .string(let s): return s
        case .undefined: return .empty
        default: return TString(repr(v))
        }
    }

    /// Largest repr built; past it the text is cut short (the output limit then stops the
    /// render), so printing a huge nested value cannot exhaust memory.
    static let reprBudget = 80 << 20

    static func repr(_ v: JValue) -> String {
        var budget = reprBudget
        return repr(v, budget: &budget)
    }

    /// `depth` counts the containers printed around `v`: past `JinjaInterpreter.maxValueDepth`
    /// (only reachable through a namespace that contains itself) the rest of the value prints
    /// as "...".
    static func repr(_ v: JValue, budget: inout Int, depth: Int = 0) -> String {
        if budget <= 0 { return "..." }
        if depth > JinjaInterpreter.maxValueDepth { budget = 0; return "..." }
        let s: String
        switch v {
        case .undefined: s = "Undefined"
        case .none: s = "None"
        case .bool(let b): s = b ? "True" : "False"
        case .int(let i): s = String(i)
        case .double(let d): s = JSONValue.pythonFloatRepr(d)
        case .string(let t): s = reprString(t.string)
        case .list(let l):
            var inner = ""
            for (k, item) in l.items.enumerated() {
                if k > 0 { inner += ", " }
                inner += repr(item, budget: &budget, depth: depth + 1)
                if budget <= 0 { inner += "..."; break }
            }
            switch l.kind {
            case .list: s = "[" + inner + "]"
            case .tuple: s = "(" + inner + (l.items.count == 1 ? ",)" : ")")
            case .dictKeys: s = "dict_keys([" + inner + "])"
            case .dictValues: s = "dict_values([" + inner + "])"
            case .dictItems: s = "dict_items([" + inner + "])"
            }
            return s
        case .dict(let d):
            var inner = ""
            for (k, (key, value)) in zip(d.keys, d.values).enumerated() {
                if k > 0 { inner += ", " }
                inner += repr(key, budget: &budget, depth: depth + 1) + ": " + repr(value, budget: &budget, depth: depth + 1)
                if budget <= 0 { inner += "..."; break }
            }
            return "{" + inner + "}"
        case .namespace(let ns):
            var inner = ""
            for (k, name) in ns.names.enumerated() {
                if k > 0 { inner += ", " }
                inner += reprString(name) + ": " + repr(ns.values[name]!, budget: &budget, depth: depth + 1)
                if budget <= 0 { inner += "..."; break }
            }
            return "<Namespace {" + inner + "}>"
        case .iterator: s = "<generator object>"
        case .loop(let l): s = "<LoopContext \(l.index0 + 1)/\(l.items.count)>"
        case .callable(let c):
            switch c.kind {
            case .macro(let m): s = "<Macro '\(m.name)'>"
            case .builtin(let n): s = "<function \(n)>"
            case .method(let r, let n): s = "<built-in method \(n) of \(r.typeName) object>"
            }
        }
        budget -= s.utf8.count
        return s
    }

    /// Python's repr of a str: single quotes unless the text has ' and no ", escapes for
    /// backslash, the quote, \t \n \r, and non-printable characters.
    static func reprString(_ s: String) -> String {
        let quote: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
        var out = String(quote)
        for sc in s.unicodeScalars {
            let v = sc.value
            switch v {
            case 0x5C: out += "\\\\"
            case 0x09: out += "\\t"
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            default:
                if Character(sc) == quote { out += "\\" + String(quote); continue }
                if v < 0x20 || v == 0x7F { out += "\\x" + hex(v, 2); continue }
                if v < 0x7F || isPrintable(sc) { out.unicodeScalars.append(sc); continue }
                if v < 0x100 { out += "\\x" + hex(v, 2) } else if v < 0x10000 { out += "\\u" + hex(v, 4) } else { out += "\\U" + hex(v, 8) }
            }
        }
        out.append(quote)
        return out
    }

    static func hex(_ v: UInt32, _ width: Int) -> String {
        let h = String(v, radix: 16)
        return String(repeating: "0", count: max(0, width - h.count)) + h
    }

    /// Python's str.isprintable for one character.
    static func isPrintable(_ sc: Unicode.Scalar) -> Bool {
        if sc.value == 0x20 { return true }
        switch sc.properties.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator, .spaceSeparator:
            return false
        default:
            return true
        }
    }

    // MARK: equality and ordering

    static func eq(_ a: JValue, _ b: JValue) -> Bool {
        switch (a, b) {
        case (.undefined, .undefined), (.none, .none): return true
        case (.string(let x), .string(let y)): return x.bytes == y.bytes
        case (.list(let x), .list(let y)):
            if x === y { return true }
            let sameKind = x.kind == y.kind || (x.kind == .list && y.kind == .list)
            guard sameKind, x.items.count == y.items.count else { return false }
            for (p, q) in zip(x.items, y.items) where !eq(p, q) { return false }
            return true
        case (.dict(let x), .dict(let y)):
            if x === y { return true }
            guard x.count == y.count else { return false }
            for (k, v) in zip(x.keys, x.values) {
                guard let w = y.lookup(k), eq(v, w) else { return false }
            }
            return true
        case (.namespace(let x), .namespace(let y)): return x === y
        case (.iterator(let x), .iterator(let y)): return x === y
        case (.loop(let x), .loop(let y)): return x === y
        case (.callable(let x), .callable(let y)): return x === y
        default:
            if let x = a.num, let y = b.num {
                switch (x, y) {
                case (.int(let p), .int(let q)): return p == q
                default: return x.double == y.double
                }
            }
            return false
        }
    }

    /// Three-way comparison for `<`-style operators; nil when NaN makes the values unordered.
    static func compare(_ a: JValue, _ b: JValue, op: String) throws -> Int? {
        if case .undefined(let u) = a { throw undefinedError(u) }
        if case .undefined(let u) = b { throw undefinedError(u) }
        if let x = a.num, let y = b.num {
            switch (x, y) {
            case (.int(let p), .int(let q)): return p < q ? -1 : p > q ? 1 : 0
            default:
                let p = x.double, q = y.double
                if p.isNaN || q.isNaN { return nil }
                return p < q ? -1 : p > q ? 1 : 0
            }
        }
        switch (a, b) {
        case (.string(let x), .string(let y)):
            return x.bytes.lexicographicallyPrecedes(y.bytes) ? -1 : x.bytes == y.bytes ? 0 : 1
        case (.list(let x), .list(let y)) where x.kind == y.kind && (x.kind == .list || x.kind == .tuple):
            for (p, q) in zip(x.items, y.items) where !eq(p, q) {
                return try compare(p, q, op: op)
            }
            return x.items.count < y.items.count ? -1 : x.items.count > y.items.count ? 1 : 0
        default:
            throw ValueError.message("'\(op)' not supported between instances of '\(a.typeName)' and '\(b.typeName)'")
        }
    }

    static func compareOp(_ op: String, _ a: JValue, _ b: JValue) throws -> Bool {
        switch op {
        case "==": return eq(a, b)
        case "!=": return !eq(a, b)
        case "in": return try contains(b, a)
        case "notin": return try !contains(b, a)
        default:
            guard let c = try compare(a, b, op: op) else { return false }
            switch op {
            case "<": return c < 0
            case "<=": return c <= 0
            case ">": return c > 0
            default: return c >= 0
            }
        }
    }

    /// `item in container`.
    static func contains(_ container: JValue, _ item: JValue) throws -> Bool {
        switch container {
        case .string(let s):
            guard case .string(let sub) = item else {
                throw ValueError.message("'in <string>' requires string as left operand, not \(item.typeName)")
            }
            return find(s.bytes, sub.bytes, from: 0) != nil
        case .list(let l): return l.items.contains { eq($0, item) }
        case .dict(let d):
            guard item.hashKey != nil else { throw ValueError.message("unhashable type: '\(item.typeName)'") }
            return d.lookup(item) != nil
        case .undefined: return false
        case .iterator(let it): return it.consume().contains { eq($0, item) }
        default:
            throw ValueError.message("argument of type '\(container.typeName)' is not iterable")
        }
    }

    // MARK: iteration

    /// What `for x in value` iterates over.
    static func iterate(_ v: JValue) throws -> [JValue] {
        switch v {
        case .list(let l): return l.items
        case .dict(let d): return d.keys
        case .string(let s): return try chars(s)
        case .undefined: return []
        case .iterator(let it): return it.consume()
        case .loop(let l): return l.items
        case .namespace, .none, .bool, .int, .double, .callable:
            throw ValueError.message("'\(v.typeName)' object is not iterable")
        }
    }

    /// A string's characters (code points), each keeping its provenance.
    static func chars(_ s: TString) throws -> [JValue] {
        guard s.count <= maxListItems * 4 else { throw ValueError.message("string too long to iterate") }
        let offs = s.scalarOffsets()
        guard offs.count - 1 <= maxListItems else { throw ValueError.message("string too long to iterate") }
        var out: [JValue] = []
        out.reserveCapacity(offs.count - 1)
        for k in 0..<(offs.count - 1) { out.append(.string(s.slice(offs[k], offs[k + 1]))) }
        return out
    }

    static func length(_ v: JValue) throws -> Int {
        switch v {
        case .string(let s): return s.scalarCount
        case .list(let l): return l.items.count
        case .dict(let d): return d.count
        case .undefined: return 0
        case .loop(let l): return l.items.count
        case .namespace: throw ValueError.message("object of type 'Namespace' has no len()")
        default: throw ValueError.message("object of type '\(v.typeName)' has no len()")
        }
    }

    // MARK: arithmetic

    static func arith(_ op: String, _ a: JValue, _ b: JValue, maxBytes: Int) throws -> JValue {
        if case .undefined(let u) = a { throw undefinedError(u) }
        if case .undefined(let u) = b { throw undefinedError(u) }
        if let x = a.num, let y = b.num { return try numeric(op, x, y) }
        switch (op, a, b) {
        case ("+", .string(let x), .string(let y)):
            guard x.count + y.count <= maxBytes else { throw ValueError.message("string too long") }
            return .string(x + y)
        case ("+", .list(let x), .list(let y)) where x.kind == y.kind && (x.kind == .list || x.kind == .tuple):
            guard x.items.count + y.items.count <= maxListItems else { throw ValueError.message("list too long") }
            return .list(ListBox(x.items + y.items, kind: x.kind))
        case ("*", .string(let s), _), ("*", _, .string(let s)):
            guard let n = (a.tstring == nil ? a : b).intValue else { break }
            if n <= 0 || s.isEmpty { return .str("") }
            guard s.count.multipliedReportingOverflow(by: n).partialValue <= maxBytes, s.count <= maxBytes / n else {
                throw ValueError.message("string repetition result too long")
            }
            var r = TString.empty
            for _ in 0..<n { r.append(s) }
            return .string(r)
        case ("*", .list(let l), _), ("*", _, .list(let l)):
            guard let n = (a.num == nil ? b : a).intValue, l.kind == .list || l.kind == .tuple else { break }
            if n <= 0 || l.items.isEmpty { return .list(ListBox([], kind: l.kind)) }
            guard l.items.count <= maxListItems / n else { throw ValueError.message("list repetition result too long") }
            var r: [JValue] = []
            for _ in 0..<n { r += l.items }
            return .list(ListBox(r, kind: l.kind))
        case ("%", .string(let f), _):
            return .string(try percentFormat(f, b))
        default: break
        }
        if op == "+", case .string = a {
            throw ValueError.message("can only concatenate str (not \"\(b.typeName)\") to str")
        }
        throw ValueError.message("unsupported operand type(s) for \(op): '\(a.typeName)' and '\(b.typeName)'")
    }

    static func numeric(_ op: String, _ x: PyNum, _ y: PyNum) throws -> JValue {
        if case .int(let p) = x, case .int(let q) = y {
            func checked(_ r: (partialValue: Int, overflow: Bool)) throws -> JValue {
                if r.overflow { throw ValueError.message("integer overflow") }
                return .int(r.partialValue)
            }
            switch op {
            case "+": return try checked(p.addingReportingOverflow(q))
            case "-": return try checked(p.subtractingReportingOverflow(q))
            case "*": return try checked(p.multipliedReportingOverflow(by: q))
            case "/":
                if q == 0 { throw ValueError.message("division by zero") }
                return .double(Double(p) / Double(q))
            case "//":
                if q == 0 { throw ValueError.message("integer division or modulo by zero") }
                if p == Int.min && q == -1 { throw ValueError.message("integer overflow") }
                var d = p / q
                if (p % q != 0) && ((p < 0) != (q < 0)) { d -= 1 }
                return .int(d)
            case "%":
                if q == 0 { throw ValueError.message("integer division or modulo by zero") }
                if q == -1 { return .int(0) }
                var r = p % q
                if r != 0 && ((r < 0) != (q < 0)) { r += q }
                return .int(r)
            case "**":
                if q < 0 {
                    if p == 0 { throw ValueError.message("0.0 cannot be raised to a negative power") }
                    return .double(Foundation.pow(Double(p), Double(q)))
                }
                var result = 1, base = p, e = q
                while e > 0 {
                    if e & 1 == 1 {
                        let r = result.multipliedReportingOverflow(by: base)
                        if r.overflow { throw ValueError.message("integer overflow") }
                        result = r.partialValue
                    }
                    e >>= 1
                    if e > 0 {
                        let r = base.multipliedReportingOverflow(by: base)
                        if r.overflow { throw ValueError.message("integer overflow") }
                        base = r.partialValue
                    }
                }
                return .int(result)
            default: break
            }
        }
        let p = x.double, q = y.double
        switch op {
        case "+": return .double(p + q)
        case "-": return .double(p - q)
        case "*": return .double(p * q)
        case "/":
            if q == 0 { throw ValueError.message("float division by zero") }
            return .double(p / q)
        case "//", "%":
            if q == 0 { throw ValueError.message("float modulo") }
            // CPython's float_divmod.
            var mod = fmod(p, q)
            var div = (p - mod) / q
            if mod != 0 {
                if (q < 0) != (mod < 0) { mod += q; div -= 1 }
            } else {
                mod = q < 0 ? -0.0 : 0.0
            }
            var floordiv: Double
            if div != 0 {
                floordiv = div.rounded(.down)
                if div - floordiv > 0.5 { floordiv += 1 }
            } else {
                floordiv = (p / q) < 0 ? -0.0 : 0.0
            }
            return .double(op == "//" ? floordiv : mod)
        case "**":
            if p == 0 && q < 0 { throw ValueError.message("0.0 cannot be raised to a negative power") }
            if p < 0 && q != q.rounded() { throw ValueError.message("negative number cannot be raised to a fractional power") }
            return .double(Foundation.pow(p, q))
        default:
            throw ValueError.message("unknown operator \(op)")
        }
    }

    // MARK: indexing and slicing

    /// Python's slice.indices(length) expanded to the selected indices.
    static func sliceIndices(length: Int, start: JValue, stop: JValue, step: JValue) throws -> [Int] {
        func arg(_ v: JValue) throws -> Int? {
            if case .none = v { return nil }
            if case .undefined = v { return nil }
            guard let i = v.intValue else { throw ValueError.message("slice indices must be integers or None") }
            return i
        }
        let st = try arg(step) ?? 1
        if st == 0 { throw ValueError.message("slice step cannot be zero") }
        let lower = st > 0 ? 0 : -1
        let upper = st > 0 ? length : length - 1
        func clamp(_ v: Int?, _ dflt: Int) -> Int {
            guard var x = v else { return dflt }
            if x < 0 { x += length; if x < lower { x = lower } } else if x > upper { x = upper }
            return x
        }
        let a = clamp(try arg(start), st > 0 ? lower : upper)
        let b = clamp(try arg(stop), st > 0 ? upper : lower)
        var out: [Int] = []
        var i = a
        while st > 0 ? i < b : i > b {
            out.append(i)
            let (next, overflow) = i.addingReportingOverflow(st)
            if overflow { break }   // past either end of any sequence
            i = next
        }
        return out
    }

    static func sliceString(_ s: TString, _ start: JValue, _ stop: JValue, _ step: JValue) throws -> TString {
        let offs = s.scalarOffsets()
        let idx = try sliceIndices(length: offs.count - 1, start: start, stop: stop, step: step)
        if idx.isEmpty { return .empty }
        if step.isNone || step.isUndefined || step.intValue == 1 {
            return s.slice(offs[idx.first!], offs[idx.last! + 1])
        }
        var r = TString.empty
        for i in idx { r.append(s.slice(offs[i], offs[i + 1])) }
        return r
    }

    // MARK: string algorithms (byte level; UTF-8 makes substring search on bytes exact)

    /// First occurrence of `needle` in `hay[from..<to]`. Short needles are searched directly;
    /// longer ones with Knuth–Morris–Pratt, linear in the worst case, so a crafted pattern
    /// cannot make a search quadratic.
    static func find(_ hay: [UInt8], _ needle: [UInt8], from: Int, to: Int? = nil) -> Int? {
        let end = to ?? hay.count
        let m = needle.count
        if m == 0 { return from <= end ? from : nil }
        if from >= end || m > end - from { return nil }
        if m <= 4 {
            var i = from
            let last = end - m
            while i <= last {
                if hay[i] == needle[0] {
                    var k = 1
                    while k < m && hay[i + k] == needle[k] { k += 1 }
                    if k == m { return i }
                }
                i += 1
            }
            return nil
        }
        var fail = [Int](repeating: 0, count: m)
        var k = 0
        for i in 1..<m {
            while k > 0 && needle[i] != needle[k] { k = fail[k - 1] }
            if needle[i] == needle[k] { k += 1 }
            fail[i] = k
        }
        k = 0
        for i in from..<end {
            while k > 0 && hay[i] != needle[k] { k = fail[k - 1] }
            if hay[i] == needle[k] { k += 1 }
            if k == m { return i - m + 1 }
        }
        return nil
    }

    /// Last occurrence of `needle` in `hay[from..<to]` (a forward search over the reversed bytes).
    static func rfind(_ hay: [UInt8], _ needle: [UInt8], from: Int = 0, to: Int? = nil) -> Int? {
        let end = to ?? hay.count
        if needle.count > end - from { return nil }
        if needle.isEmpty { return end }
        let rh = Array(hay[from..<end].reversed())
        guard let i = find(rh, Array(needle.reversed()), from: 0) else { return nil }
        return end - i - needle.count
    }

    /// Scalar at byte offset `i` and its width.
    static func scalar(_ b: [UInt8], _ i: Int) -> (UInt32, Int) {
        let b0 = b[i]
        if b0 < 0x80 { return (UInt32(b0), 1) }
        let n = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : 2
        guard i + n <= b.count else { return (UInt32(b0), 1) }
        var v = UInt32(b0) & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07)
        for k in 1..<n { v = v << 6 | UInt32(b[i + k] & 0x3F) }
        return (v, n)
    }

    static func scalarBefore(_ b: [UInt8], _ end: Int) -> (UInt32, Int) {
        var s = end - 1
        while s > 0 && b[s] & 0xC0 == 0x80 { s -= 1 }
        let (v, _) = scalar(b, s)
        return (v, end - s)
    }

    /// str.strip / lstrip / rstrip; `chars` nil means whitespace.
    static func strip(_ s: TString, chars: TString?, left: Bool, right: Bool) -> TString {
        let set: Set<UInt32>? = chars.map { Set($0.string.unicodeScalars.map(\.value)) }
        func strippable(_ v: UInt32) -> Bool { set?.contains(v) ?? isPythonWhitespace(v) }
        let b = s.bytes
        var lo = 0, hi = b.count
        if left {
            while lo < hi {
                let (v, w) = scalar(b, lo)
                if !strippable(v) { break }
                lo += w
            }
        }
        if right {
            while hi > lo {
                let (v, w) = scalarBefore(b, hi)
                if !strippable(v) { break }
                hi -= w
            }
        }
        return s.slice(lo, hi)
    }

    /// str.split / rsplit.
    static func split(_ s: TString, sep: TString?, maxsplit: Int, fromRight: Bool) throws -> [TString] {
        let b = s.bytes
        var parts: [TString] = []
        if let sep {
            if sep.isEmpty { throw ValueError.message("empty separator") }
            if !fromRight {
                var start = 0
                while maxsplit < 0 || parts.count < maxsplit, let i = find(b, sep.bytes, from: start) {
                    if parts.count >= maxListItems { throw ValueError.message("split result too long") }
                    parts.append(s.slice(start, i))
                    start = i + sep.count
                }
                parts.append(s.slice(start, b.count))
            } else {
                // Right-to-left matching is a forward search over the reversed bytes.
                let rh = Array(b.reversed()), rn = Array(sep.bytes.reversed())
                var end = b.count
                var pos = 0
                while maxsplit < 0 || parts.count < maxsplit, let i = find(rh, rn, from: pos) {
                    if parts.count >= maxListItems { throw ValueError.message("split result too long") }
                    let matchStart = b.count - i - sep.count
                    parts.append(s.slice(matchStart + sep.count, end))
                    end = matchStart
                    pos = i + sep.count
                }
                parts.append(s.slice(0, end))
                parts.reverse()
            }
            return parts
        }
        // Whitespace splitting: runs of whitespace separate, no empty strings.
        var words: [(Int, Int)] = []
        var i = 0
        while i < b.count {
            var (v, w) = scalar(b, i)
            if isPythonWhitespace(v) { i += w; continue }
            let start = i
            while i < b.count {
                (v, w) = scalar(b, i)
                if isPythonWhitespace(v) { break }
                i += w
            }
            words.append((start, i))
            if words.count > maxListItems { throw ValueError.message("split result too long") }
        }
        if maxsplit < 0 || words.count <= maxsplit + 1 { return words.map { s.slice($0.0, $0.1) } }
        if !fromRight {
            var out = words[0..<maxsplit].map { s.slice($0.0, $0.1) }
            out.append(strip(s.slice(words[maxsplit].0, b.count), chars: nil, left: false, right: true))
            return out
        }
        let keep = words.count - maxsplit
        var out = [strip(s.slice(0, words[keep - 1].1), chars: nil, left: true, right: false)]
        out += words[keep...].map { s.slice($0.0, $0.1) }
        return out
    }

    static func splitlines(_ s: TString, keepends: Bool) throws -> [TString] {
        let b = s.bytes
        var out: [TString] = []
        var start = 0, i = 0
        while i < b.count {
            let (v, w) = scalar(b, i)
            var brk = 0
            switch v {
            case 0x0D: brk = (i + 1 < b.count && b[i + 1] == 0x0A) ? 2 : 1
            case 0x0A, 0x0B, 0x0C, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029: brk = w
            default: break
            }
            if brk > 0 {
                if out.count >= maxListItems { throw ValueError.message("splitlines result too long") }
                out.append(s.slice(start, keepends ? i + brk : i))
                i += brk
                start = i
            } else {
                i += w
            }
        }
        if start < b.count { out.append(s.slice(start, b.count)) }
        return out
    }

    /// str.replace. A replacement made inside one message's text is attributed to that
    /// message, so edits like `.replace('\n\n', '\n')` keep the message's span contiguous.
    static func replace(_ s: TString, _ old: TString, _ new: TString, count: Int, maxBytes: Int) throws -> TString {
        let b = s.bytes
        var r = TString.empty
        var n = 0
        func newPiece(_ lo: Int, _ hi: Int) -> TString {
            var piece = TString(bytes: new.bytes, tracks: new.tracks)
            if new.tracks.isEmpty, let t = s.tracks.first(where: { $0.lo <= lo && hi <= $0.hi && ($0.lo < $0.hi) }) {
                piece.tracks = [SpanTrack(lo: 0, hi: new.count, source: t.source)]
            }
            return piece
        }
        if old.isEmpty {
            // Python inserts `new` before every character and at the end.
            let offs = s.scalarOffsets()
            let inserts = count < 0 ? offs.count : min(count, offs.count)
            guard b.count + inserts * new.count <= maxBytes else { throw ValueError.message("string too long") }
            for k in 0..<(offs.count - 1) {
                if count < 0 || n < count { r.append(new); n += 1 }
                r.append(s.slice(offs[k], offs[k + 1]))
            }
            if count < 0 || n < count { r.append(new) }
            return r
        }
        var start = 0
        while count < 0 || n < count, let i = find(b, old.bytes, from: start) {
            r.append(s.slice(start, i))
            r.append(newPiece(i, i + old.count))
            if r.count > maxBytes { throw ValueError.message("string too long") }
            start = i + old.count
            n += 1
        }
        if n == 0 { return s }
        r.append(s.slice(start, b.count))
        return r
    }

    // MARK: case mapping

    static func upper(_ s: TString) -> TString {
        if s.isASCII {
            return TString(bytes: s.bytes.map { $0 >= 0x61 && $0 <= 0x7A ? $0 - 32 : $0 }, tracks: s.tracks)
        }
        return s.mapScalars { _, sc in sc.properties.uppercaseMapping }
    }

    static func lower(_ s: TString) -> TString {
        if s.isASCII {
            return TString(bytes: s.bytes.map { $0 >= 0x41 && $0 <= 0x5A ? $0 + 32 : $0 }, tracks: s.tracks)
        }
        return s.mapScalars { _, sc in sc.properties.lowercaseMapping }
    }

    /// str.capitalize: first character title-cased, the rest lower-cased.
    static func capitalize(_ s: TString) -> TString {
        s.mapScalars { i, sc in i == 0 ? sc.properties.titlecaseMapping : sc.properties.lowercaseMapping }
    }

    static func isCased(_ sc: Unicode.Scalar) -> Bool { sc.properties.isCased }

    /// str.title: a letter after a cased letter is lower-cased, otherwise title-cased.
    static func title(_ s: TString) -> TString {
        var prevCased = false
        return s.mapScalars { _, sc in
            let out = prevCased ? sc.properties.lowercaseMapping : sc.properties.titlecaseMapping
            prevCased = sc.properties.isCased
            return out
        }
    }

    static func swapcase(_ s: TString) -> TString {
        s.mapScalars { _, sc in
            sc.properties.isUppercase ? sc.properties.lowercaseMapping
                : sc.properties.isLowercase ? sc.properties.uppercaseMapping : String(sc)
        }
    }

    // MARK: %-formatting

    /// `format % args` (printf-style), supporting the flags, width, precision and the
    /// conversions s r a d i u f F e E g G x X o c %.
    static func percentFormat(_ format: TString, _ args: JValue) throws -> TString {
        var positional: [JValue]
        var mapping: DictBox?
        switch args {
        case .list(let l) where l.kind == .tuple: positional = l.items
        case .dict(let d): positional = [args]; mapping = d
        default: positional = [args]
        }
        var next = 0
        var out = TString.empty
        let b = format.bytes
        var i = 0
        var literalStart = 0
        func takeArg() throws -> JValue {
            guard next < positional.count else { throw ValueError.message("not enough arguments for format string") }
            next += 1
            return positional[next - 1]
        }
        var usedMapping = false
        while i < b.count {
            if b[i] != UInt8(ascii: "%") { i += 1; continue }
            out.append(format.slice(literalStart, i))
            i += 1
            guard i < b.count else { throw ValueError.message("incomplete format") }
            var key: String?
            if b[i] == UInt8(ascii: "(") {
                guard let close = b[i...].firstIndex(of: UInt8(ascii: ")")) else { throw ValueError.message("incomplete format key") }
                key = String(decoding: b[(i + 1)..<close], as: UTF8.self)
                i = close + 1
            }
            var flags = Set<UInt8>()
            while i < b.count, "-+ #0".utf8.contains(b[i]) { flags.insert(b[i]); i += 1 }
            func number() throws -> Int? {
                if i < b.count, b[i] == UInt8(ascii: "*") {
                    i += 1
                    guard let n = try takeArg().intValue else { throw ValueError.message("* wants int") }
                    guard abs(n) <= 100_000 else { throw ValueError.message("width too big") }
                    return max(0, n)
                }
                var n: Int?
                while i < b.count, b[i] >= 0x30, b[i] <= 0x39 { n = (n ?? 0) * 10 + Int(b[i] - 0x30); i += 1; if n! > 100_000 { throw ValueError.message("width too big") } }
                return n
            }
            let width = try number()
            var precision: Int?
            if i < b.count, b[i] == UInt8(ascii: ".") { i += 1; precision = try number() ?? 0 }
            while i < b.count, "hlL".utf8.contains(b[i]) { i += 1 }
            guard i < b.count else { throw ValueError.message("incomplete format") }
            let conv = b[i]
            i += 1
            literalStart = i
            if conv == UInt8(ascii: "%") { out.append("%"); continue }
            let arg: JValue
            if let key {
                guard let m = mapping else { throw ValueError.message("format requires a mapping") }
                guard let v = m.lookup(key) else { throw ValueError.message("KeyError: \(reprString(key))") }
                arg = v
                usedMapping = true
            } else {
                arg = try takeArg()
            }
            let piece = try formatOne(arg, conv: conv, flags: flags, precision: precision)
            out.append(pad(piece, width: width, left: flags.contains(UInt8(ascii: "-")),
                           zero: flags.contains(UInt8(ascii: "0")) && conv != UInt8(ascii: "s") && conv != UInt8(ascii: "r")))
        }
        out.append(format.slice(literalStart, b.count))
        if !usedMapping && mapping == nil && next < positional.count {
            throw ValueError.message("not all arguments converted during string formatting")
        }
        return out
    }

    static func pad(_ s: TString, width: Int?, left: Bool, zero: Bool) -> TString {
        guard let width, s.scalarCount < width else { return s }
        let n = width - s.scalarCount
        if left { var r = s; r.append(String(repeating: " ", count: n)); return r }
        if zero {
            var r = TString.empty
            var body = s
            if let f = s.bytes.first, f == UInt8(ascii: "-") || f == UInt8(ascii: "+") {
                r.append(String(UnicodeScalar(f)))
                body = s.slice(1, s.count)
            }
            r.append(String(repeating: "0", count: n))
            r.append(body)
            return r
        }
        var r = TString(String(repeating: " ", count: n))
        r.append(s)
        return r
    }

    static func formatOne(_ v: JValue, conv: UInt8, flags: Set<UInt8>, precision: Int?) throws -> TString {
        let sign = flags.contains(UInt8(ascii: "+")) ? "+" : flags.contains(UInt8(ascii: " ")) ? " " : ""
        switch conv {
        case UInt8(ascii: "s"):
            let s = str(v)
            if let p = precision { let offs = s.scalarOffsets(); return s.slice(0, offs[min(p, offs.count - 1)]) }
            return s
        case UInt8(ascii: "r"), UInt8(ascii: "a"): return TString(repr(v))
        case UInt8(ascii: "d"), UInt8(ascii: "i"), UInt8(ascii: "u"):
            guard let n = v.num else { throw ValueError.message("%d format: a real number is required, not \(v.typeName)") }
            let i: Int
            switch n {
            case .int(let x): i = x
            case .double(let d):
                guard d.isFinite, abs(d) < 9.2e18 else { throw ValueError.message("cannot convert float to integer") }
                i = Int(d)
            }
            return TString((i >= 0 ? sign : "") + String(i))
        case UInt8(ascii: "x"), UInt8(ascii: "X"), UInt8(ascii: "o"):
            guard let i = v.intValue else { throw ValueError.message("%x format: an integer is required, not \(v.typeName)") }
            var s = String(abs(i), radix: conv == UInt8(ascii: "o") ? 8 : 16, uppercase: conv == UInt8(ascii: "X"))
            if flags.contains(UInt8(ascii: "#")) { s = (conv == UInt8(ascii: "o") ? "0o" : conv == UInt8(ascii: "X") ? "0X" : "0x") + s }
            return TString((i < 0 ? "-" : sign) + s)
        case UInt8(ascii: "f"), UInt8(ascii: "F"), UInt8(ascii: "e"), UInt8(ascii: "E"), UInt8(ascii: "g"), UInt8(ascii: "G"):
            guard let n = v.num else { throw ValueError.message("must be real number, not \(v.typeName)") }
            let d = n.double
            var s = cFormat(d, conv: conv, precision: precision ?? 6, alternate: flags.contains(UInt8(ascii: "#")))
            if d >= 0 || d.isNaN { s = sign + s }
            return TString(s)
        case UInt8(ascii: "c"):
            if let i = v.intValue, let sc = Unicode.Scalar(UInt32(clamping: i)) { return TString(String(sc)) }
            if case .string(let s) = v, s.scalarCount == 1 { return s }
            throw ValueError.message("%c requires int or char")
        default:
            throw ValueError.message("unsupported format character '\(Unicode.Scalar(conv))'")
        }
    }

    /// printf-style float formatting through the C library (correctly rounded, like Python's),
    /// with Python's spellings of the non-finite values.
    static func cFormat(_ d: Double, conv: UInt8, precision: Int, alternate: Bool = false) -> String {
        if d.isNaN { return conv < 0x60 ? "NAN" : "nan" }
        if d.isInfinite { return (d < 0 ? "-" : "") + (conv < 0x60 ? "INF" : "inf") }
        let fmt = "%" + (alternate ? "#" : "") + ".\(min(precision, 300))" + String(UnicodeScalar(conv))
        var buf = [CChar](repeating: 0, count: 512)
        let n = withVaList([d]) { vsnprintf(&buf, buf.count, fmt, $0) }
        if n >= buf.count {
            buf = [CChar](repeating: 0, count: Int(n) + 1)
            _ = withVaList([d]) { vsnprintf(&buf, buf.count, fmt, $0) }
        }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
