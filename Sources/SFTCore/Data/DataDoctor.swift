// The data doctor: checks prepared examples for the mistakes that silently change what a run
// trains, before any step is taken. `prepareDataset(…, doctor:)` hands it each example as it is
// formatted (the file is read once), `sftctl data --doctor` prints the report, and `finetune`
// puts it in a warning block at its start.
//
// Checks (each finding names the example's line and shows its tokens with the mask):
//   bos_missing / bos_doubled   leading BOS tokens differ from what generation will put in front
//                               of the same prompt (PromptTokens), or there is more than one
//   eos_not_trained             trained tokens, but the last one is neither EOS nor an end-of-turn
//                               marker: the model never learns to stop
//   pad_is_eos_masked           pad id == EOS id and an EOS right after a trained token is masked
//                               (the classic collator bug; here a sign of masks given in the data)
//   turn_truncated              `truncate` cuts trained tokens off the end of the example
//   nothing_trained             no token of the example is trained
//   foreign_special_tokens      the text holds another family's special tokens (`<|im_start|>`,
//                               `[INST]`, …) that this tokenizer splits into pieces
//   duplicate                   the same tokens and mask as an earlier example
// plus the share of tokens trained.
import Foundation
import SFTKernels

/// A data doctor check; the raw value is the name `sftctl data --doctor` prints.
public enum DoctorCheck: String, CaseIterable, Sendable {
    /// The example's leading BOS is missing where generation puts one in front of the same prompt.
    case bosMissing = "bos_missing"
    /// More than one leading BOS, or one where generation adds none.
    case bosDoubled = "bos_doubled"
    /// Tokens are trained, but the last trained one is neither EOS nor an end-of-turn marker:
    /// the model never learns to stop.
    case eosNotTrained = "eos_not_trained"
    /// The pad id equals the EOS id and an EOS right after a trained token is masked (the
    /// classic collator bug; here a sign of masks given in the data).
    case padIsEOSMasked = "pad_is_eos_masked"
    /// `truncate` cuts trained tokens off the end of the example.
    case turnTruncated = "turn_truncated"
    /// No token of the example is trained.
    case nothingTrained = "nothing_trained"
    /// The text holds another model family's special tokens (`<|im_start|>`, `[INST]`, …) that
    /// this tokenizer splits into pieces.
    case foreignSpecialTokens = "foreign_special_tokens"
    /// The same tokens and mask as an earlier example.
    case duplicate

    var summary: String {
        switch self {
        case .bosMissing: return "BOS missing against what generation does"
        case .bosDoubled: return "BOS doubled or added where generation adds none"
        case .eosNotTrained: return "EOS / end of turn not trained (the model would never stop)"
        case .padIsEOSMasked: return "pad == EOS and an EOS after trained text is masked"
        case .turnTruncated: return "trained tokens cut off by truncation"
        case .nothingTrained: return "no trained token"
        case .foreignSpecialTokens: return "another family's special tokens in the text"
        case .duplicate: return "duplicate of an earlier example"
        }
    }
}

/// One token of a finding's display.
public struct DoctorToken: Equatable, Sendable {
    /// The token id.
    public var id: Int32
    /// The token's text ("" for a token that covers no text, such as an added BOS).
    public var text: String
    /// Whether the loss is computed on it.
    public var trained: Bool
}

/// One problem the data doctor found in one example.
public struct DoctorFinding: Sendable {
    /// Which check found it.
    public var check: DoctorCheck
    /// The example's record (file line and record index).
    public var location: SourceLocation
    /// What is wrong, in a sentence.
    public var message: String
    /// The tokens around the problem, with their mask.
    public var tokens: [DoctorToken]
    /// Index of the first shown token in the example.
    public var firstToken: Int

    /// `text|[[trained]]|…`, newlines escaped, zero-width tokens as ⟨id⟩.
    public var tokensShown: String {
        var s = firstToken > 0 ? "… " : ""
        s += tokens.map { t in
            let piece = t.text.isEmpty ? "⟨\(t.id)⟩" : t.text.replacingOccurrences(of: "\n", with: "\\n").replacingOccurrences(of: "\t", with: "\\t")
            return t.trained ? "[[\(piece)]]" : piece
        }.joined(separator: "|")
        return s
    }
}

/// The data doctor's result: token counts, how many examples each check flagged, and the first
/// findings of each. `description` is the text `sftctl data --doctor` prints; `json` its `--json`
/// form.
public struct DoctorReport: Sendable, CustomStringConvertible {
    /// Examples inspected.
    public var examples = 0
    /// Tokens over all inspected examples.
    public var tokens = 0
    /// Of those, the trained ones.
    public var trainedTokens = 0
    /// Examples per check.
    public var counts: [DoctorCheck: Int] = [:]
    /// The first findings of each check (at most `DataDoctor.shownPerCheck`).
    public var findings: [DoctorFinding] = []

    /// `trainedTokens / tokens` (0 with no tokens).
    public var trainedShare: Double { tokens == 0 ? 0 : Double(trainedTokens) / Double(tokens) }
    /// No check flagged any example.
    public var isClean: Bool { counts.values.allSatisfy { $0 == 0 } }

    public var description: String {
        var s = "data doctor: \(examples) examples, \(tokens) tokens, \(trainedTokens) trained ("
            + String(Int((trainedShare * 1000).rounded()) / 10) + "." + String(Int((trainedShare * 1000).rounded()) % 10) + "%)"
        if isClean { return s + "; no problems found" }
        for c in DoctorCheck.allCases {
            guard let n = counts[c], n > 0 else { continue }
            s += "\n  warning: \(n) example\(n == 1 ? "" : "s"): \(c.summary) [\(c.rawValue)]"
            for f in findings where f.check == c {
                s += "\n    \(f.location): \(f.message)\n      tokens: \(f.tokensShown)"
            }
        }
        return s
    }

    /// The report as one JSON object (keys sorted): `examples`, `tokens`, `trained_tokens`,
    /// `trained_share`, `counts` (every check's name → examples flagged) and `findings` (check,
    /// line, record, message, first_token, tokens with id/text/trained).
    public var json: JSONValue {
        var counts: [String: JSONValue] = [:]
        for c in DoctorCheck.allCases { counts[c.rawValue] = .int(self.counts[c] ?? 0) }
        return .sortedObject([
            "examples": .int(examples), "tokens": .int(tokens), "trained_tokens": .int(trainedTokens),
            "trained_share": .double(trainedShare), "counts": .sortedObject(counts),
            "findings": .array(findings.map { f in
                .sortedObject(["check": .string(f.check.rawValue), "line": .int(f.location.line), "record": .int(f.location.index),
                               "message": .string(f.message), "first_token": .int(f.firstToken),
                               "tokens": .array(f.tokens.map { .sortedObject(["id": .int(Int($0.id)), "text": .string($0.text), "trained": .bool($0.trained)]) })])
            }),
        ])
    }
}

/// Inspects formatted examples one at a time; `report` has the result.
public final class DataDoctor {
    /// How many findings of each check the report keeps (the counts include all).
    public static let shownPerCheck = 5
    /// Other families' turn markers, looked for in rendered text.
    public static let familyMarkers = [
        "<|im_start|>", "<|im_end|>", "[INST]", "[/INST]", "<<SYS>>", "<|start_header_id|>", "<|end_header_id|>",
        "<|eot_id|>", "<|begin_of_text|>", "<start_of_turn>", "<end_of_turn>", "<|user|>", "<|assistant|>", "<|end|>",
        "<|system|>", "<s>", "</s>", "<|endoftext|>",
    ]

    let formatter: ExampleFormatter
    let maxSeqLength: Int
    let truncation: TruncationPolicy
    let padId: Int32?
    let endMarkers: [[UInt8]]
    /// Examples seen, by a 128-bit digest of their ids and mask (two differently salted hashes):
    /// duplicates are found without holding every example's tokens.
    private var seen: [Digest: SourceLocation] = [:]
    struct Digest: Hashable { var a: Int, b: Int }
    /// The findings so far, over every example inspected.
    public private(set) var report = DoctorReport()

    /// - Parameters: the formatter that prepares the examples (its tokenizer and template give
    ///   the inference side), and the batching limits.
    public init(formatter: ExampleFormatter, maxSeqLength: Int, truncation: TruncationPolicy, padId: Int32?) {
        self.formatter = formatter
        self.maxSeqLength = maxSeqLength
        self.truncation = truncation
        self.padId = padId
        endMarkers = ChatTemplate.defaultEndOfTurnMarkers.map { Array($0.utf8) }
    }

    /// Checks one example; `t` must carry its formatted text (`FormatOptions.keepText`).
    public func inspect(_ example: SFTExample, _ t: TokenizedExample) {
        report.examples += 1
        report.tokens += t.ids.count
        let trainedCount = t.trained.filter { $0 }.count
        report.trainedTokens += trainedCount
        let text = t.formatted.map { Array($0.text.utf8) } ?? []
        let offsets = t.formatted?.offsets ?? []
        func piece(_ i: Int) -> [UInt8] {
            guard i < offsets.count, offsets[i].upperBound <= text.count else { return [] }
            return Array(text[offsets[i]])
        }
        let tok = formatter.tokenizer
        let eos = tok.eosTokenId

        // BOS against generation (raw text has no prompt: only a doubled BOS is checked there;
        // its leading tokens are the text's own, e.g. SmolLM2's BOS is <|im_start|>).
        if let bos = tok.bosTokenId {
            let leading = t.ids.prefix { $0 == bos }.count
            var expected: Int?
            if example.text == nil, let prompt = try? formatter.inferencePrompt(example) {
                // Only the start of the prompt decides its leading BOS tokens.
                let head = String(String.UnicodeScalarView(prompt.unicodeScalars.prefix(64)))
                expected = (try? PromptTokens(tokenizer: tok).encode(head).ids)?.prefix { $0 == bos }.count
            }
            if leading > 1 || (expected.map { leading > $0 } ?? false) {
                add(.bosDoubled, example, t, at: 0, offsets: offsets, text: text,
                    "\(leading) BOS token\(leading == 1 ? "" : "s") in front; generation puts \(expected ?? 1)")
            } else if let e = expected, leading < e {
                add(.bosMissing, example, t, at: 0, offsets: offsets, text: text,
                    "\(leading) BOS in front; generation puts \(e) in front of the same prompt")
            }
        }

        // Nothing trained / never stops / pad == eos masked.
        if trainedCount == 0 {
            add(.nothingTrained, example, t, at: 0, offsets: offsets, text: text, "\(t.ids.count) tokens, none trained")
        } else if let last = t.trained.lastIndex(of: true) {
            let isEnd = t.ids[last] == eos || endMarkers.contains { $0 == piece(last) }
            if !isEnd {
                add(.eosNotTrained, example, t, at: last, offsets: offsets, text: text,
                    "the last trained token is not EOS or an end-of-turn marker")
            }
        }
        if let eos, padId == eos {
            for i in 1..<max(1, t.ids.count) where t.ids[i] == eos && !t.trained[i] && t.trained[i - 1] {
                add(.padIsEOSMasked, example, t, at: i, offsets: offsets, text: text,
                    "pad id \(eos) is the EOS id, and the EOS at token \(i) after trained text is masked")
                break
            }
        }

        // Truncation.
        if truncation == .truncate, t.ids.count > maxSeqLength {
            let lost = t.trained[maxSeqLength...].filter { $0 }.count
            if lost > 0 {
                add(.turnTruncated, example, t, at: maxSeqLength, offsets: offsets, text: text,
                    "\(t.ids.count) tokens, max_seq_length \(maxSeqLength): \(lost) trained tokens cut off")
            }
        }

        // Another family's special tokens, split into pieces by this tokenizer.
        if !text.isEmpty, let hit = foreignMarker(text: text, offsets: offsets) {
            add(.foreignSpecialTokens, example, t, at: hit.token, offsets: offsets, text: text,
                "'\(hit.marker)' is not a token of this tokenizer (it is split into pieces): a template or data of another model family?")
        }

        // Duplicates.
        var h1 = Hasher(), h2 = Hasher()
        h1.combine(t.ids); h1.combine(t.trained)
        h2.combine(0x5EED_D0C7_0123_4567 as UInt64); h2.combine(t.ids); h2.combine(t.trained)
        let key = Digest(a: h1.finalize(), b: h2.finalize())
        if let earlier = seen[key] {
            add(.duplicate, example, t, at: 0, offsets: offsets, text: text, "same tokens and mask as \(earlier)")
        } else {
            seen[key] = example.source
        }
    }

    /// The first family marker in `text` that no single token covers exactly.
    func foreignMarker(text: [UInt8], offsets: [Range<Int>]) -> (marker: String, token: Int)? {
        for i in text.indices where text[i] == 0x3C || text[i] == 0x5B {  // '<' or '['
            for (m, mb) in Self.markerBytes where i + mb.count <= text.count && text[i..<(i + mb.count)].elementsEqual(mb) {
                // The token starting at i (offsets are sorted), if one does.
                var lo = 0, hi = offsets.count
                while lo < hi {
                    let mid = (lo + hi) / 2
                    if offsets[mid].lowerBound < i { lo = mid + 1 } else { hi = mid }
                }
                while lo < offsets.count, offsets[lo].isEmpty, offsets[lo].lowerBound == i { lo += 1 }
                if lo < offsets.count, offsets[lo] == i..<(i + mb.count) { continue }
                return (m, min(lo, max(0, offsets.count - 1)))
            }
        }
        return nil
    }

    static let markerBytes: [(String, [UInt8])] = familyMarkers.map { ($0, Array($0.utf8)) }

    private func add(_ check: DoctorCheck, _ example: SFTExample, _ t: TokenizedExample, at focus: Int,
                     offsets: [Range<Int>], text: [UInt8], _ message: String) {
        report.counts[check, default: 0] += 1
        guard report.findings.filter({ $0.check == check }).count < Self.shownPerCheck else { return }
        let lo = max(0, min(focus, t.ids.count) - 12), hi = min(t.ids.count, max(focus, 0) + 12)
        let shown = (lo..<hi).map { i -> DoctorToken in
            let r = i < offsets.count ? offsets[i] : 0..<0
            let s = r.upperBound <= text.count ? String(decoding: text[r], as: UTF8.self) : ""
            return DoctorToken(id: t.ids[i], text: s, trained: t.trained[i])
        }
        report.findings.append(DoctorFinding(check: check, location: example.source, message: message, tokens: shown, firstToken: lo))
    }
}
