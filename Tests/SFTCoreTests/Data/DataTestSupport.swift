// Fakes and helpers for the data tests: tokenizers whose tokens are easy to reason about (one per
// character, or one per word with its leading space, GPT-style), a ChatML renderer that reports
// assistant spans, and fixture paths.
import Foundation
import XCTest
import SFTCore
import SFTKernels

enum DataFixtures {
    static func url(_ name: String) -> URL {
        Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
            .appendingPathComponent("data").appendingPathComponent(name)
    }
}

/// Special tokens both fakes recognise as single tokens.
let fakeSpecials: [String: Int32] = ["<|im_start|>": 1, "<|im_end|>": 2, "<s>": 3, "</s>": 4]

/// Splits out the special tokens, then hands each plain stretch to `plain`.
private func encodeSpecials(_ text: String, plain: (Substring, Int) -> [(Int32, Range<Int>)]) -> (ids: [Int32], offsets: [Range<Int>]) {
    var ids: [Int32] = [], offsets: [Range<Int>] = []
    var rest = Substring(text)
    var base = 0
    while !rest.isEmpty {
        var best: (Range<Substring.Index>, Int32)?
        for (s, id) in fakeSpecials {
            if let r = rest.range(of: s), best == nil || r.lowerBound < best!.0.lowerBound { best = (r, id) }
        }
        let head = best.map { rest[..<$0.0.lowerBound] } ?? rest
        for (id, r) in plain(head, base) { ids.append(id); offsets.append(r) }
        base += head.utf8.count
        guard let (r, id) = best else { break }
        let n = rest[r].utf8.count
        ids.append(id)
        offsets.append(base..<(base + n))
        base += n
        rest = rest[r.upperBound...]
    }
    return (ids, offsets)
}

/// One token per Unicode scalar (id = 1000 + scalar value), specials as one token each. With
/// `bos`, addSpecialTokens prepends id 3 with an empty range.
struct CharTokenizer: TextTokenizer {
    var bos = false
    var eosTokenId: Int32? = 4
    var bosTokenId: Int32? { 3 }
    var bosTokenText: String? { "<s>" }
    var addsBOS: Bool { bos }

    func encodeWithOffsets(_ text: String, addSpecialTokens: Bool) throws -> (ids: [Int32], offsets: [Range<Int>]) {
        var (ids, offsets) = encodeSpecials(text) { s, base in
            var out: [(Int32, Range<Int>)] = []
            var at = base
            for u in s.unicodeScalars {
                let n = String(u).utf8.count
                out.append((Int32(1000 + Int(u.value)), at..<(at + n)))
                at += n
            }
            return out
        }
        if addSpecialTokens && bos { ids.insert(3, at: 0); offsets.insert(0..<0, at: 0) }
        return (ids, offsets)
    }

    /// Decodes ids of plain characters and specials.
    static func decode(_ ids: [Int32]) -> String {
        let names = Dictionary(uniqueKeysWithValues: fakeSpecials.map { ($1, $0) })
        return ids.map { id in names[id] ?? String(Character(Unicode.Scalar(UInt32(id - 1000))!)) }.joined()
    }
}

/// One token per word with the whitespace before it (GPT-style "Ġword"), ids from a growing
/// vocabulary. Such tokens straddle span boundaries: " Paris" begins inside the prompt.
final class WordTokenizer: TextTokenizer {
    var vocab: [String: Int32] = [:]
    var eosTokenId: Int32? = 4

    func encodeWithOffsets(_ text: String, addSpecialTokens: Bool) throws -> (ids: [Int32], offsets: [Range<Int>]) {
        encodeSpecials(text) { s, base in
            var out: [(Int32, Range<Int>)] = []
            let bytes = Array(s.utf8)
            var i = 0
            while i < bytes.count {
                var j = i
                while j < bytes.count, bytes[j] == 0x20 || bytes[j] == 0x0A { j += 1 }
                while j < bytes.count, bytes[j] != 0x20, bytes[j] != 0x0A { j += 1 }
                let w = String(decoding: bytes[i..<j], as: UTF8.self)
                let id = vocab[w] ?? { let v = Int32(100 + vocab.count); vocab[w] = v; return v }()
                out.append((id, (base + i)..<(base + j)))
                i = j
            }
            return out
        }
    }
}

/// ChatML as SmolLM2 renders it: `<|im_start|>role\ncontent<|im_end|>\n`; an assistant turn
/// ends with `<|im_end|>` (the newline after it is not part of the turn).
struct ChatMLRenderer: ChatRenderer {
    func renderPrompt(_ messages: [ChatMessage], tools: JSONValue?) throws -> String {
        try renderForTraining(messages, tools: tools).text + "<|im_start|>assistant\n"
    }

    func renderForTraining(_ messages: [ChatMessage], tools: JSONValue? = nil) throws -> RenderedConversation {
        var text = ""
        var turns: [AssistantSpan] = []
        for m in messages {
            text += "<|im_start|>\(m.role)\n"
            let a = text.utf8.count
            text += m.content
            let b = text.utf8.count
            text += "<|im_end|>"
            let c = text.utf8.count
            text += "\n"
            if m.role == "assistant" { turns.append(AssistantSpan(content: a..<b, throughEndOfTurn: a..<c)) }
        }
        return RenderedConversation(text: text, assistantTurns: turns)
    }
}

/// The trained tokens of an example, decoded (char tokenizer only), one string per run of
/// consecutive trained tokens.
func trainedRuns(_ t: TokenizedExample) -> [String] {
    var runs: [String] = []
    var current: [Int32] = []
    for (id, tr) in zip(t.ids, t.trained) {
        if tr { current.append(id) } else if !current.isEmpty { runs.append(CharTokenizer.decode(current)); current = [] }
    }
    if !current.isEmpty { runs.append(CharTokenizer.decode(current)) }
    return runs
}
