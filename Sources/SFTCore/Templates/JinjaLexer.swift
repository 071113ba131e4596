// The Jinja lexer: template source to tokens, with the whitespace rules of the environment
// transformers renders chat templates in (jinja2 with trim_blocks=True, lstrip_blocks=True,
// keep_trailing_newline=False). It follows jinja2's lexer.py rule for rule:
//
// - newlines (\r\n, \r, \n) become \n everywhere, and one trailing newline is dropped;
// - `{%-` / `{{-` / `{#-` strip all whitespace before the tag, `-%}` / `-}}` / `-#}` after it;
// - lstrip_blocks: spaces and tabs between a line start and `{%` or `{#` are removed (not
//   before `{{`), unless the tag opens with `+`;
// - trim_blocks: the first newline after `%}` or `#}` is removed, unless it closes with `+%}`;
// - `{% raw %}...{% endraw %}` is data;
// - inside tags, `}}` and `%}` end the tag only when brackets are balanced.
import Foundation
import SFTKernels

/// A template error before it is given a line and column (byte offset into the normalized source).
struct TemplateError: Error {
    var offset: Int
    var message: String
}

enum JTokenKind: Equatable {
    case data, variableBegin, variableEnd, blockBegin, blockEnd
    case name, string, integer, float, op, eof
}

struct JToken {
    var kind: JTokenKind
    /// Name, operator, or the decoded string literal.
    var text: String = ""
    /// Template text, for data tokens.
    var data: [UInt8] = []
    var int: Int = 0
    var double: Double = 0
    /// Byte offset in the normalized source.
    var offset: Int

    func isName(_ n: String) -> Bool { kind == .name && text == n }
    func isOp(_ o: String) -> Bool { kind == .op && text == o }

    var describe: String {
        switch kind {
        case .data: return "template data"
        case .variableBegin: return "begin of print statement '{{'"
        case .variableEnd: return "end of print statement '}}'"
        case .blockBegin: return "begin of statement block '{%'"
        case .blockEnd: return "end of statement block '%}'"
        case .name: return "'\(text)'"
        case .string: return "string"
        case .integer, .float: return "number"
        case .op: return "'\(text)'"
        case .eof: return "end of template"
        }
    }
}

/// Maps byte offsets of the normalized source to 1-based line and column (columns count
/// Unicode scalars).
struct TemplateSourceMap {
    let source: [UInt8]
    let lineStarts: [Int]

    init(_ source: [UInt8]) {
        self.source = source
        var starts = [0]
        for (i, b) in source.enumerated() where b == 0x0A { starts.append(i + 1) }
        lineStarts = starts
    }

    func position(_ offset: Int) -> (line: Int, column: Int) {
        let off = min(max(offset, 0), source.count)
        var lo = 0, hi = lineStarts.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if lineStarts[mid] <= off { lo = mid } else { hi = mid - 1 }
        }
        var col = 1
        var i = lineStarts[lo]
        while i < off { if source[i] & 0xC0 != 0x80 { col += 1 }; i += 1 }
        return (lo + 1, col)
    }
}

struct JinjaLexer {
    let src: [UInt8]
    var pos = 0
    var tokens: [JToken] = []

    /// Normalizes newlines and drops one trailing newline, as jinja2 does before lexing.
    static func normalize(_ source: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(source.utf8.count)
        var prevCR = false
        for b in source.utf8 {
            if b == 0x0D { out.append(0x0A); prevCR = true; continue }
            if b == 0x0A && prevCR { prevCR = false; continue }
            prevCR = false
            out.append(b)
        }
        if out.last == 0x0A { out.removeLast() }
        return out
    }

    init(normalized: [UInt8]) {
        src = normalized
    }

    static func tokenize(_ normalized: [UInt8]) throws -> [JToken] {
        var lx = JinjaLexer(normalized: normalized)
        try lx.run()
        return lx.tokens
    }

    // MARK: character classes

    func at(_ i: Int) -> UInt8 { i < src.count ? src[i] : 0 }
    func startsWith(_ s: String, at i: Int) -> Bool {
        var k = i
        for b in s.utf8 { if k >= src.count || src[k] != b { return false }; k += 1 }
        return true
    }

    /// Decodes the scalar at `i`: (value, width).
    func scalar(at i: Int) -> (UInt32, Int) {
        let b0 = src[i]
        if b0 < 0x80 { return (UInt32(b0), 1) }
        let n = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : 2
        guard i + n <= src.count else { return (UInt32(b0), 1) }
        var v = UInt32(b0) & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07)
        for k in 1..<n { v = v << 6 | UInt32(src[i + k] & 0x3F) }
        return (v, n)
    }

    /// The end of the run of Python-whitespace starting at `i`.
    func skipSpace(from i: Int) -> Int {
        var k = i
        while k < src.count {
            let (v, w) = scalar(at: k)
            if !isPythonWhitespace(v) { break }
            k += w
        }
        return k
    }

    /// `src[lo..<hi]` with trailing Python-whitespace removed (str.rstrip()).
    func rstripEnd(_ lo: Int, _ hi: Int) -> Int {
        var end = hi
        while end > lo {
            var s = end - 1
            while s > lo && src[s] & 0xC0 == 0x80 { s -= 1 }
            let (v, _) = scalar(at: s)
            if !isPythonWhitespace(v) { break }
            end = s
        }
        return end
    }

    // MARK: main loop

    mutating func run() throws {
        while pos < src.count {
            // Find the next tag opener.
            var i = pos
            var found = -1
            while i + 1 < src.count {
                if src[i] == UInt8(ascii: "{") {
                    let c = src[i + 1]
                    if c == UInt8(ascii: "{") || c == UInt8(ascii: "%") || c == UInt8(ascii: "#") { found = i; break }
                }
                i += 1
            }
            if found < 0 {
                emitData(pos, src.count)
                pos = src.count
                break
            }
            let kind = src[found + 1]
            var j = found + 2
            var sign: UInt8 = 0
            if at(j) == UInt8(ascii: "-") || at(j) == UInt8(ascii: "+") { sign = src[j]; j += 1 }
            let rawEnd = kind == UInt8(ascii: "%") ? matchRawBegin(from: j) : nil
            let textEnd = strippedTextEnd(textStart: pos, textEnd: found, sign: sign, isVariable: kind == UInt8(ascii: "{"))
            emitData(pos, textEnd)
            if let afterRaw = rawEnd {
                try lexRaw(from: afterRaw, openedAt: found)
            } else if kind == UInt8(ascii: "#") {
                try lexComment(from: j, openedAt: found)
            } else if kind == UInt8(ascii: "%") {
                tokens.append(JToken(kind: .blockBegin, offset: found))
                pos = j
                try lexTag(isBlock: true, openedAt: found)
            } else {
                tokens.append(JToken(kind: .variableBegin, offset: found))
                pos = j
                try lexTag(isBlock: false, openedAt: found)
            }
        }
        tokens.append(JToken(kind: .eof, offset: src.count))
    }

    mutating func emitData(_ lo: Int, _ hi: Int) {
        guard hi > lo else { return }
        tokens.append(JToken(kind: .data, data: Array(src[lo..<hi]), offset: lo))
    }

    /// Where the text before a tag ends after whitespace control: `-` strips all trailing
    /// whitespace; otherwise lstrip_blocks strips blanks back to the line start for `{%` / `{#`.
    func strippedTextEnd(textStart: Int, textEnd: Int, sign: UInt8, isVariable: Bool) -> Int {
        if sign == UInt8(ascii: "-") { return rstripEnd(textStart, textEnd) }
        if sign == UInt8(ascii: "+") || isVariable { return textEnd }
        var lPos = textStart
        var k = textEnd
        while k > textStart { if src[k - 1] == 0x0A { lPos = k; break }; k -= 1 }
        let lineStarting = textStart == 0 || src[textStart - 1] == 0x0A
        guard lPos > textStart || lineStarting else { return textEnd }
        guard lPos < textEnd, skipSpace(from: lPos) == textEnd else { return textEnd }
        return lPos
    }

    /// After `{%` and its sign: `\s*raw\s*(-%}\s*|%})`; returns the position after it.
    func matchRawBegin(from j: Int) -> Int? {
        var k = skipSpace(from: j)
        guard startsWith("raw", at: k) else { return nil }
        k = skipSpace(from: k + 3)
        if startsWith("-%}", at: k) { return skipSpace(from: k + 3) }
        if startsWith("%}", at: k) { return k + 2 }
        return nil
    }

    mutating func lexRaw(from start: Int, openedAt: Int) throws {
        var i = start
        while i + 1 < src.count {
            if src[i] == UInt8(ascii: "{") && src[i + 1] == UInt8(ascii: "%") {
                var k = i + 2
                var sign: UInt8 = 0
                if at(k) == UInt8(ascii: "-") || at(k) == UInt8(ascii: "+") { sign = src[k]; k += 1 }
                k = skipSpace(from: k)
                if startsWith("endraw", at: k) {
                    k = skipSpace(from: k + 6)
                    var end: Int?
                    if startsWith("+%}", at: k) { end = k + 3 }
                    else if startsWith("-%}", at: k) { end = skipSpace(from: k + 3) }
                    else if startsWith("%}", at: k) { end = k + 2; if at(k + 2) == 0x0A { end! += 1 } }
                    if let end {
                        emitData(start, strippedTextEnd(textStart: start, textEnd: i, sign: sign, isVariable: false))
                        pos = end
                        return
                    }
                }
            }
            i += 1
        }
        throw TemplateError(offset: openedAt, message: "missing end of raw directive ({% endraw %})")
    }

    mutating func lexComment(from start: Int, openedAt: Int) throws {
        var q = start
        while q + 1 < src.count {
            if src[q] == UInt8(ascii: "#") && src[q + 1] == UInt8(ascii: "}") {
                if q - 1 >= start && src[q - 1] == UInt8(ascii: "-") {
                    pos = skipSpace(from: q + 2)
                } else if q - 1 >= start && src[q - 1] == UInt8(ascii: "+") {
                    pos = q + 2
                } else {
                    pos = q + 2
                    if at(pos) == 0x0A { pos += 1 }
                }
                return
            }
            q += 1
        }
        throw TemplateError(offset: openedAt, message: "missing end of comment tag '#}'")
    }

    /// Lexes expression tokens until the closing `%}` / `}}`.
    mutating func lexTag(isBlock: Bool, openedAt: Int) throws {
        var balance: [UInt8] = []
        while true {
            guard pos < src.count else {
                throw TemplateError(offset: openedAt, message: "unclosed tag: '\(isBlock ? "{%" : "{{")' has no matching '\(isBlock ? "%}" : "}}")'")
            }
            if balance.isEmpty {
                if isBlock {
                    if startsWith("+%}", at: pos) { tokens.append(JToken(kind: .blockEnd, offset: pos)); pos += 3; return }
                    if startsWith("-%}", at: pos) { tokens.append(JToken(kind: .blockEnd, offset: pos)); pos = skipSpace(from: pos + 3); return }
                    if startsWith("%}", at: pos) {
                        tokens.append(JToken(kind: .blockEnd, offset: pos))
                        pos += 2
                        if at(pos) == 0x0A { pos += 1 }
                        return
                    }
                } else {
                    if startsWith("-}}", at: pos) { tokens.append(JToken(kind: .variableEnd, offset: pos)); pos = skipSpace(from: pos + 3); return }
                    if startsWith("}}", at: pos) { tokens.append(JToken(kind: .variableEnd, offset: pos)); pos += 2; return }
                }
            }
            let c = src[pos]
            let (sv, _) = scalar(at: pos)
            if isPythonWhitespace(sv) { pos = skipSpace(from: pos); continue }
            if c >= 0x30 && c <= 0x39 { try lexNumber(); continue }
            if isNameStart(c) { lexName(); continue }
            if c == UInt8(ascii: "'") || c == UInt8(ascii: "\"") { try lexString(); continue }
            try lexOperator(&balance)
        }
    }

    func isNameStart(_ c: UInt8) -> Bool {
        (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F || c >= 0x80
    }

    mutating func lexName() {
        let start = pos
        while pos < src.count {
            let c = src[pos]
            if isNameStart(c) || (c >= 0x30 && c <= 0x39) { pos += 1 } else { break }
        }
        tokens.append(JToken(kind: .name, text: String(decoding: src[start..<pos], as: UTF8.self), offset: start))
    }

    /// `\d+(_\d+)*` from `i`; returns the end or nil.
    func digitRun(_ i: Int) -> Int? {
        var k = i
        guard k < src.count, src[k] >= 0x30, src[k] <= 0x39 else { return nil }
        while k < src.count {
            if src[k] >= 0x30 && src[k] <= 0x39 { k += 1; continue }
            if src[k] == 0x5F, k + 1 < src.count, src[k + 1] >= 0x30, src[k + 1] <= 0x39 { k += 1; continue }
            break
        }
        return k
    }

    mutating func lexNumber() throws {
        let start = pos
        // Floats first (jinja2 tries the float rule before the integer rule), but not right after a dot.
        if start == 0 || src[start - 1] != UInt8(ascii: ".") , let intEnd = digitRun(start) {
            var k = intEnd
            var isFloat = false
            if at(k) == UInt8(ascii: "."), let fracEnd = digitRun(k + 1) { k = fracEnd; isFloat = true }
            if at(k) == UInt8(ascii: "e") || at(k) == UInt8(ascii: "E") {
                var e = k + 1
                if at(e) == UInt8(ascii: "+") || at(e) == UInt8(ascii: "-") { e += 1 }
                if let expEnd = digitRun(e) { k = expEnd; isFloat = true }
            }
            if isFloat {
                let text = String(decoding: src[start..<k].filter { $0 != 0x5F }, as: UTF8.self)
                guard let d = Double(text) else { throw TemplateError(offset: start, message: "invalid number '\(text)'") }
                tokens.append(JToken(kind: .float, double: d, offset: start))
                pos = k
                return
            }
        }
        // Integers: 0b / 0o / 0x prefixes, [1-9](_?\d)*, 0(_?0)*.
        var radix = 10
        var k = start
        if src[start] == UInt8(ascii: "0"), let p = Optional(at(start + 1) | 0x20),
           p == UInt8(ascii: "b") || p == UInt8(ascii: "o") || p == UInt8(ascii: "x") {
            radix = p == UInt8(ascii: "b") ? 2 : p == UInt8(ascii: "o") ? 8 : 16
            var e = start + 2
            func isDigit(_ c: UInt8) -> Bool {
                switch radix {
                case 2: return c == 0x30 || c == 0x31
                case 8: return c >= 0x30 && c <= 0x37
                default: return (c >= 0x30 && c <= 0x39) || ((c | 0x20) >= 0x61 && (c | 0x20) <= 0x66)
                }
            }
            var any = false
            while e < src.count {
                if isDigit(src[e]) { e += 1; any = true; continue }
                if src[e] == 0x5F, e + 1 < src.count, isDigit(src[e + 1]) { e += 1; continue }
                break
            }
            if any { k = e } else { radix = 10 }
        }
        if radix == 10 {
            if src[start] == UInt8(ascii: "0") {
                k = start + 1
                while k < src.count {
                    if src[k] == 0x30 { k += 1; continue }
                    if src[k] == 0x5F, at(k + 1) == 0x30 { k += 2; continue }
                    break
                }
            } else {
                k = digitRun(start)!
            }
        }
        var digits = Array(src[start..<k].filter { $0 != 0x5F })
        if radix != 10 { digits.removeFirst(2) }
        guard let v = Int(String(decoding: digits, as: UTF8.self), radix: radix) else {
            throw TemplateError(offset: start, message: "integer literal too large")
        }
        tokens.append(JToken(kind: .integer, int: v, offset: start))
        pos = k
    }

    /// A quoted string; escapes are decoded the way jinja2 does it (Python's unicode-escape codec).
    mutating func lexString() throws {
        let start = pos
        let quote = src[pos]
        var k = pos + 1
        while k < src.count && src[k] != quote {
            if src[k] == UInt8(ascii: "\\") { k += 1 }
            k += 1
        }
        guard k < src.count else { throw TemplateError(offset: start, message: "unterminated string literal") }
        let body = Array(src[(start + 1)..<k])
        pos = k + 1
        let decoded = try JinjaLexer.unescape(body, offset: start)
        tokens.append(JToken(kind: .string, text: decoded, offset: start))
    }

    static func unescape(_ body: [UInt8], offset: Int) throws -> String {
        guard body.contains(UInt8(ascii: "\\")) else { return String(decoding: body, as: UTF8.self) }
        var out: [UInt8] = []
        var i = 0
        func hexValue(_ count: Int) throws -> UInt32 {
            guard i + count <= body.count else { throw TemplateError(offset: offset, message: "truncated escape in string literal") }
            var v: UInt32 = 0
            for _ in 0..<count {
                let c = body[i] | 0x20
                let d: UInt32
                if body[i] >= 0x30 && body[i] <= 0x39 { d = UInt32(body[i] - 0x30) }
                else if c >= 0x61 && c <= 0x66 { d = UInt32(c - 0x61 + 10) }
                else { throw TemplateError(offset: offset, message: "truncated escape in string literal") }
                v = v * 16 + d
                i += 1
            }
            return v
        }
        func appendScalar(_ v: UInt32) throws {
            guard let sc = Unicode.Scalar(v) else {
                // Python would keep a lone surrogate; Swift strings cannot, so it becomes U+FFFD.
                out.append(contentsOf: "\u{FFFD}".utf8)
                return
            }
            out.append(contentsOf: String(sc).utf8)
        }
        while i < body.count {
            let c = body[i]
            if c != UInt8(ascii: "\\") || i + 1 >= body.count { out.append(c); i += 1; continue }
            let e = body[i + 1]
            i += 2
            switch e {
            case 0x0A: break
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "'"): out.append(0x27)
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "a"): out.append(0x07)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "v"): out.append(0x0B)
            case UInt8(ascii: "0")...UInt8(ascii: "7"):
                var v = UInt32(e - 0x30)
                var n = 1
                while n < 3, i < body.count, body[i] >= 0x30, body[i] <= 0x37 { v = v * 8 + UInt32(body[i] - 0x30); i += 1; n += 1 }
                try appendScalar(v)
            case UInt8(ascii: "x"): try appendScalar(try hexValue(2))
            case UInt8(ascii: "u"): try appendScalar(try hexValue(4))
            case UInt8(ascii: "U"):
                let v = try hexValue(8)
                guard v <= 0x10FFFF else { throw TemplateError(offset: offset, message: "illegal Unicode character in string literal") }
                try appendScalar(v)
            case UInt8(ascii: "N"):
                throw TemplateError(offset: offset, message: "\\N{...} escapes are not supported")
            default:
                out.append(0x5C)
                out.append(e)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    mutating func lexOperator(_ balance: inout [UInt8]) throws {
        let start = pos
        let two = ["//", "**", "==", "!=", ">=", "<="]
        for op in two where startsWith(op, at: pos) {
            tokens.append(JToken(kind: .op, text: op, offset: start))
            pos += 2
            return
        }
        let c = src[pos]
        let singles: [UInt8] = Array("+-/*%~[](){}=.:|,;<>".utf8)
        guard singles.contains(c) else {
            let (v, _) = scalar(at: pos)
            let shown = Unicode.Scalar(v).map { String($0) } ?? "?"
            throw TemplateError(offset: start, message: "unexpected character '\(shown)'")
        }
        switch c {
        case UInt8(ascii: "{"): balance.append(UInt8(ascii: "}"))
        case UInt8(ascii: "("): balance.append(UInt8(ascii: ")"))
        case UInt8(ascii: "["): balance.append(UInt8(ascii: "]"))
        case UInt8(ascii: "}"), UInt8(ascii: ")"), UInt8(ascii: "]"):
            guard let expected = balance.popLast() else {
                throw TemplateError(offset: start, message: "unexpected '\(Unicode.Scalar(c))'")
            }
            if expected != c {
                throw TemplateError(offset: start, message: "unexpected '\(Unicode.Scalar(c))', expected '\(Unicode.Scalar(expected))'")
            }
        default: break
        }
        tokens.append(JToken(kind: .op, text: String(Unicode.Scalar(c)), offset: start))
        pos += 1
    }
}
