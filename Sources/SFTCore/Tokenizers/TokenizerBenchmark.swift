// Tokenizer speed on real chat text: the message strings at the start of the ShareGPT file,
// encoded one by one on one thread. tools/bench_tokenizer.py extracts the same strings the same
// way, times HF tokenizers on them, and compares the ids' checksum with this one.
import Foundation
import SFTKernels

/// Tokenizer speed on real chat text (`sftctl tokenize --bench`): ShareGPT message strings encoded
/// one by one on one thread; tools/bench_tokenizer.py times HF tokenizers on the same strings and
/// compares the ids' checksum.
public enum TokenizerBenchmark {
    /// Message texts from a ShareGPT JSON file: the string after each `"value": ` in file order,
    /// until their UTF-8 size reaches `minBytes`. The file is scanned, not parsed (the asset is
    /// cut off mid-record); strings holding unpaired surrogate escapes are skipped.
    public static func shareGPTTexts(url: URL, minBytes: Int = 2_000_000) throws -> [String] {
        guard let fh = FileHandle(forReadingAtPath: url.path) else {
            throw SFTError.io(path: url.path, message: "cannot open")
        }
        defer { try? fh.close() }
        let marker = Array(#""value": ""#.utf8)
        var buffer: [UInt8] = []
        var texts: [String] = []
        var total = 0
        var pos = 0
        while total < minBytes {
            // Find the next marker; read more when the buffer runs out.
            guard let m = find(marker, in: buffer, from: pos) else {
                let chunk = fh.readData(ofLength: 1 << 22)
                if chunk.isEmpty { break }
                buffer.removeFirst(max(0, min(pos, buffer.count - marker.count)))
                pos = 0
                buffer += chunk
                continue
            }
            let start = m + marker.count
            guard let (text, end) = decodeJSONString(buffer, from: start) else {
                let chunk = fh.readData(ofLength: 1 << 22)
                if chunk.isEmpty { break }
                buffer += chunk
                continue
            }
            pos = end
            if let text {
                texts.append(text)
                total += text.utf8.count
            }
        }
        guard total >= minBytes else {
            throw SFTError.format(path: url.path, offset: nil, message: "only \(total) bytes of \"value\" text found")
        }
        return texts
    }

    private static func find(_ needle: [UInt8], in hay: [UInt8], from: Int) -> Int? {
        guard hay.count >= needle.count else { return nil }
        var i = from
        let last = hay.count - needle.count
        while i <= last {
            if hay[i] == needle[0] {
                var k = 1
                while k < needle.count && hay[i + k] == needle[k] { k += 1 }
                if k == needle.count { return i }
            }
            i += 1
        }
        return nil
    }

    /// Decodes the JSON string body starting at `from` (just after the opening quote). Returns
    /// nil when the buffer ends first; (nil, end) for a string with an unpaired surrogate.
    static func decodeJSONString(_ b: [UInt8], from: Int) -> (String?, Int)? {
        var out: [UInt8] = []
        var i = from
        var valid = true
        func hex4(_ at: Int) -> UInt32? {
            guard at + 4 <= b.count else { return nil }
            return UInt32(String(decoding: b[at..<(at + 4)], as: UTF8.self), radix: 16)
        }
        while i < b.count {
            let c = b[i]
            if c == 0x22 { return (valid ? String(decoding: out, as: UTF8.self) : nil, i + 1) }
            if c != 0x5C { out.append(c); i += 1; continue }
            guard i + 1 < b.count else { return nil }
            let e = b[i + 1]
            i += 2
            switch e {
            case 0x6E: out.append(0x0A)
            case 0x74: out.append(0x09)
            case 0x72: out.append(0x0D)
            case 0x62: out.append(0x08)
            case 0x66: out.append(0x0C)
            case 0x75:
                guard var u = hex4(i) else { return nil }
                i += 4
                if (0xD800..<0xDC00).contains(u) {
                    guard i + 6 <= b.count else { return nil }
                    if b[i] == 0x5C, b[i + 1] == 0x75, let lo = hex4(i + 2), (0xDC00..<0xE000).contains(lo) {
                        u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00)
                        i += 6
                    } else { valid = false; continue }
                } else if (0xDC00..<0xE000).contains(u) {
                    valid = false; continue
                }
                out += Array(String(Unicode.Scalar(u)!).utf8)
            default: out.append(e)  // \" \\ \/
            }
        }
        return nil
    }

    /// Timing of `runs` passes over the texts (one encode call per text, no special tokens).
    public struct Result: Sendable {
        /// How many strings each pass encodes.
        public var texts: Int
        /// Their total UTF-8 size in bytes.
        public var bytes: Int
        /// Token ids the first pass produced (no special tokens added).
        public var tokens: Int
        /// Seconds per pass; the first pass starts with an empty word cache.
        public var seconds: [Double]
        /// FNV-1a over all ids, to compare with another tokenizer's output.
        public var checksum: UInt64
        /// The median of `seconds`.
        public var medianSeconds: Double { seconds.sorted()[seconds.count / 2] }
        /// `tokens` / `medianSeconds`.
        public var tokensPerSecond: Double { Double(tokens) / medianSeconds }
    }

    /// Encodes every text `runs` times (at least once) with `encode(_:addSpecialTokens: false)`,
    /// timing each pass; the token count and checksum come from the first pass.
    public static func run(_ tokenizer: Tokenizer, texts: [String], runs: Int = 5) -> Result {
        var seconds: [Double] = []
        var tokens = 0
        var checksum: UInt64 = 0
        for r in 0..<max(1, runs) {
            var count = 0
            var h: UInt64 = 0xcbf2_9ce4_8422_2325
            let t0 = DispatchTime.now().uptimeNanoseconds
            for t in texts {
                let ids = tokenizer.encode(t, addSpecialTokens: false)
                count += ids.count
                if r == 0 { for id in ids { h = (h ^ UInt64(UInt32(bitPattern: id))) &* 0x100_0000_01b3 } }
            }
            seconds.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
            if r == 0 { tokens = count; checksum = h }
        }
        return Result(texts: texts.count, bytes: texts.reduce(0) { $0 + $1.utf8.count }, tokens: tokens,
                      seconds: seconds, checksum: checksum)
    }
}
