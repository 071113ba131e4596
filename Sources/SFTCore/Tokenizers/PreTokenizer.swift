// Pre-tokenizers of byte-level BPE models, written as hand scanners over UTF-8 bytes instead of
// regexes. Each `next*` function returns where the piece starting at `i` ends, exactly where the
// reference regex (run by HF tokenizers / llama.cpp, leftmost alternative first, greedy) ends
// its match:
//   GPT-2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   Llama-3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
//            | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   Qwen2:   Llama-3 with \p{N} (one digit per piece)
//   SmolLM:  every \p{N} isolated (HF Digits(individual_digits)), then GPT-2 on the text between
// The one subtle rule is `\s+(?!\S)`: a whitespace run followed by a non-space gives back its
// last character, which then joins the next word (" a   b" → " a", "  ", " b").
import SFTKernels

/// Character classes the patterns test: \p{L}, \p{N}, \s (Unicode White_Space), and the rest.
enum UnicodeClass {
    static let other: UInt8 = 0
    static let letter: UInt8 = 1
    static let number: UInt8 = 2
    static let space: UInt8 = 3

    /// Classes of the Basic Multilingual Plane, one byte per scalar, built once (~65k lookups).
    nonisolated(unsafe) static let bmp: UnsafeMutablePointer<UInt8> = {
        let t = UnsafeMutablePointer<UInt8>.allocate(capacity: 0x10000)
        for v in 0..<0x10000 { t[v] = classify(UInt32(v)) }
        return t
    }()

    /// The class from the Swift standard library's Unicode tables (general category, White_Space).
    static func classify(_ v: UInt32) -> UInt8 {
        guard let s = Unicode.Scalar(v) else { return other }  // surrogate code points
        let p = s.properties
        if p.isWhitespace { return space }
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return letter
        case .decimalNumber, .letterNumber, .otherNumber: return number
        default: return other
        }
    }
}

/// Decodes the scalar at `i` of valid UTF-8: (scalar value, byte length).
@inline(__always)
func decodeUTF8(_ p: UnsafePointer<UInt8>, _ i: Int) -> (UInt32, Int) {
    let b0 = UInt32(p[i])
    if b0 < 0x80 { return (b0, 1) }
    if b0 < 0xE0 { return ((b0 & 0x1F) << 6 | UInt32(p[i + 1]) & 0x3F, 2) }
    if b0 < 0xF0 { return ((b0 & 0x0F) << 12 | (UInt32(p[i + 1]) & 0x3F) << 6 | UInt32(p[i + 2]) & 0x3F, 3) }
    return ((b0 & 0x07) << 18 | (UInt32(p[i + 1]) & 0x3F) << 12 | (UInt32(p[i + 2]) & 0x3F) << 6
            | UInt32(p[i + 3]) & 0x3F, 4)
}

/// Splits text into the pieces BPE merges within. Input must be valid UTF-8 (a Swift String's).
struct PreTokenizerScanner {
    let kind: TokenizerSpec.PreTokenizer
    private let table = UnicodeClass.bmp

    init(kind: TokenizerSpec.PreTokenizer) { self.kind = kind }

    @inline(__always)
    func cls(_ c: UInt32) -> UInt8 { c < 0x10000 ? table[Int(c)] : UnicodeClass.classify(c) }

    /// End of the piece that starts at `i` (< end).
    @inline(__always)
    func next(_ p: UnsafePointer<UInt8>, _ i: Int, _ end: Int) -> Int {
        switch kind {
        case .gpt2: return nextGPT2(p, i, end, isolateDigits: false)
        case .smollm: return nextGPT2(p, i, end, isolateDigits: true)
        case .llama3: return nextLlama3(p, i, end, maxDigits: 3)
        case .qwen2: return nextLlama3(p, i, end, maxDigits: 1)
        case .none: return end
        }
    }

    /// First position at or after `i` whose scalar is not of class `k`.
    @inline(__always)
    private func run(_ p: UnsafePointer<UInt8>, _ i: Int, _ end: Int, _ k: UInt8) -> Int {
        var j = i
        while j < end {
            let b = p[j]
            if b < 0x80 {
                if table[Int(b)] != k { return j }
                j += 1
            } else {
                let (c, n) = decodeUTF8(p, j)
                if cls(c) != k { return j }
                j += n
            }
        }
        return j
    }

    /// Length of a contraction ('s 't 'm 'd 're 've 'll) at `i` (which holds an apostrophe), or 0.
    @inline(__always)
    private func contraction(_ p: UnsafePointer<UInt8>, _ i: Int, _ end: Int, ignoreCase: Bool) -> Int {
        guard i + 1 < end else { return 0 }
        @inline(__always) func at(_ k: Int) -> UInt8 {
            let b = p[k]
            // Folding ASCII letters only: `b | 0x20` equals a lowercase letter only for its two cases.
            return ignoreCase && (b >= 0x41 && b <= 0x5A) ? b | 0x20 : b
        }
        let a = at(i + 1)
        if a == 0x73 || a == 0x74 || a == 0x6D || a == 0x64 { return 2 }  // s t m d
        guard i + 2 < end else { return 0 }
        let b = at(i + 2)
        if (a == 0x72 && b == 0x65) || (a == 0x76 && b == 0x65) || (a == 0x6C && b == 0x6C) { return 3 }  // re ve ll
        return 0
    }

    private func nextGPT2(_ p: UnsafePointer<UInt8>, _ i: Int, _ end: Int, isolateDigits: Bool) -> Int {
        let (c, n) = decodeUTF8(p, i)
        if c == 0x27 {
            let m = contraction(p, i, end, ignoreCase: false)
            if m > 0 { return i + m }
        }
        var k = cls(c)
        var j = i + n
        // " ?X+": a single ASCII space joins the run after it (unless that run is whitespace, or
        // a digit that SmolLM isolates: then the space ends its own segment).
        if c == 0x20 && j < end {
            let (c2, n2) = decodeUTF8(p, j)
            let k2 = cls(c2)
            if k2 != UnicodeClass.space && !(isolateDigits && k2 == UnicodeClass.number) { k = k2; j += n2 }
        }
        switch k {
        case UnicodeClass.letter: return run(p, j, end, UnicodeClass.letter)
        case UnicodeClass.number: return isolateDigits ? j : run(p, j, end, UnicodeClass.number)
        case UnicodeClass.other: return run(p, j, end, UnicodeClass.other)
        default: break
        }
        // \s+(?!\S) | \s+
        var e = i, lastStart = i
        while e < end {
            let (c2, n2) = decodeUTF8(p, e)
            if cls(c2) != UnicodeClass.space { break }
            lastStart = e
            e += n2
        }
        if e == end { return e }
        if isolateDigits && cls(decodeUTF8(p, e).0) == UnicodeClass.number { return e }  // digit = segment end
        return lastStart > i ? lastStart : e
    }

    private func nextLlama3(_ p: UnsafePointer<UInt8>, _ i: Int, _ end: Int, maxDigits: Int) -> Int {
        let (c, n) = decodeUTF8(p, i)
        if c == 0x27 {
            let m = contraction(p, i, end, ignoreCase: true)
            if m > 0 { return i + m }
        }
        let k = cls(c)
        var j = i + n
        if k == UnicodeClass.letter { return run(p, j, end, UnicodeClass.letter) }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if k != UnicodeClass.number && c != 0x0A && c != 0x0D && j < end {
            let (c2, n2) = decodeUTF8(p, j)
            if cls(c2) == UnicodeClass.letter { return run(p, j + n2, end, UnicodeClass.letter) }
        }
        // \p{N}{1,maxDigits}
        if k == UnicodeClass.number {
            var count = 1
            while count < maxDigits && j < end {
                let (c2, n2) = decodeUTF8(p, j)
                if cls(c2) != UnicodeClass.number { break }
                j += n2; count += 1
            }
            return j
        }
        // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
        var punct = k == UnicodeClass.other
        if !punct && c == 0x20 && j < end {
            let (c2, n2) = decodeUTF8(p, j)
            if cls(c2) == UnicodeClass.other { punct = true; j += n2 }
        }
        if punct {
            j = run(p, j, end, UnicodeClass.other)
            while j < end && (p[j] == 0x0A || p[j] == 0x0D) { j += 1 }
            return j
        }
        // \s*[\r\n]+ : the whitespace run up to and including its last line break
        // \s+(?!\S) | \s+ : otherwise as in GPT-2
        var e = i, lastStart = i, lastBreak = -1
        while e < end {
            let (c2, n2) = decodeUTF8(p, e)
            if cls(c2) != UnicodeClass.space { break }
            if c2 == 0x0A || c2 == 0x0D { lastBreak = e }
            lastStart = e
            e += n2
        }
        if lastBreak >= 0 { return lastBreak + 1 }
        if e == end { return e }
        return lastStart > i ? lastStart : e
    }
}
