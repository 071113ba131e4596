// The built-in filters, tests, global functions and Python methods available to templates:
// jinja2's FILTERS and TESTS tables (filters.py, tests.py), the globals transformers adds for
// chat templates (raise_exception, strftime_now, namespace, dict) plus range, and the str /
// dict / list methods templates call (`content.strip()`, `message.get('x')`, ...).
//
// `tojson` is transformers' version, `json.dumps(x, ensure_ascii=False, indent=None,
// separators=None, sort_keys=False)`: ", " and ": " separators on one line, "," and ": " when
// indenting, non-ASCII kept, no HTML escaping (jinja2's own tojson escapes < > & ').
import Foundation
import SFTKernels

enum JinjaBuiltins {
    /// Every filter name jinja2 defines (a few are refused at run time: random, urlize, ...).
    static let filterNames: Set<String> = [
        "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape",
        "filesizeformat", "first", "float", "forceescape", "format", "groupby", "indent", "int", "join", "last",
        "length", "list", "lower", "items", "map", "min", "max", "pprint", "random", "reject", "rejectattr",
        "replace", "reverse", "round", "safe", "select", "selectattr", "slice", "sort", "string", "striptags",
        "sum", "title", "trim", "truncate", "unique", "upper", "urlencode", "urlize", "wordcount", "wordwrap",
        "xmlattr", "tojson",
    ]

    static let testNames: Set<String> = [
        "odd", "even", "divisibleby", "defined", "undefined", "filter", "test", "none", "boolean", "false", "true",
        "integer", "float", "lower", "upper", "string", "mapping", "number", "sequence", "iterable", "callable",
        "sameas", "escaped", "in", "==", "eq", "equalto", "!=", "ne", ">", "gt", "greaterthan", "ge", ">=", "<",
        "lt", "lessthan", "<=", "le",
    ]
}

/// Binds call arguments to parameter names the way Python does; nil = not given.
func bindArgs(_ fname: String, _ names: [String], _ args: [JValue], _ kwargs: [(String, JValue)]) throws -> [JValue?] {
    if args.count > names.count {
        throw ValueError.message("\(fname)() takes at most \(names.count) argument(s) (\(args.count) given)")
    }
    var r = [JValue?](repeating: nil, count: names.count)
    for (i, a) in args.enumerated() { r[i] = a }
    for (k, v) in kwargs {
        guard let i = names.firstIndex(of: k) else { throw ValueError.message("\(fname)() got an unexpected keyword argument '\(k)'") }
        if r[i] != nil { throw ValueError.message("\(fname)() got multiple values for argument '\(k)'") }
        r[i] = v
    }
    return r
}

/// Filters whose work is proportional to the top level of their input (its items, not what the
/// items hold); every other filter may read the whole value (printing, comparing, encoding it).
let shallowFilters: Set<String> = [
    "length", "count", "first", "last", "d", "default", "attr", "safe", "list", "items", "batch", "slice",
    "reverse", "select", "reject", "selectattr", "rejectattr", "map", "abs", "int", "float", "round", "sum",
]

/// Tests that compare their input with their argument (the rest look at the top level only).
let comparingTests: Set<String> = [
    "eq", "equalto", "==", "ne", "!=", "gt", ">", "greaterthan", "ge", ">=", "lt", "<", "lessthan", "le", "<=", "in",
]

/// `a * b`, saturating at Int.max (work estimates).
func saturatingProduct(_ a: Int, _ b: Int) -> Int {
    let (r, o) = a.multipliedReportingOverflow(by: b)
    return o ? Int.max : r
}

func intArg(_ v: JValue?, _ dflt: Int, _ what: String) throws -> Int {
    guard let v, !v.isNone else { return dflt }
    guard let i = v.intValue else { throw ValueError.message("\(what) must be an integer, not \(v.typeName)") }
    return i
}

extension JinjaInterpreter {
    // MARK: filters

    /// Charges the work of reading the arguments of a builtin (all of each argument).
    func chargeArguments(_ args: [JValue], _ kwargs: [(String, JValue)]) throws {
        var units = 0
        for a in args { units = ValueSize.saturating(units, a.cost(deep: true)) }
        for (_, a) in kwargs { units = ValueSize.saturating(units, a.cost(deep: true)) }
        try charge(units)
    }

    func filter(_ name: String, _ v: JValue, _ args: [JValue], _ kwargs: [(String, JValue)]) throws -> JValue {
        func bind(_ names: [String]) throws -> [JValue?] { try bindArgs(name, names, args, kwargs) }
        try charge(v.cost(deep: !shallowFilters.contains(name)))
        try chargeArguments(args, kwargs)
        switch name {
        case "abs":
            _ = try bind([])
            if case .undefined(let u) = v { throw undefinedError(u) }
            switch v.num {
            case .int(let i)?: if i == Int.min { throw ValueError.message("integer overflow") }; return .int(abs(i))
            case .double(let d)?: return .double(abs(d))
            case nil: throw ValueError.message("bad operand type for abs(): '\(v.typeName)'")
            }
        case "attr":
            let a = try bind(["name"])
            guard case .string(let n)? = a[0] else { throw ValueError.message("attr() needs an attribute name") }
            return try getattr(v, n.string)
        case "batch":
            let a = try bind(["linecount", "fill_with"])
            let n = try intArg(a[0], 0, "linecount")
            guard n > 0 else { throw ValueError.message("batch size must be positive") }
            guard n <= Py.maxListItems else { throw ValueError.message("batch size \(n) is too large (at most \(Py.maxListItems))") }
            var batches: [JValue] = []
            var tmp: [JValue] = []
            for item in try Py.iterate(v) {
                if tmp.count == n { batches.append(.list(tmp)); tmp = [] }
                tmp.append(item)
            }
            if !tmp.isEmpty {
                if let fill = a[1], !fill.isNone { while tmp.count < n { tmp.append(fill) } }
                batches.append(.list(tmp))
            }
            return .iterator(IteratorBox(batches))
        case "capitalize":
            _ = try bind([])
            return .string(Py.capitalize(Py.str(v)))
        case "center":
            let a = try bind(["width"])
            return .string(try justify(Py.str(v), width: intArg(a[0], 80, "width"), fill: " ", mode: "center"))
        case "count", "length":
            _ = try bind([])
            return .int(try Py.length(v))
        case "d", "default":
            let a = try bind(["default_value", "boolean"])
            if v.isUndefined || ((a[1]?.truthy ?? false) && !v.truthy) { return a[0] ?? .str("") }
            return v
        case "dictsort":
            let a = try bind(["case_sensitive", "by", "reverse"])
            guard case .dict(let d) = v else { throw ValueError.message("dictsort expects a mapping, not \(v.typeName)") }
            let by = a[1].map { Py.str($0).string } ?? "key"
            guard by == "key" || by == "value" else { throw ValueError.message("You can only sort by either \"key\" or \"value\"") }
            let caseSensitive = a[0]?.truthy ?? false
            let items = zip(d.keys, d.values).map { JValue.tuple([$0, $1]) }
            let sorted = try stableSort(items, reverse: a[2]?.truthy ?? false) { item in
                guard case .list(let t) = item else { return item }
                let k = t.items[by == "key" ? 0 : 1]
                return caseSensitive ? k : ignoreCase(k)
            }
            return .list(sorted)
        case "e", "escape", "forceescape":
            _ = try bind([])
            return .string(htmlEscape(Py.str(v)))
        case "first":
            _ = try bind([])
            if case .list(let l) = v { return l.items.first ?? .undefined("No first item, sequence was empty.") }
            return try Py.iterate(v).first ?? .undefined("No first item, sequence was empty.")
        case "float":
            let a = try bind(["default"])
            return toFloat(v) ?? a[0] ?? .double(0)
        case "format":
            if !args.isEmpty && !kwargs.isEmpty {
                throw ValueError.message("can't handle positional and keyword arguments at the same time")
            }
            let fmtArgs: JValue = kwargs.isEmpty ? .tuple(args) : .dict(DictBox(keys: kwargs.map { .str($0.0) }, values: kwargs.map { $0.1 }))
            return .string(try Py.percentFormat(Py.str(v), fmtArgs))
        case "indent":
            let a = try bind(["width", "first", "blank"])
            return .string(try indent(Py.str(v), width: a[0] ?? .int(4), first: a[1]?.truthy ?? false, blank: a[2]?.truthy ?? false))
        case "int":
            let a = try bind(["default", "base"])
            let base = try intArg(a[1], 10, "base")
            guard base == 0 || (2...36).contains(base) else { throw ValueError.message("int() base must be >= 2 and <= 36, or 0 (got \(base))") }
            return try toInt(v, base: base) ?? a[0] ?? .int(0)
        case "items":
            _ = try bind([])
            if v.isUndefined { return .iterator(IteratorBox([])) }
            guard case .dict(let d) = v else { throw ValueError.message("Can only get item pairs from a mapping.") }
            return .iterator(IteratorBox(zip(d.keys, d.values).map { .tuple([$0, $1]) }))
        case "join":
            let a = try bind(["d", "attribute"])
            var items = try Py.iterate(v)
            if let attr = a[1], !attr.isNone {
                let get = attrGetter(attr, default: nil)
                items = try items.map(get)
            }
            let sep = a[0].map { Py.str($0) } ?? .empty
            var r = TString.empty
            for (i, item) in items.enumerated() {
                if i > 0 { r.append(sep) }
                r.append(Py.str(item))
                if r.count > limits.maxOutputBytes { throw ValueError.message("string too long") }
            }
            return .string(r)
        case "last":
            _ = try bind([])
            switch v {
            case .iterator: throw ValueError.message("'generator' object is not reversible")
            case .undefined, .list, .dict, .string, .loop:
                return try Py.iterate(v).last ?? .undefined("No last item, sequence was empty.")
            default: throw ValueError.message("'\(v.typeName)' object is not reversible")
            }
        case "list":
            _ = try bind([])
            return .list(try Py.iterate(v))
        case "lower":
            _ = try bind([])
            return .string(Py.lower(Py.str(v)))
        case "upper":
            _ = try bind([])
            return .string(Py.upper(Py.str(v)))
        case "map":
            guard v.truthy else { return .iterator(IteratorBox([])) }
            let items = try Py.iterate(v)
            if args.isEmpty, let ai = kwargs.firstIndex(where: { $0.0 == "attribute" }) {
                var rest = kwargs
                let attr = rest.remove(at: ai).1
                var dflt: JValue?
                if let di = rest.firstIndex(where: { $0.0 == "default" }) { dflt = rest.remove(at: di).1 }
                if let extra = rest.first { throw ValueError.message("Unexpected keyword argument '\(extra.0)'") }
                let get = attrGetter(attr, default: dflt)
                return .iterator(IteratorBox(try items.map(get)))
            }
            guard case .string(let fname)? = args.first else { throw ValueError.message("map requires a filter argument") }
            let rest = Array(args.dropFirst())
            return .iterator(IteratorBox(try items.map { try filter(fname.string, $0, rest, kwargs) }))
        case "max", "min":
            let a = try bind(["case_sensitive", "attribute"])
            let items = try Py.iterate(v)
            guard !items.isEmpty else { return .undefined("No aggregated item, sequence was empty.") }
            let caseSensitive = a[0]?.truthy ?? false
            let get = a[1].flatMap { $0.isNone ? nil : attrGetter($0, default: nil) }
            func key(_ x: JValue) throws -> JValue {
                let k = try get?(x) ?? x
                return caseSensitive ? k : ignoreCase(k)
            }
            var best = items[0]
            var bestKey = try key(best)
            for item in items.dropFirst() {
                let k = try key(item)
                let c = try Py.compare(k, bestKey, op: name == "max" ? ">" : "<") ?? 0
                if (name == "max" && c > 0) || (name == "min" && c < 0) { best = item; bestKey = k }
            }
            return best
        case "pprint":
            _ = try bind([])
            return .str(Py.repr(v))
        case "reject", "select", "rejectattr", "selectattr":
            guard v.truthy else { return .iterator(IteratorBox([])) }
            let byAttr = name.hasSuffix("attr")
            let keep = name.hasPrefix("select")
            var rest = args
            var get: ((JValue) throws -> JValue)?
            if byAttr {
                guard !rest.isEmpty else { throw ValueError.message("Missing parameter for attribute name") }
                get = attrGetter(rest.removeFirst(), default: nil)
            }
            var testName: String?
            if !rest.isEmpty { testName = Py.str(rest.removeFirst()).string }
            var kept: [JValue] = []
            for item in try Py.iterate(v) {
                let x = try get?(item) ?? item
                let ok = try testName.map { try test($0, x, rest, kwargs) } ?? x.truthy
                if ok == keep { kept.append(item) }
            }
            return .iterator(IteratorBox(kept))
        case "replace":
            let a = try bind(["old", "new", "count"])
            guard let old = a[0], let new = a[1] else { throw ValueError.message("replace() needs the old and new strings") }
            let count = try intArg(a[2], -1, "count")
            return .string(try Py.replace(Py.str(v), Py.str(old), Py.str(new), count: count, maxBytes: limits.maxOutputBytes))
        case "reverse":
            _ = try bind([])
            if case .string(let s) = v { return .string(try Py.sliceString(s, .none, .none, .int(-1))) }
            switch v {
            case .list, .dict, .undefined, .loop: return .iterator(IteratorBox(try Py.iterate(v).reversed()))
            default: throw ValueError.message("argument to reversed() must be a sequence")
            }
        case "round":
            let a = try bind(["precision", "method"])
            let precision = try intArg(a[0], 0, "precision")
            let method = a[1].map { Py.str($0).string } ?? "common"
            guard ["common", "ceil", "floor"].contains(method) else { throw ValueError.message("method must be common, ceil or floor") }
            if case .undefined(let u) = v { throw undefinedError(u) }
            guard let n = v.num else { throw ValueError.message("type \(v.typeName) doesn't define __round__ method") }
            return try roundValue(n, precision: precision, method: method)
        case "safe":
            _ = try bind([])
            return v
        case "slice":
            let a = try bind(["slices", "fill_with"])
            let slices = try intArg(a[0], 0, "slices")
            guard slices > 0 else { throw ValueError.message("slices must be positive") }
            guard slices <= Py.maxListItems else { throw ValueError.message("\(slices) slices are too many (at most \(Py.maxListItems))") }
            let seq = try Py.iterate(v)
            let per = seq.count / slices, extra = seq.count % slices
            var offset = 0
            var out: [JValue] = []
            for k in 0..<slices {
                let start = offset + k * per
                if k < extra { offset += 1 }
                let end = offset + (k + 1) * per
                var tmp = Array(seq[start..<end])
                if let fill = a[1], !fill.isNone, k >= extra { tmp.append(fill) }
                out.append(.list(tmp))
            }
            return .iterator(IteratorBox(out))
        case "sort":
            let a = try bind(["reverse", "case_sensitive", "attribute"])
            let caseSensitive = a[1]?.truthy ?? false
            let getters: [(JValue) throws -> JValue]? = a[2].flatMap { attr -> [(JValue) throws -> JValue]? in
                if attr.isNone { return nil }
                if case .string(let s) = attr {
                    return s.string.split(separator: ",", omittingEmptySubsequences: false).map { attrGetter(.str(String($0)), default: nil) }
                }
                return [attrGetter(attr, default: nil)]
            }
            let sorted = try stableSort(try Py.iterate(v), reverse: a[0]?.truthy ?? false) { item in
                guard let getters else { return caseSensitive ? item : ignoreCase(item) }
                return .list(try getters.map { let k = try $0(item); return caseSensitive ? k : ignoreCase(k) })
            }
            return .list(sorted)
        case "string":
            _ = try bind([])
            return .string(Py.str(v))
        case "striptags":
            _ = try bind([])
            return .string(stripTags(Py.str(v)))
        case "sum":
            let a = try bind(["attribute", "start"])
            var items = try Py.iterate(v)
            if let attr = a[0], !attr.isNone { items = try items.map(attrGetter(attr, default: nil)) }
            var total = a[1] ?? .int(0)
            if case .string = total { throw ValueError.message("sum() can't sum strings [use ''.join(seq) instead]") }
            for item in items { total = try Py.arith("+", total, item, maxBytes: limits.maxOutputBytes) }
            return total
        case "title":
            _ = try bind([])
            return .string(jinjaTitle(Py.str(v)))
        case "tojson":
            let a = try bind(["ensure_ascii", "indent", "separators", "sort_keys"])
            let json = try toJSON(v, ensureASCII: a[0]?.truthy ?? false, indent: a[1], separators: a[2], sortKeys: a[3]?.truthy ?? false)
            // JSON made of one message's strings (a tool call's arguments) stays that message's text.
            if let source = v.singleSource() { return .string(TString(json, source: source)) }
            return .str(json)
        case "trim":
            let a = try bind(["chars"])
            let chars = a[0].flatMap { $0.isNone ? nil : Py.str($0) }
            return .string(Py.strip(Py.str(v), chars: chars, left: true, right: true))
        case "truncate":
            let a = try bind(["length", "killwords", "end", "leeway"])
            let s = Py.str(v)
            let length = try intArg(a[0], 255, "length")
            let end = a[2].map { Py.str($0) } ?? TString("...")
            let leeway = try intArg(a[3], 5, "leeway")
            let n = s.scalarCount, endLen = end.scalarCount
            guard length >= endLen else { throw ValueError.message("expected length >= \(endLen), got \(length)") }
            guard leeway >= 0 else { throw ValueError.message("expected leeway >= 0, got \(leeway)") }
            if n <= length || n - leeway <= length { return .string(s) }
            let head = try Py.sliceString(s, .none, .int(length - endLen), .none)
            if a[1]?.truthy ?? false { return .string(head + end) }
            let kept = try Py.split(head, sep: TString(" "), maxsplit: 1, fromRight: true)[0]
            return .string(kept + end)
        case "unique":
            let a = try bind(["case_sensitive", "attribute"])
            let caseSensitive = a[0]?.truthy ?? false
            let get = a[1].flatMap { $0.isNone ? nil : attrGetter($0, default: nil) }
            var seen = Set<JHashKey>()
            var unhashable: [JValue] = []
            var out: [JValue] = []
            for item in try Py.iterate(v) {
                var k = try get?(item) ?? item
                if !caseSensitive { k = ignoreCase(k) }
                if let h = k.hashKey {
                    if seen.insert(h).inserted { out.append(item) }
                    continue
                }
                try charge(saturatingProduct(unhashable.count, k.cost(deep: true)))
                if !unhashable.contains(where: { Py.eq($0, k) }) {
                    unhashable.append(k)
                    out.append(item)
                }
            }
            return .iterator(IteratorBox(out))
        case "wordcount":
            _ = try bind([])
            var count = 0, inWord = false
            for sc in Py.str(v).string.unicodeScalars {
                let w = sc.properties.isAlphabetic || sc.properties.numericType != nil || sc == "_"
                if w && !inWord { count += 1 }
                inWord = w
            }
            return .int(count)
        case "filesizeformat", "random", "urlencode", "urlize", "wordwrap", "xmlattr", "groupby":
            throw ValueError.message("filter '\(name)' is not supported in chat templates")
        default:
            throw ValueError.message("no filter named '\(name)'")
        }
    }

    /// jinja2's make_attrgetter: "a.b.0" walks items/attributes; integer parts index lists.
    func attrGetter(_ attribute: JValue, default dflt: JValue?) -> (JValue) throws -> JValue {
        var parts: [JValue] = [attribute]
        if case .string(let s) = attribute {
            parts = s.string.split(separator: ".", omittingEmptySubsequences: false).map { p in
                if !p.isEmpty, p.allSatisfy({ $0.isASCII && $0.isNumber }), let i = Int(p) { return .int(i) }
                return .str(String(p))
            }
        }
        return { [unowned self] item in
            var x = item
            for p in parts {
                x = try self.getitem(x, p)
                if let dflt, !dflt.isNone, x.isUndefined { x = dflt }
            }
            return x
        }
    }

    func ignoreCase(_ v: JValue) -> JValue {
        if case .string(let s) = v { return .string(Py.lower(s)) }
        return v
    }

    /// Python's sorted(items, key=key, reverse=reverse): stable in both directions.
    func stableSort(_ items: [JValue], reverse: Bool, key: (JValue) throws -> JValue) throws -> [JValue] {
        let keys = try items.map(key)
        // About n·log2(n) comparisons, each reading both keys.
        var keyCost = 0
        for k in keys { keyCost = ValueSize.saturating(keyCost, k.cost(deep: true)) }
        try charge(saturatingProduct(keyCost, max(1, Int.bitWidth - items.count.leadingZeroBitCount)))
        var idx = Array(items.indices)
        try idx.sort { i, j in
            let c = try Py.compare(keys[i], keys[j], op: "<") ?? 0
            if c != 0 { return reverse ? c > 0 : c < 0 }
            return i < j
        }
        return idx.map { items[$0] }
    }

    func htmlEscape(_ s: TString) -> TString {
        var out = TString.empty
        var start = 0
        for (i, b) in s.bytes.enumerated() {
            let rep: String
            switch b {
            case UInt8(ascii: "&"): rep = "&amp;"
            case UInt8(ascii: "<"): rep = "&lt;"
            case UInt8(ascii: ">"): rep = "&gt;"
            case UInt8(ascii: "\""): rep = "&#34;"
            case UInt8(ascii: "'"): rep = "&#39;"
            default: continue
            }
            out.append(s.slice(start, i))
            out.append(rep)
            start = i + 1
        }
        out.append(s.slice(start, s.count))
        return out
    }

    func stripTags(_ s: TString) -> TString {
        var text = ""
        var inTag = false
        for ch in s.string {
            if ch == "<" { inTag = true; continue }
            if ch == ">" && inTag { inTag = false; continue }
            if !inTag { text.append(ch) }
        }
        return TString(text.split(whereSeparator: { $0.unicodeScalars.allSatisfy { isPythonWhitespace($0.value) } }).joined(separator: " "))
    }

    /// jinja2's title filter: words start after runs of whitespace, '-', '(', '{', '[' or '<';
    /// the first character of each piece is upper-cased and the rest lower-cased.
    func jinjaTitle(_ s: TString) -> TString {
        func isSep(_ sc: Unicode.Scalar) -> Bool {
            isPythonWhitespace(sc.value) || sc == "-" || sc == "(" || sc == "{" || sc == "[" || sc == "<"
        }
        var prevSep: Bool?
        return s.mapScalars { _, sc in
            let sep = isSep(sc)
            defer { prevSep = sep }
            if prevSep == nil || prevSep! != sep { return sc.properties.uppercaseMapping }
            return sc.properties.lowercaseMapping
        }
    }

    func indent(_ s: TString, width: JValue, first: Bool, blank: Bool) throws -> TString {
        let indention: TString
        if case .string(let w) = width {
            indention = w
        } else {
            let n = try intArg(width, 4, "width")
            guard n <= 10_000 else { throw ValueError.message("indent width too large") }
            indention = TString(String(repeating: " ", count: max(0, n)))
        }
        var text = s
        text.append("\n")
        let lines = try Py.splitlines(text, keepends: false)
        var rv = TString.empty
        if blank {
            for (i, line) in lines.enumerated() {
                if i > 0 { rv.append("\n"); rv.append(indention) }
                rv.append(line)
                if rv.count > limits.maxOutputBytes { throw ValueError.message("string too long") }
            }
        } else {
            rv = lines.first ?? .empty
            for line in lines.dropFirst() {
                rv.append("\n")
                if !line.isEmpty { rv.append(indention) }
                rv.append(line)
                if rv.count > limits.maxOutputBytes { throw ValueError.message("string too long") }
            }
        }
        if first { rv = indention + rv }
        if rv.count > limits.maxOutputBytes { throw ValueError.message("string too long") }
        return rv
    }

    func justify(_ s: TString, width: Int, fill: String, mode: String) throws -> TString {
        let n = s.scalarCount
        guard width > n else { return s }
        guard width <= limits.maxOutputBytes else { throw ValueError.message("width too large") }
        let marg = width - n
        var left = 0
        switch mode {
        case "center": left = marg / 2 + (marg & width & 1)
        case "rjust": left = marg
        default: left = 0
        }
        var r = TString(String(repeating: fill, count: left))
        r.append(s)
        r.append(String(repeating: fill, count: marg - left))
        return r
    }

    func toJSON(_ v: JValue, ensureASCII: Bool, indent: JValue?, separators: JValue?, sortKeys: Bool) throws -> String {
        var style = JSONValue.Style(itemSeparator: ", ", keySeparator: ": ", sortKeys: sortKeys, escapeNonASCII: ensureASCII)
        if let indent, !indent.isNone {
            if case .string(let s) = indent {
                style.indent = s.string
            } else {
                guard let n = indent.intValue else { throw ValueError.message("indent must be an integer or a string") }
                guard n <= 10_000 else { throw ValueError.message("indent too large") }
                style.indent = String(repeating: " ", count: max(0, n))
            }
            style.itemSeparator = ","
        }
        if let separators, !separators.isNone {
            let parts = try Py.iterate(separators)
            guard parts.count == 2, case .string(let item) = parts[0], case .string(let key) = parts[1] else {
                throw ValueError.message("separators must be a pair of strings")
            }
            style.itemSeparator = item.string
            style.keySeparator = key.string
        }
        let json = try v.toJSON()
        let text = json.serialized(style)
        if text.utf8.count > limits.maxOutputBytes { throw ValueError.message("string too long") }
        return text
    }

    func roundValue(_ n: PyNum, precision: Int, method: String) throws -> JValue {
        let p = Double(precision)
        switch method {
        case "ceil": return .double((n.double * Foundation.pow(10, p)).rounded(.up) / Foundation.pow(10, p))
        case "floor": return .double((n.double * Foundation.pow(10, p)).rounded(.down) / Foundation.pow(10, p))
        default: break
        }
        switch n {
        case .int(let i):
            if precision >= 0 { return .int(i) }
            // |i| < 10^19: rounding to 10^19 or coarser gives 0 (and -Int.min would trap).
            if precision <= -19 { return .int(0) }
            let m = Foundation.pow(10, Double(-precision))
            let r = (Double(i) / m).rounded(.toNearestOrEven) * m
            guard let result = Int(exactly: r) ?? (abs(r) < 9.2e18 ? Int(r) : nil) else { throw ValueError.message("integer overflow") }
            return .int(result)
        case .double(let d):
            if !d.isFinite { return .double(d) }
            if precision < -308 { return .double(d < 0 ? -0.0 : 0.0) }
            if precision == 0 { return .double(d.rounded(.toNearestOrEven)) }
            if precision > 0 {
                // Correctly rounded decimal digits, as CPython's round() computes them.
                return .double(Double(Py.cFormat(d, conv: UInt8(ascii: "f"), precision: min(precision, 300))) ?? d)
            }
            let m = Foundation.pow(10, Double(-precision))
            return .double((d / m).rounded(.toNearestOrEven) * m)
        }
    }

    func parsePythonInt(_ text: String, base: Int) -> Int? {
        guard base == 0 || (2...36).contains(base) else { return nil }
        var t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        var negative = false
        if t.hasPrefix("-") { negative = true; t.removeFirst() } else if t.hasPrefix("+") { t.removeFirst() }
        var radix = base
        let lower = t.lowercased()
        for (prefix, r) in [("0x", 16), ("0o", 8), ("0b", 2)] where lower.hasPrefix(prefix) && (base == r || base == 0) {
            t.removeFirst(2)
            radix = r
            if t.hasPrefix("_") { t.removeFirst() }
        }
        if radix == 0 { radix = 10 }
        guard !t.isEmpty, !t.hasPrefix("_"), !t.hasSuffix("_"), !t.contains("__") else { return nil }
        guard let v = Int(t.replacingOccurrences(of: "_", with: ""), radix: radix) else { return nil }
        return negative ? -v : v
    }

    func parsePythonFloat(_ text: String) -> Double? {
        let t = text.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        switch t {
        case "inf", "+inf", "infinity", "+infinity": return .infinity
        case "-inf", "-infinity": return -.infinity
        case "nan", "+nan", "-nan": return .nan
        default: break
        }
        guard !t.isEmpty, t.allSatisfy({ "0123456789.e+-_".contains($0) }), !t.contains("__") else { return nil }
        return Double(t.replacingOccurrences(of: "_", with: ""))
    }

    /// jinja2's int filter: int(value, base) for strings, int(value) otherwise, then
    /// int(float(value)); nil when both fail.
    func toInt(_ v: JValue, base: Int) throws -> JValue? {
        switch v {
        case .bool(let b): return .int(b ? 1 : 0)
        case .int(let i): return .int(i)
        case .double(let d):
            guard d.isFinite else { throw ValueError.message("cannot convert float \(Py.repr(v)) to integer") }
            guard abs(d) < 9.2e18 else { throw ValueError.message("integer overflow") }
            return .int(Int(d))
        case .string(let s):
            if let i = parsePythonInt(s.string, base: base) { return .int(i) }
            if let d = parsePythonFloat(s.string), d.isFinite, abs(d) < 9.2e18 { return .int(Int(d)) }
            return nil
        default:
            return nil
        }
    }

    func toFloat(_ v: JValue) -> JValue? {
        switch v {
        case .bool(let b): return .double(b ? 1 : 0)
        case .int(let i): return .double(Double(i))
        case .double: return v
        case .string(let s): return parsePythonFloat(s.string).map { .double($0) }
        default: return nil
        }
    }

    // MARK: tests

    func test(_ name: String, _ v: JValue, _ args: [JValue], _ kwargs: [(String, JValue)]) throws -> Bool {
        try charge(v.cost(deep: comparingTests.contains(name)))
        try chargeArguments(args, kwargs)
        func other() throws -> JValue {
            guard let a = try bindArgs(name, ["other"], args, kwargs)[0] else {
                throw ValueError.message("test '\(name)' needs an argument")
            }
            return a
        }
        switch name {
        case "defined": return !v.isUndefined
        case "undefined": return v.isUndefined
        case "none": return v.isNone
        case "boolean": if case .bool = v { return true }; return false
        case "false": if case .bool(false) = v { return true }; return false
        case "true": if case .bool(true) = v { return true }; return false
        case "integer": if case .int = v { return true }; return false
        case "float": if case .double = v { return true }; return false
        case "number": return v.num != nil
        case "string": if case .string = v { return true }; return false
        case "mapping": if case .dict = v { return true }; return false
        case "iterable":
            switch v {
            case .list, .dict, .string, .iterator, .undefined, .loop: return true
            default: return false
            }
        case "sequence":
            switch v {
            case .list(let l): return l.kind == .list || l.kind == .tuple
            case .dict, .string, .undefined, .loop: return true
            default: return false
            }
        case "callable":
            switch v {
            case .callable, .undefined, .loop: return true
            default: return false
            }
        case "sameas":
            let o = try other()
            switch (v, o) {
            case (.none, .none): return true
            case (.bool(let a), .bool(let b)): return a == b
            case (.int(let a), .int(let b)): return a == b && a >= -5 && a <= 256
            case (.list(let a), .list(let b)): return a === b
            case (.dict(let a), .dict(let b)): return a === b
            case (.namespace(let a), .namespace(let b)): return a === b
            default: return false
            }
        case "escaped": return false
        case "in": return try Py.contains(try other(), v)
        case "odd", "even":
            _ = try bindArgs(name, [], args, kwargs)
            let r = try Py.arith("%", v, .int(2), maxBytes: limits.maxOutputBytes)
            return Py.eq(r, .int(name == "odd" ? 1 : 0))
        case "divisibleby":
            let r = try Py.arith("%", v, try other(), maxBytes: limits.maxOutputBytes)
            return Py.eq(r, .int(0))
        case "lower", "upper":
            var cased = false
            for sc in Py.str(v).string.unicodeScalars where sc.properties.isCased {
                cased = true
                if name == "lower" ? !sc.properties.isLowercase : !sc.properties.isUppercase { return false }
            }
            return cased
        case "eq", "equalto", "==": return Py.eq(v, try other())
        case "ne", "!=": return !Py.eq(v, try other())
        case "gt", ">", "greaterthan": return try Py.compareOp(">", v, try other())
        case "ge", ">=": return try Py.compareOp(">=", v, try other())
        case "lt", "<", "lessthan": return try Py.compareOp("<", v, try other())
        case "le", "<=": return try Py.compareOp("<=", v, try other())
        case "filter": return JinjaBuiltins.filterNames.contains(Py.str(v).string)
        case "test": return JinjaBuiltins.testNames.contains(Py.str(v).string)
        default: throw ValueError.message("no test named '\(name)'")
        }
    }

    // MARK: globals

    func callGlobal(_ name: String, _ args: [JValue], _ kwargs: [(String, JValue)]) throws -> JValue {
        try chargeArguments(args, kwargs)
        switch name {
        case "raise_exception":
            let a = try bindArgs(name, ["message"], args, kwargs)
            throw ValueError.raised(Py.str(a[0] ?? .none).string)
        case "range":
            guard kwargs.isEmpty else { throw ValueError.message("range() takes no keyword arguments") }
            let ints = try args.map { v -> Int in
                guard let i = v.intValue else { throw ValueError.message("'\(v.typeName)' object cannot be interpreted as an integer") }
                return i
            }
            var start = 0, stop = 0, stepBy = 1
            switch ints.count {
            case 1: stop = ints[0]
            case 2: start = ints[0]; stop = ints[1]
            case 3: start = ints[0]; stop = ints[1]; stepBy = ints[2]
            default: throw ValueError.message("range expected 1 to 3 arguments, got \(ints.count)")
            }
            if stepBy == 0 { throw ValueError.message("range() arg 3 must not be zero") }
            // In UInt: stop - start overflows Int for range(-2^63, 2^63 - 1), -stepBy for -2^63.
            let span: UInt = stepBy > 0 ? (stop > start ? UInt(bitPattern: stop &- start) : 0)
                                        : (start > stop ? UInt(bitPattern: start &- stop) : 0)
            let count = span == 0 ? 0 : Int(clamping: (span - 1) / stepBy.magnitude + 1)
            if count > 100_000 {
                throw ValueError.message("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).")
            }
            // Every value lies between start and stop, so wrapping arithmetic gives it exactly.
            return .list((0..<count).map { .int(start &+ $0 &* stepBy) })
        case "dict":
            var pairs: [(JValue, JValue)] = []
            if args.count > 1 { throw ValueError.message("dict expected at most 1 argument, got \(args.count)") }
            if let a = args.first { pairs = try pairsOf(a) }
            pairs += kwargs.map { (.str($0.0), $0.1) }
            return .dict(try DictBox.from(pairs: pairs))
        case "namespace":
            let ns = NamespaceBox()
            if args.count > 1 { throw ValueError.message("namespace expected at most 1 argument, got \(args.count)") }
            var pairs: [(JValue, JValue)] = []
            if let a = args.first { pairs = try pairsOf(a) }
            pairs += kwargs.map { (.str($0.0), $0.1) }
            for (k, v) in pairs {
                let key = Py.str(k).string
                if key.hasPrefix("_") {
                    throw ValueError.message("chat templates cannot store underscore-prefixed attributes on a namespace ('\(key)')")
                }
                guard v.depth < Self.maxValueDepth else {
                    throw ValueError.message("values nested more than \(Self.maxValueDepth) levels deep (namespace attribute '\(key)')")
                }
                ns.set(key, v)
            }
            return .namespace(ns)
        case "strftime_now":
            let a = try bindArgs(name, ["format"], args, kwargs)
            guard case .string(let f)? = a[0] else { throw ValueError.message("strftime_now() needs a format string") }
            return .str(strftime(f.string, now()))
        default:
            throw ValueError.message("'\(name)' is not supported in chat templates")
        }
    }

    /// The (key, value) pairs of a mapping or of an iterable of pairs, for dict() / namespace().
    func pairsOf(_ v: JValue) throws -> [(JValue, JValue)] {
        if case .dict(let d) = v { return Array(zip(d.keys, d.values)) }
        if case .namespace(let ns) = v { return ns.names.map { (.str($0), ns.values[$0]!) } }
        return try Py.iterate(v).map { item in
            let kv = try Py.iterate(item)
            guard kv.count == 2 else { throw ValueError.message("dictionary update sequence element has length \(kv.count); 2 is required") }
            return (kv[0], kv[1])
        }
    }

    /// C strftime in local time, as Python's datetime.now().strftime does.
    func strftime(_ format: String, _ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970.rounded(.down))
        var tmv = tm()
        localtime_r(&t, &tmv)
        var size = 256
        while size <= 1 << 16 {
            var buf = [CChar](repeating: 0, count: size)
            let n = Foundation.strftime(&buf, size, format, &tmv)
            if n > 0 || format.isEmpty { return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
            size *= 4
        }
        return ""
    }

    // MARK: methods

    func callMethod(_ recv: JValue, _ name: String, _ args: [JValue], _ kwargs: [(String, JValue)]) throws -> JValue {
        func bind(_ names: [String]) throws -> [JValue?] { try bindArgs(name, names, args, kwargs) }
        try charge(recv.cost(deep: false))
        try chargeArguments(args, kwargs)
        switch recv {
        case .string(let s): return try stringMethod(s, name, args, kwargs)
        case .dict(let d):
            switch name {
            case "get":
                let a = try bind(["key", "default"])
                guard let key = a[0] else { throw ValueError.message("get expected at least 1 argument, got 0") }
                return d.lookup(key) ?? a[1] ?? .none
            case "items":
                _ = try bind([])
                return .list(ListBox(zip(d.keys, d.values).map { .tuple([$0, $1]) }, kind: .dictItems))
            case "keys":
                _ = try bind([])
                return .list(ListBox(d.keys, kind: .dictKeys))
            case "values":
                _ = try bind([])
                return .list(ListBox(d.values, kind: .dictValues))
            case "copy":
                _ = try bind([])
                return recv
            default: break
            }
        case .list(let l):
            switch name {
            case "count":
                let a = try bind(["value"])
                return .int(l.items.filter { Py.eq($0, a[0] ?? .none) }.count)
            case "index":
                let a = try bind(["value", "start", "stop"])
                let n = l.items.count
                func norm(_ v: JValue?, _ d: Int) throws -> Int {
                    let i = try intArg(v, d, "index")
                    return i < 0 ? max(0, i + n) : min(i, n)
                }
                let lo = try norm(a[1], 0), hi = try norm(a[2], n)
                if lo < hi, let i = l.items[lo..<hi].firstIndex(where: { Py.eq($0, a[0] ?? .none) }) { return .int(i) }
                throw ValueError.message("\(Py.repr(a[0] ?? .none)) is not in list")
            case "copy":
                _ = try bind([])
                return recv
            default: break
            }
        case .loop(let l):
            switch name {
            case "cycle":
                guard !args.isEmpty else { throw ValueError.message("no items for cycling given") }
                return args[l.index0 % args.count]
            case "changed":
                if let last = l.lastChanged, last.count == args.count, zip(last, args).allSatisfy({ Py.eq($0, $1) }) {
                    return .bool(false)
                }
                l.lastChanged = args
                return .bool(true)
            default: break
            }
        default: break
        }
        throw ValueError.message("'\(recv.typeName)' object has no method '\(name)'")
    }

    private func stringMethod(_ s: TString, _ name: String, _ args: [JValue], _ kwargs: [(String, JValue)]) throws -> JValue {
        func bind(_ names: [String]) throws -> [JValue?] { try bindArgs(name, names, args, kwargs) }
        func strArg(_ v: JValue?, _ what: String) throws -> TString {
            guard case .string(let t)? = v else {
                throw ValueError.message("\(name)() argument '\(what)' must be str, not \(v?.typeName ?? "missing")")
            }
            return t
        }
        /// Byte bounds for optional code-point start/end arguments.
        func bounds(_ start: JValue?, _ end: JValue?) throws -> (Int, Int) {
            let offs = s.scalarOffsets()
            let n = offs.count - 1
            func norm(_ v: JValue?, _ d: Int) throws -> Int {
                guard let v, !v.isNone else { return d }
                guard var i = v.intValue else { throw ValueError.message("slice indices must be integers or None") }
                if i < 0 { i = max(0, i + n) }
                return min(i, n)
            }
            let a = try norm(start, 0), b = try norm(end, n)
            return (offs[a], offs[max(a, b)])
        }
        func scalarIndex(_ byte: Int) -> Int {
            var n = 0
            for b in s.bytes[0..<byte] where b & 0xC0 != 0x80 { n += 1 }
            return n
        }
        switch name {
        case "strip", "lstrip", "rstrip":
            let a = try bind(["chars"])
            let chars = a[0].flatMap { $0.isNone ? nil : Py.str($0) }
            return .string(Py.strip(s, chars: chars, left: name != "rstrip", right: name != "lstrip"))
        case "split", "rsplit":
            let a = try bind(["sep", "maxsplit"])
            let sep = a[0].flatMap { $0.isNone ? nil : $0.tstring }
            if let x = a[0], !x.isNone, x.tstring == nil { throw ValueError.message("must be str or None, not \(x.typeName)") }
            let parts = try Py.split(s, sep: sep, maxsplit: intArg(a[1], -1, "maxsplit"), fromRight: name == "rsplit")
            return .list(parts.map { .string($0) })
        case "splitlines":
            let a = try bind(["keepends"])
            return .list(try Py.splitlines(s, keepends: a[0]?.truthy ?? false).map { .string($0) })
        case "startswith", "endswith":
            let a = try bind(["prefix", "start", "end"])
            let (lo, hi) = try bounds(a[1], a[2])
            var candidates: [TString] = []
            switch a[0] {
            case .string(let t)?: candidates = [t]
            case .list(let l)? where l.kind == .tuple:
                candidates = try l.items.map { try strArg($0, "prefix") }
            default:
                throw ValueError.message("\(name) first arg must be str or a tuple of str, not \(a[0]?.typeName ?? "nothing")")
            }
            let window = Array(s.bytes[lo..<hi])
            return .bool(candidates.contains { c in
                c.count <= window.count && (name == "startswith" ? window.starts(with: c.bytes) : window.suffix(c.count).elementsEqual(c.bytes))
            })
        case "upper": _ = try bind([]); return .string(Py.upper(s))
        case "lower", "casefold": _ = try bind([]); return .string(Py.lower(s))
        case "title": _ = try bind([]); return .string(Py.title(s))
        case "capitalize": _ = try bind([]); return .string(Py.capitalize(s))
        case "swapcase": _ = try bind([]); return .string(Py.swapcase(s))
        case "replace":
            let a = try bind(["old", "new", "count"])
            return .string(try Py.replace(s, try strArg(a[0], "old"), try strArg(a[1], "new"), count: intArg(a[2], -1, "count"),
                                          maxBytes: limits.maxOutputBytes))
        case "find", "rfind", "index", "rindex":
            let a = try bind(["sub", "start", "end"])
            let sub = try strArg(a[0], "sub")
            let (lo, hi) = try bounds(a[1], a[2])
            let hit = name.hasPrefix("r") ? Py.rfind(s.bytes, sub.bytes, from: lo, to: hi) : Py.find(s.bytes, sub.bytes, from: lo, to: hi)
            if let hit { return .int(scalarIndex(hit)) }
            if name.hasSuffix("index") { throw ValueError.message("substring not found") }
            return .int(-1)
        case "count":
            let a = try bind(["sub", "start", "end"])
            let sub = try strArg(a[0], "sub")
            let (lo, hi) = try bounds(a[1], a[2])
            if sub.isEmpty { return .int(Array(s.bytes[lo..<hi]).filter { $0 & 0xC0 != 0x80 }.count + 1) }
            var n = 0, from = lo
            while let i = Py.find(s.bytes, sub.bytes, from: from, to: hi) { n += 1; from = i + sub.count }
            return .int(n)
        case "join":
            let a = try bind(["iterable"])
            var r = TString.empty
            for (i, item) in try Py.iterate(a[0] ?? .none).enumerated() {
                guard case .string(let t) = item else {
                    throw ValueError.message("sequence item \(i): expected str instance, \(item.typeName) found")
                }
                if i > 0 { r.append(s) }
                r.append(t)
                if r.count > limits.maxOutputBytes { throw ValueError.message("string too long") }
            }
            return .string(r)
        case "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isnumeric", "isspace", "islower", "isupper", "istitle":
            _ = try bind([])
            let scalars = Array(s.string.unicodeScalars)
            if name == "isascii" { return .bool(s.isASCII) }
            if scalars.isEmpty { return .bool(false) }
            switch name {
            case "isalpha": return .bool(scalars.allSatisfy { $0.properties.isAlphabetic && $0.properties.generalCategory.isLetter })
            case "isdecimal": return .bool(scalars.allSatisfy { $0.properties.numericType == .decimal })
            case "isdigit": return .bool(scalars.allSatisfy { $0.properties.numericType == .decimal || $0.properties.numericType == .digit })
            case "isnumeric": return .bool(scalars.allSatisfy { $0.properties.numericType != nil })
            case "isalnum": return .bool(scalars.allSatisfy { $0.properties.generalCategory.isLetter || $0.properties.numericType != nil })
            case "isspace": return .bool(scalars.allSatisfy { isPythonWhitespace($0.value) })
            case "istitle":
                var prevCased = false, any = false
                for sc in scalars {
                    if sc.properties.isUppercase || sc.properties.generalCategory == .titlecaseLetter {
                        if prevCased { return .bool(false) }
                        prevCased = true; any = true
                    } else if sc.properties.isLowercase {
                        if !prevCased { return .bool(false) }
                        prevCased = true; any = true
                    } else {
                        prevCased = false
                    }
                }
                return .bool(any)
            default:
                return .bool(try test(name == "islower" ? "lower" : "upper", .string(s), [], []))
            }
        case "center", "ljust", "rjust":
            let a = try bind(["width", "fillchar"])
            let fill = try a[1].map { try strArg($0, "fillchar").string } ?? " "
            guard fill.unicodeScalars.count == 1 else { throw ValueError.message("The fill character must be exactly one character long") }
            return .string(try justify(s, width: intArg(a[0], 0, "width"), fill: fill, mode: name))
        case "zfill":
            let a = try bind(["width"])
            let w = try intArg(a[0], 0, "width")
            guard w <= limits.maxOutputBytes else { throw ValueError.message("width too large") }
            return .string(Py.pad(s, width: w, left: false, zero: true))
        case "partition", "rpartition":
            let a = try bind(["sep"])
            let sep = try strArg(a[0], "sep")
            if sep.isEmpty { throw ValueError.message("empty separator") }
            let hit = name == "partition" ? Py.find(s.bytes, sep.bytes, from: 0) : Py.rfind(s.bytes, sep.bytes)
            guard let i = hit else {
                return name == "partition" ? .tuple([.string(s), .str(""), .str("")]) : .tuple([.str(""), .str(""), .string(s)])
            }
            return .tuple([.string(s.slice(0, i)), .string(s.slice(i, i + sep.count)), .string(s.slice(i + sep.count, s.count))])
        case "removeprefix", "removesuffix":
            let a = try bind(["affix"])
            let fix = try strArg(a[0], "affix")
            if name == "removeprefix", s.bytes.starts(with: fix.bytes) { return .string(s.slice(fix.count, s.count)) }
            if name == "removesuffix", !fix.isEmpty, s.bytes.count >= fix.count, s.bytes.suffix(fix.count).elementsEqual(fix.bytes) {
                return .string(s.slice(0, s.count - fix.count))
            }
            return .string(s)
        case "format":
            return .string(try formatMethod(s, args, kwargs))
        default:
            throw ValueError.message("'str' object has no method '\(name)'")
        }
    }

    /// str.format: `{}` / `{0}` / `{name}` fields with `.attr` / `[key]` lookups, `!r` / `!s`
    /// conversions and the common format specs ([[fill]align][sign][0][width][.precision][type]).
    func formatMethod(_ f: TString, _ args: [JValue], _ kwargs: [(String, JValue)]) throws -> TString {
        let chars = Array(f.string.unicodeScalars)
        var out = TString.empty
        var literal = ""
        var i = 0
        var auto = 0
        while i < chars.count {
            let c = chars[i]
            if c == "}" {
                guard i + 1 < chars.count, chars[i + 1] == "}" else { throw ValueError.message("Single '}' encountered in format string") }
                literal.append("}"); i += 2; continue
            }
            if c != "{" { literal.unicodeScalars.append(c); i += 1; continue }
            if i + 1 < chars.count, chars[i + 1] == "{" { literal.append("{"); i += 2; continue }
            var j = i + 1
            var depth = 1
            while j < chars.count {
                if chars[j] == "{" { depth += 1 } else if chars[j] == "}" { depth -= 1; if depth == 0 { break } }
                j += 1
            }
            guard j < chars.count else { throw ValueError.message("expected '}' before end of string") }
            var field = String(String.UnicodeScalarView(chars[(i + 1)..<j]))
            i = j + 1
            out.append(literal)
            literal = ""
            var spec = ""
            if let colon = field.firstIndex(of: ":") { spec = String(field[field.index(after: colon)...]); field = String(field[..<colon]) }
            var conversion: Character?
            if let bang = field.firstIndex(of: "!") {
                conversion = field[field.index(after: bang)...].first
                field = String(field[..<bang])
            }
            // Field name: first part, then .attr / [key] steps.
            var nameEnd = field.endIndex
            if let k = field.firstIndex(where: { $0 == "." || $0 == "[" }) { nameEnd = k }
            let first = String(field[..<nameEnd])
            var value: JValue
            if first.isEmpty {
                guard auto < args.count else { throw ValueError.message("Replacement index \(auto) out of range for positional args tuple") }
                value = args[auto]
                auto += 1
            } else if let n = Int(first) {
                guard n < args.count else { throw ValueError.message("Replacement index \(n) out of range for positional args tuple") }
                value = args[n]
            } else {
                guard let kv = kwargs.first(where: { $0.0 == first }) else { throw ValueError.message("KeyError: '\(first)'") }
                value = kv.1
            }
            var rest = field[nameEnd...]
            while let c = rest.first {
                if c == "." {
                    rest = rest.dropFirst()
                    let end = rest.firstIndex(where: { $0 == "." || $0 == "[" }) ?? rest.endIndex
                    value = try getattr(value, String(rest[..<end]))
                    rest = rest[end...]
                } else {
                    guard let close = rest.firstIndex(of: "]") else { throw ValueError.message("Missing ']' in format string") }
                    let key = String(rest[rest.index(after: rest.startIndex)..<close])
                    value = try getitem(value, Int(key).map { .int($0) } ?? .str(key))
                    rest = rest[rest.index(after: close)...]
                }
            }
            if conversion == "r" || conversion == "a" { value = .str(Py.repr(value)) } else if conversion == "s" { value = .string(Py.str(value)) }
            out.append(try formatSpec(value, spec))
        }
        out.append(literal)
        return out
    }

    func formatSpec(_ v: JValue, _ spec: String) throws -> TString {
        if spec.isEmpty { return Py.str(v) }
        var chars = Array(spec)
        var fill: Character = " "
        var align: Character?
        if chars.count >= 2, "<>^=".contains(chars[1]) { fill = chars[0]; align = chars[1]; chars.removeFirst(2) }
        else if let c = chars.first, "<>^=".contains(c) { align = c; chars.removeFirst() }
        var sign = ""
        if let c = chars.first, "+- ".contains(c) { sign = c == "-" ? "" : String(c); chars.removeFirst() }
        var zero = false
        if chars.first == "0" { zero = true; chars.removeFirst() }
        var width = 0
        while let c = chars.first, let d = c.wholeNumberValue { width = width * 10 + d; chars.removeFirst(); if width > 100_000 { throw ValueError.message("width too large") } }
        var grouping: Character?
        if let c = chars.first, c == "," || c == "_" { grouping = c; chars.removeFirst() }
        var precision: Int?
        if chars.first == "." {
            chars.removeFirst()
            var p = 0
            while let c = chars.first, let d = c.wholeNumberValue {
                p = p * 10 + d; chars.removeFirst()
                if p > 100_000 { throw ValueError.message("precision too large") }
            }
            precision = p
        }
        let type = chars.first
        if chars.count > 1 { throw ValueError.message("Invalid format specifier '\(spec)'") }
        var body: String
        var numeric = false
        switch type {
        case nil, "s":
            if v.num != nil && type == nil {
                numeric = true
                if let p = precision, let n = v.num { body = Py.cFormat(n.double, conv: UInt8(ascii: "g"), precision: p) }
                else { body = Py.str(v).string }
            } else {
                guard case .string = v else {
                    if type == "s" { throw ValueError.message("Unknown format code 's' for object of type '\(v.typeName)'") }
                    body = Py.str(v).string
                    break
                }
                body = Py.str(v).string
                if let p = precision { body = String(body.unicodeScalars.prefix(p).map(Character.init)) }
            }
        case "d":
            guard case .int(let i)? = v.num else { throw ValueError.message("Unknown format code 'd' for object of type '\(v.typeName)'") }
            body = String(i); numeric = true
        case "f", "F", "e", "E", "g", "G", "%":
            guard let n = v.num else { throw ValueError.message("Unknown format code '\(type!)' for object of type '\(v.typeName)'") }
            numeric = true
            if type == "%" { body = Py.cFormat(n.double * 100, conv: UInt8(ascii: "f"), precision: precision ?? 6) + "%" }
            else { body = Py.cFormat(n.double, conv: UInt8(ascii: type!.unicodeScalars.first!), precision: precision ?? 6) }
        case "x", "X", "o", "b":
            guard case .int(let i)? = v.num else { throw ValueError.message("Unknown format code '\(type!)' for object of type '\(v.typeName)'") }
            let radix = type == "o" ? 8 : type == "b" ? 2 : 16
            body = (i < 0 ? "-" : "") + String(abs(i), radix: radix, uppercase: type == "X"); numeric = true
        default:
            throw ValueError.message("Unknown format code '\(type!)' for object of type '\(v.typeName)'")
        }
        if let g = grouping, numeric {
            // Thousands separators on the integer digits.
            var digits = body
            var head = ""
            if digits.hasPrefix("-") { head = "-"; digits.removeFirst() }
            let intEnd = digits.firstIndex(where: { !$0.isNumber }) ?? digits.endIndex
            var intPart = String(digits[..<intEnd])
            let tail = String(digits[intEnd...])
            var grouped = ""
            while intPart.count > 3 { grouped = String(g) + intPart.suffix(3) + grouped; intPart.removeLast(3) }
            body = head + intPart + grouped + tail
        }
        if numeric && !body.hasPrefix("-") { body = sign + body }
        let n = body.unicodeScalars.count
        if n >= width { return TString(body) }
        let pad = width - n
        let a = align ?? (zero && numeric ? "=" : (numeric ? ">" : "<"))
        let f = zero && align == nil ? "0" : String(fill)
        switch a {
        case "<": return TString(body + String(repeating: f, count: pad))
        case "^": return TString(String(repeating: f, count: pad / 2) + body + String(repeating: f, count: pad - pad / 2))
        case "=":
            var signPart = ""
            if let c = body.first, c == "-" || c == "+" || c == " " { signPart = String(c); body.removeFirst() }
            return TString(signPart + String(repeating: f, count: pad) + body)
        default: return TString(String(repeating: f, count: pad) + body)
        }
    }
}

private extension Unicode.GeneralCategory {
    var isLetter: Bool {
        switch self {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }
}
