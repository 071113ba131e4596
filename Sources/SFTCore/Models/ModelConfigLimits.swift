// Sane ranges for the sizes a model config states (config.json, or GGUF metadata turned into
// one), checked before anything is built from them. A config is untrusted input: a head count
// near 2^62 or a vocabulary of 2^40 must end in an error naming the key and its value, not in
// an arithmetic trap or a request for terabytes. The caps are far above every published model
// (the largest have hidden 16384-ish, 126 layers, 128 heads, 262k-token vocabularies) and far
// below what overflows: products of capped values fit in Int with room to spare, and the total
// parameter count is then checked with overflow-reporting arithmetic against its own cap.
import Foundation

/// Upper bounds on the sizes a model config states, checked before any model is built so that
/// a hostile or corrupt config ends in an error naming the key rather than a trap or a huge
/// allocation.
enum ModelConfigLimits {
    /// Integer size keys (HF names for every family sft builds) and the largest value accepted.
    /// Each must also be at least 1 where present (0 is accepted only where noted by `zeroOK`).
    static let caps: [String: Int] = [
        "hidden_size": 1 << 17, "d_model": 1 << 17,
        "intermediate_size": 1 << 20,
        "num_hidden_layers": 1 << 12, "n_layers": 1 << 12,
        "num_attention_heads": 1 << 12, "n_heads": 1 << 12, "num_key_value_heads": 1 << 12,
        "head_dim": 1 << 14,
        "vocab_size": TokenizerSpec.maxVocabularySize,
        "max_position_embeddings": 1 << 24, "max_seq_len": 1 << 24,
        "sliding_window": 1 << 24, "max_window_layers": 1 << 12,
        "expansion_ratio": 64,
    ]
    /// Keys where 0 is a meaningful value.
    static let zeroOK: Set<String> = ["max_window_layers", "sliding_window"]
    /// Token id keys: each id below `vocab_size` cap (lists allowed, as HF writes eos lists).
    static let idKeys = ["bos_token_id", "eos_token_id", "pad_token_id"]
    /// The most parameters a config may describe (2^40, about 1.1 trillion).
    static let maxParameters = 1 << 40

    /// Throws `SFTError.config` naming the key, its value and the allowed range (and `source`,
    /// the file the config came from, when known) unless every size in `config` is sane.
    static func check(_ config: [String: JSONValue], source: String? = nil) throws {
        try check(config.mapValues(\.foundationValue) as [String: Any], source: source)
    }

    /// The same over Foundation values (JSONSerialization's).
    static func check(_ config: [String: Any], source: String? = nil) throws {
        let from = source.map { " in \($0)" } ?? ""
        func fail(_ key: String, _ message: String) -> SFTError { SFTError.config(field: key, message: message + from) }
        var value: [String: Int] = [:]
        for (key, cap) in caps.sorted(by: { $0.key < $1.key }) {
            guard let raw = config[key], !(raw is NSNull) else { continue }
            guard let n = integer(raw) else {
                // Non-integers are the family decoder's to report (expansion_ratio may be a float).
                if type(of: raw) != Bool.self, let d = (raw as? NSNumber)?.doubleValue ?? (raw as? Double), !(d.isFinite && abs(d) <= Double(cap)) {
                    throw fail(key, "\(raw) is out of range (allowed 1...\(cap))")
                }
                continue
            }
            let low = zeroOK.contains(key) ? 0 : 1
            guard n >= low, n <= cap else { throw fail(key, "\(n) is out of range (allowed \(low)...\(cap))") }
            value[key] = n
        }
        for key in idKeys {
            guard let raw = config[key], !(raw is NSNull) else { continue }
            let items = (raw as? [Any]) ?? [raw]
            guard items.count <= 64 else { throw fail(key, "\(items.count) ids (at most 64)") }
            for item in items {
                // Non-integer ids are ignored by the families (they read them with try?), so only
                // integers are range-checked here.
                guard let id = integer(item) else { continue }
                guard id >= 0, id < TokenizerSpec.maxVocabularySize else {
                    throw fail(key, "id \(id) is out of range (allowed 0..<\(TokenizerSpec.maxVocabularySize))")
                }
            }
        }
        // The parameter count the sizes describe, with checked arithmetic (values are capped
        // above, so this cannot overflow, but it must not be the reason it cannot).
        let hidden = value["hidden_size"] ?? value["d_model"] ?? 1
        let layers = value["num_hidden_layers"] ?? value["n_layers"] ?? 1
        let heads = value["num_attention_heads"] ?? value["n_heads"] ?? 1
        let kvHeads = value["num_key_value_heads"] ?? heads
        let headDim = value["head_dim"] ?? max(1, hidden / heads)
        let ffn = value["intermediate_size"] ?? hidden * (value["expansion_ratio"] ?? 4)
        let vocab = value["vocab_size"] ?? 1
        guard let attention = product([hidden, headDim, 2 * heads + 2 * kvHeads]),
              let mlp = product([3, hidden, ffn]),
              let perLayer = sum([attention, mlp]), let blocks = product([layers, perLayer]),
              let embeddings = product([2, vocab, hidden]), let total = sum([blocks, embeddings]),
              total <= maxParameters else {
            throw fail("num_hidden_layers", "the sizes describe more than \(maxParameters) parameters "
                       + "(hidden \(hidden), layers \(layers), heads \(heads), kv heads \(kvHeads), head_dim \(headDim), "
                       + "intermediate \(ffn), vocab \(vocab))")
        }
    }

    /// An integral number (a Swift Int, or an integral JSON number) as Int, or nil.
    static func integer(_ v: Any) -> Int? {
        if type(of: v) == Bool.self { return nil }
        if type(of: v) == Int.self { return v as? Int }
        guard let n = v as? NSNumber else { return nil }
        let d = n.doubleValue
        guard d.isFinite, d == d.rounded(), abs(d) < 9.0e18 else { return nil }
        return Int(d)
    }

    static func product(_ xs: [Int]) -> Int? {
        var p = 1
        for x in xs {
            let (r, o) = p.multipliedReportingOverflow(by: x)
            if o { return nil }
            p = r
        }
        return p
    }

    static func sum(_ xs: [Int]) -> Int? {
        var s = 0
        for x in xs {
            let (r, o) = s.addingReportingOverflow(x)
            if o { return nil }
            s = r
        }
        return s
    }
}
